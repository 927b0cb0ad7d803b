package replica_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/auth"
	"roomcast/pkg/server/replica"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/server/wsgateway"
	"roomcast/pkg/testenv"
	"roomcast/pkg/wsclient"
)

var testSecret = []byte("test secret of at least 32 bytes!")

func withAuth(t *testing.T) func(*replica.Config) {
	v, err := auth.New(auth.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	return replicatest.Auth(v)
}

// mint signs c with testSecret: by default for an hour and every room.
func mint(t *testing.T, c auth.Claims) string {
	t.Helper()
	if c.Expires.IsZero() {
		c.Expires = time.Now().Add(time.Hour)
	}
	if c.Rooms == nil {
		c.Rooms = []string{"*"}
	}
	tok, err := auth.Mint(testSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func dialWith(t *testing.T, url string, header http.Header) (*wsclient.Client, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := wsclient.Dial(ctx, url, wsclient.Options{Header: header})
	if c != nil {
		t.Cleanup(c.Close)
	}
	return c, resp, err
}

func TestUpgradesNeedAValidTokenForTheRoom(t *testing.T) {
	r := startReplica(t, "authd", "", withAuth(t))
	good := mint(t, auth.Claims{Subject: "alice", Rooms: []string{"lobby", "team-*"}})
	tests := []struct {
		name   string
		path   string
		header http.Header
		status int
		reason string
	}{
		{"no token", "/ws/chat/lobby/", nil, 401, "missing"},
		{"garbage token", "/ws/chat/lobby/?token=garbage", nil, 401, "malformed"},
		{"wrong key", "/ws/chat/lobby/?token=" + func() string {
			s, _ := auth.Mint([]byte("some other secret of 32 bytes!!!"), auth.Claims{Subject: "a", Expires: time.Now().Add(time.Hour)})
			return s
		}(), nil, 401, "signature"},
		{"expired", "/ws/chat/lobby/?token=" + mint(t, auth.Claims{Subject: "a", Expires: time.Now().Add(-time.Minute)}), nil, 401, "expired"},
		{"room not in the token", "/ws/chat/secret/?token=" + good, nil, 403, "room"},
		{"no rooms claim", "/ws/chat/lobby/?token=" + func() string {
			s, _ := auth.Mint(testSecret, auth.Claims{Subject: "a", Expires: time.Now().Add(time.Hour)})
			return s
		}(), nil, 403, "room"},
		{"prefix does not match", "/ws/chat/teams/?token=" + good, nil, 403, "room"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testenv.Metric(t, r.Registry(), "roomcast_auth_failures_total", "reason", tt.reason)
			resp := rawGet(t, r.url(tt.path), upgradeHeader(tt.header))
			if resp.status != tt.status {
				t.Fatalf("%d %s, want %d", resp.status, resp.body, tt.status)
			}
			if after := testenv.Metric(t, r.Registry(), "roomcast_auth_failures_total", "reason", tt.reason); after != before+1 {
				t.Errorf("auth_failures{reason=%s}: %v -> %v", tt.reason, before, after)
			}
		})
	}

	t.Run("token in the query, a bearer header, or a subprotocol entry", func(t *testing.T) {
		ways := []struct {
			name     string
			url      string
			header   http.Header
			selected string
		}{
			{"query", r.wsURL("lobby") + "?token=" + good, nil, ""},
			{"Authorization", r.wsURL("team-a"), http.Header{"Authorization": {"Bearer " + good}}, ""},
			{"subprotocol with roomcast.v1", r.wsURL("lobby"), http.Header{"Sec-WebSocket-Protocol": {wsgateway.SubprotocolV1 + ", bearer." + good}}, wsgateway.SubprotocolV1},
			{"subprotocol alone", r.wsURL("lobby"), http.Header{"Sec-WebSocket-Protocol": {"bearer." + good}}, "bearer." + good},
			{"subprotocol with the batched one", r.wsURL("lobby"), http.Header{"Sec-WebSocket-Protocol": {"bearer." + good + ", " + wsgateway.SubprotocolBatch}}, wsgateway.SubprotocolBatch},
		}
		for _, w := range ways {
			c, resp, err := dialWith(t, w.url, w.header)
			if err != nil {
				t.Fatalf("%s: %v", w.name, err)
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != w.selected {
				t.Errorf("%s: selected subprotocol %q, want %q", w.name, got, w.selected)
			}
			if err := c.Send("hello " + w.name); err != nil {
				t.Fatal(err)
			}
			if f := next(t, c); f.Message != "hello "+w.name {
				t.Fatalf("%s: got %s", w.name, f.Raw)
			}
		}
	})
}

func TestAReadOnlyTokenReadsButCannotSend(t *testing.T) {
	r := startReplica(t, "ro", "", withAuth(t))
	reader, _, err := dialWith(t, r.wsURL("news")+"?token="+mint(t, auth.Claims{Subject: "r", ReadOnly: true}), nil)
	if err != nil {
		t.Fatal(err)
	}
	writer, _, err := dialWith(t, r.wsURL("news")+"?token="+mint(t, auth.Claims{Subject: "w"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := reader.Send("let me in"); err != nil {
		t.Fatal(err)
	}
	expectError(t, reader, "forbidden")
	if err := writer.Send("headline"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, reader); f.Message != "headline" {
		t.Fatalf("reader got %s", f.Raw)
	}
	if v := testenv.Metric(t, r.Registry(), "roomcast_errors_total", "kind", "forbidden"); v != 1 {
		t.Errorf("errors{kind=forbidden} = %v", v)
	}
}

func TestAnExpiredTokenClosesWith1008UnlessRefreshed(t *testing.T) {
	r := startReplica(t, "exp", "", withAuth(t))
	short := func() string {
		return mint(t, auth.Claims{Subject: "s", Expires: time.Now().Add(1500 * time.Millisecond)})
	}
	expiring, _, err := dialWith(t, r.wsURL("clock")+"?token="+short(), nil)
	if err != nil {
		t.Fatal(err)
	}
	refreshed, _, err := dialWith(t, r.wsURL("clock")+"?token="+short(), nil)
	if err != nil {
		t.Fatal(err)
	}
	refused, _, err := dialWith(t, r.wsURL("clock")+"?token="+short(), nil)
	if err != nil {
		t.Fatal(err)
	}
	later := mint(t, auth.Claims{Subject: "s", Expires: time.Now().Add(time.Hour)})
	if err := refreshed.SendRaw([]byte(`{"type":"refresh","token":"` + later + `"}`)); err != nil {
		t.Fatal(err)
	}
	otherRoom := mint(t, auth.Claims{Subject: "s", Expires: time.Now().Add(time.Hour), Rooms: []string{"elsewhere"}})
	if err := refused.SendRaw([]byte(`{"type":"refresh","token":"` + otherRoom + `"}`)); err != nil {
		t.Fatal(err)
	}
	expectError(t, refused, "forbidden")
	expectClose(t, expiring, 1008)
	expectClose(t, refused, 1008)
	select {
	case <-refreshed.Done():
		t.Fatalf("a refreshed connection was closed: %d", refreshed.CloseCode())
	default:
	}
	if err := refreshed.Send("still here"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, refreshed); f.Message != "still here" {
		t.Fatalf("got %s", f.Raw)
	}
}

func TestAdmissionLimits(t *testing.T) {
	t.Run("max connections per replica", func(t *testing.T) {
		r := startReplica(t, "maxconn", "", func(c *replica.Config) { c.Gateway.Limits.MaxConnections = 2 })
		r.dial(t, "a")
		r.dial(t, "b")
		resp := rawGet(t, r.url("/ws/chat/c/"), upgradeHeader(nil))
		if resp.status != 503 || resp.json["error"] != "too many connections" {
			t.Fatalf("third connection: %d %s", resp.status, resp.body)
		}
		if v := testenv.Metric(t, r.Registry(), "roomcast_admission_rejected_total", "reason", "max_connections"); v != 1 {
			t.Errorf("rejected{max_connections} = %v", v)
		}
	})
	t.Run("accept rate", func(t *testing.T) {
		r := startReplica(t, "rate", "", func(c *replica.Config) { c.Gateway.Limits.AcceptRate, c.Gateway.Limits.AcceptBurst = 1, 1 })
		r.dial(t, "a")
		resp := rawGet(t, r.url("/ws/chat/a/"), upgradeHeader(nil))
		if resp.status != 503 || resp.header.Get("Retry-After") == "" {
			t.Fatalf("second upgrade within the second: %d %v %s", resp.status, resp.header, resp.body)
		}
		eventually(t, "the bucket refills", func() bool {
			c, _, err := dialWith(t, r.wsURL("a"), nil)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	})
	t.Run("per client address, believing X-Forwarded-For only from trusted proxies", func(t *testing.T) {
		r := startReplica(t, "perip", "", func(c *replica.Config) {
			c.Gateway.Limits.MaxConnectionsPerIP = 1
			c.Gateway.Limits.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		})
		if _, _, err := dialWith(t, r.wsURL("a"), http.Header{"X-Forwarded-For": {"203.0.113.7"}}); err != nil {
			t.Fatal(err)
		}
		if resp := rawGet(t, r.url("/ws/chat/a/"), upgradeHeader(http.Header{"X-Forwarded-For": {"203.0.113.7"}})); resp.status != 429 {
			t.Fatalf("second connection of one client: %d %s", resp.status, resp.body)
		}
		// Another client behind the same proxy is its own address.
		other, _, err := dialWith(t, r.wsURL("a"), http.Header{"X-Forwarded-For": {"198.51.100.1, 203.0.113.9"}})
		if err != nil {
			t.Fatalf("another client behind the proxy: %v", err)
		}
		// Closing gives the slot back.
		other.Close()
		eventually(t, "the address's slot is released", func() bool {
			c, _, err := dialWith(t, r.wsURL("a"), http.Header{"X-Forwarded-For": {"203.0.113.9"}})
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	})
	t.Run("an untrusted peer cannot pick its address", func(t *testing.T) {
		r := startReplica(t, "untrusted", "", func(c *replica.Config) { c.Gateway.Limits.MaxConnectionsPerIP = 1 })
		if _, _, err := dialWith(t, r.wsURL("a"), http.Header{"X-Forwarded-For": {"203.0.113.7"}}); err != nil {
			t.Fatal(err)
		}
		if resp := rawGet(t, r.url("/ws/chat/a/"), upgradeHeader(http.Header{"X-Forwarded-For": {"198.51.100.99"}})); resp.status != 429 {
			t.Fatalf("a spoofed X-Forwarded-For from an untrusted peer was believed: %d", resp.status)
		}
	})
	t.Run("members of one room", func(t *testing.T) {
		r := startReplica(t, "roomcap", "", func(c *replica.Config) { c.Gateway.Limits.MaxRoomMembers = 2 })
		r.dial(t, "small")
		r.dial(t, "small")
		if resp := rawGet(t, r.url("/ws/chat/small/"), upgradeHeader(nil)); resp.status != 503 || resp.json["error"] != "room full" {
			t.Fatalf("third member: %d %s", resp.status, resp.body)
		}
		r.dial(t, "other")
	})
}

func TestAudienceAndIssuerAreCheckedWhenSet(t *testing.T) {
	v, err := auth.New(auth.Config{Secret: testSecret, Audience: "roomcast", Issuer: "https://id.example"})
	if err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, "aud", "", replicatest.Auth(v))
	tests := []struct {
		name     string
		aud, iss string
		status   int
	}{
		{"both right", "roomcast", "https://id.example", 101},
		{"no aud", "", "https://id.example", 401},
		{"another aud", "grafana", "https://id.example", 401},
		{"no iss", "roomcast", "", 401},
		{"another iss", "roomcast", "https://evil.example", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := mint(t, auth.Claims{Subject: "a", Audience: tt.aud, Issuer: tt.iss})
			before := testenv.Metric(t, r.Registry(), "roomcast_auth_failures_total", "reason", "claims")
			resp := rawGet(t, r.url("/ws/chat/lobby/"), upgradeHeader(http.Header{"Authorization": {"Bearer " + tok}}))
			if resp.status != tt.status {
				t.Fatalf("%d %s, want %d", resp.status, resp.body, tt.status)
			}
			want := before
			if tt.status != 101 {
				want++
			}
			if after := testenv.Metric(t, r.Registry(), "roomcast_auth_failures_total", "reason", "claims"); after != want {
				t.Errorf("auth_failures{reason=claims}: %v -> %v, want %v", before, after, want)
			}
		})
	}
}

// TestNoTokenIsEverLogged runs tokened sessions of every kind, good and bad, against a
// replica logging at debug level and looks for each token (and its signature, the part
// that is a credential) in the log.
func TestNoTokenIsEverLogged(t *testing.T) {
	var logs testenv.SyncBuffer
	cfg := replicatest.Config(t)
	withAuth(t)(&cfg)
	cfg.HTTP.Identity.Instance = "nolog"
	rep, err := replica.New(cfg, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = rep.Serve()
	}()
	t.Cleanup(func() {
		rep.Close()
		<-served
	})
	base := "ws://" + rep.Addr().String() + "/ws/chat/"

	var tokens []string
	token := func(c auth.Claims) string {
		tok := mint(t, c)
		tokens = append(tokens, tok)
		return tok
	}
	good := func() string { return token(auth.Claims{Subject: "alice", Rooms: []string{"lobby"}}) }
	forged, _ := auth.Mint([]byte("an attacker's key of 32 bytes or more"), auth.Claims{Subject: "x", Expires: time.Now().Add(time.Hour), Rooms: []string{"*"}})
	tokens = append(tokens, forged, "not.a.jwt-but-secret")
	sessions := []struct {
		name   string
		url    string
		header http.Header
		ok     bool
	}{
		{"query", base + "lobby/?token=" + good(), nil, true},
		{"bearer", base + "lobby/", http.Header{"Authorization": {"Bearer " + good()}}, true},
		{"subprotocol", base + "lobby/", http.Header{"Sec-WebSocket-Protocol": {wsgateway.SubprotocolV1 + ", bearer." + good()}}, true},
		{"forged in the query", base + "lobby/?token=" + forged, nil, false},
		{"garbage as a bearer", base + "lobby/", http.Header{"Authorization": {"Bearer not.a.jwt-but-secret"}}, false},
		{"another room", base + "secret/?token=" + good(), nil, false},
		{"expired", base + "lobby/?token=" + token(auth.Claims{Subject: "a", Rooms: []string{"lobby"}, Expires: time.Now().Add(-time.Hour)}), nil, false},
	}
	for _, s := range sessions {
		c, _, err := dialWith(t, s.url, s.header)
		if (err == nil) != s.ok {
			t.Fatalf("%s: dial error %v, want success %v", s.name, err, s.ok)
		}
		if err != nil {
			continue
		}
		if err := c.Send("hello"); err != nil {
			t.Fatal(err)
		}
		next(t, c)
		// A refresh with a bad token, then one with a token for another room.
		for _, bad := range []string{forged, token(auth.Claims{Subject: "a", Rooms: []string{"elsewhere"}})} {
			if err := c.SendRaw([]byte(`{"type":"refresh","token":"` + bad + `"}`)); err != nil {
				t.Fatal(err)
			}
			expectError(t, c, "forbidden")
		}
		c.Close()
	}
	// A handshake that fails after the token was read: data before the 101.
	raw, err := net.Dial("tcp", rep.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(raw, "GET /ws/chat/lobby/?token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nearly data", good())
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, raw)
	raw.Close()
	rep.Close()
	<-served

	log := logs.String()
	if !strings.Contains(log, `"level":"DEBUG"`) {
		t.Fatalf("no debug line was logged, so the test shows nothing:\n%s", log)
	}
	for _, tok := range tokens {
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(log, tok) || (len(sig) > 8 && strings.Contains(log, sig)) {
			t.Errorf("the log holds the token %s…:\n%s", tok[:12], log)
		}
	}
}
