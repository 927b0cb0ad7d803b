package replica_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/server/replica"
	"roomcast/pkg/server/wsgateway"
	"roomcast/pkg/testenv"
	"roomcast/pkg/wsclient"
)

// badInputReplica has small limits so the tests stay small.
func badInputReplica(t *testing.T) *testReplica {
	return startReplica(t, "bad", "", func(c *replica.Config) {
		c.Gateway.MaxMessageBytes = 64
		c.Gateway.RateLimit.PerSecond, c.Gateway.RateLimit.Burst = 2, 2
		c.Gateway.RateLimit.CloseAfter = 1500 * time.Millisecond
		c.Gateway.AllowedOrigins = wsgateway.Origins{"https://chat.example"}
	})
}

// bystanderStillWorks checks that a connection in the same room is unaffected.
func bystanderStillWorks(t *testing.T, r *testReplica, room string, bystander *wsclient.Client) {
	t.Helper()
	other := r.dial(t, room)
	if err := other.Send("still here"); err != nil {
		t.Fatal(err)
	}
	for {
		f := next(t, bystander)
		if f.Type == "message" && f.Message == "still here" {
			return
		}
	}
}

func TestBadFramesGetAnErrorFrameAndTheConnectionStaysOpen(t *testing.T) {
	r := badInputReplica(t)
	tests := []struct {
		name  string
		frame string
		code  string
		kind  string
	}{
		{"not JSON", "hello", "bad_request", "bad_request"},
		{"JSON but not an object", `["message"]`, "bad_request", "bad_request"},
		{"no message field", `{"text":"hi"}`, "bad_request", "bad_request"},
		{"message is a number", `{"message":42}`, "bad_request", "bad_request"},
		{"message is null", `{"message":null}`, "bad_request", "bad_request"},
		{"empty message", `{"message":""}`, "bad_request", "bad_request"},
		{"unknown type", `{"type":"shout","message":"hi"}`, "bad_request", "bad_request"},
		{"message over the limit", `{"message":"` + strings.Repeat("x", 65) + `"}`, "message_too_large", "message_too_large"},
		{"escaped message over the limit", `{"message":"` + strings.Repeat(`\u00e9`, 33) + `"}`, "message_too_large", "message_too_large"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room := "bad" + string(rune('a'+i))
			bystander := r.dial(t, room)
			c := r.dial(t, room)
			before := testenv.Metric(t, r.Registry(), "roomcast_errors_total", "kind", tt.kind)
			if err := c.SendRaw([]byte(tt.frame)); err != nil {
				t.Fatal(err)
			}
			expectError(t, c, tt.code)
			if after := testenv.Metric(t, r.Registry(), "roomcast_errors_total", "kind", tt.kind); after != before+1 {
				t.Errorf("errors_total{kind=%q}: %v -> %v, want +1", tt.kind, before, after)
			}
			// Still open: a good message from the same connection goes through.
			time.Sleep(time.Second) // let the rate limiter's bucket refill
			if err := c.Send("ok now"); err != nil {
				t.Fatal(err)
			}
			if f := next(t, c); f.Message != "ok now" {
				t.Fatalf("after the bad frame got %s", f.Raw)
			}
			if f := next(t, bystander); f.Message != "ok now" {
				t.Fatalf("bystander got %s", f.Raw)
			}
		})
	}
}

func TestBadFramesThatCloseTheConnection(t *testing.T) {
	r := badInputReplica(t)
	readLimit := 4*64 + 1024
	tests := []struct {
		name  string
		send  func(c *wsclient.Client) error
		close uint16
		kind  string
	}{
		{"frame over the read limit", func(c *wsclient.Client) error {
			return c.SendRaw([]byte(`{"message":"` + strings.Repeat("x", readLimit) + `"}`))
		}, 1009, "frame_too_large"},
		{"binary frame", func(c *wsclient.Client) error { return c.SendBinary([]byte{1, 2, 3}) }, 1003, "unsupported_data"},
		{"text frame that is not UTF-8", func(c *wsclient.Client) error {
			return c.SendRaw([]byte("{\"message\":\"\xff\xfe\"}"))
		}, 1007, "invalid_utf8"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room := "close" + string(rune('a'+i))
			bystander := r.dial(t, room)
			c := r.dial(t, room)
			before := testenv.Metric(t, r.Registry(), "roomcast_errors_total", "kind", tt.kind)
			if err := tt.send(c); err != nil {
				t.Fatal(err)
			}
			expectClose(t, c, tt.close)
			eventually(t, "the error is counted", func() bool {
				return testenv.Metric(t, r.Registry(), "roomcast_errors_total", "kind", tt.kind) == before+1
			})
			bystanderStillWorks(t, r, room, bystander)
		})
	}
}

func TestRateLimitDropsWarnsOnceAndClosesAPersistentFlooder(t *testing.T) {
	r := badInputReplica(t) // 2 messages/s, burst 2, closed after 1.5s over the limit
	bystander := r.dial(t, "flood")
	c := r.dial(t, "flood")
	for i := range 6 {
		if err := c.Send("m" + string(rune('0'+i))); err != nil {
			t.Fatal(err)
		}
	}
	// Two pass (the burst), four are dropped with a single warning.
	var messages, warnings int
	deadline := time.After(2 * time.Second)
collect:
	for {
		select {
		case f := <-c.Frames():
			switch {
			case f.Type == "message":
				messages++
			case f.Code == "rate_limited":
				warnings++
			default:
				t.Fatalf("unexpected frame %s", f.Raw)
			}
		case <-deadline:
			break collect
		}
	}
	if messages != 2 || warnings != 1 {
		t.Fatalf("got %d messages and %d rate_limited warnings, want 2 and 1", messages, warnings)
	}
	if v := testenv.Metric(t, r.Registry(), "roomcast_errors_total", "kind", "rate_limited"); v != 4 {
		t.Errorf("errors_total{kind=rate_limited} = %v, want 4", v)
	}
	// Keep flooding: the connection is closed with 1008 once over the limit for 1.5s.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-c.Done():
			done = true
		case <-tick.C:
			_ = c.Send("flood")
		case <-ctx.Done():
			t.Fatal("a flooding client was never closed")
		}
	}
	if code := c.CloseCode(); code != 1008 {
		t.Fatalf("flooder closed with %d, want 1008", code)
	}
	bystanderStillWorks(t, r, "flood", bystander)
}

func TestUpgradesRefusedBeforeTheHandshake(t *testing.T) {
	r := badInputReplica(t)
	tests := []struct {
		name   string
		path   string
		header http.Header
		status int
		error  string
		kind   string
	}{
		{"dot in room name", "/ws/chat/a.b/", nil, 400, "invalid room name", "invalid_room"},
		{"space in room name", "/ws/chat/a%20b/", nil, 400, "invalid room name", "invalid_room"},
		{"wildcard room name", "/ws/chat/*/", nil, 400, "invalid room name", "invalid_room"},
		{"room name of 65 characters", "/ws/chat/" + strings.Repeat("r", 65) + "/", nil, 400, "invalid room name", "invalid_room"},
		{"empty room name", "/ws/chat/", nil, 400, "invalid room name", "invalid_room"},
		{"empty room name, two slashes", "/ws/chat//", nil, 400, "invalid room name", "invalid_room"},
		{"no room segment", "/ws/chat", nil, 400, "invalid room name", "invalid_room"},
		{"nested path", "/ws/chat/a/b/", nil, 400, "invalid room name", "invalid_room"},
		{"origin not allowed", "/ws/chat/lobby/", http.Header{"Origin": {"https://evil.example"}}, 403, "origin not allowed", "forbidden_origin"},
		{"not a WebSocket request", "/ws/chat/lobby/", nil, 426, "websocket upgrade required", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before float64
			if tt.kind != "" {
				before = testenv.Metric(t, r.Registry(), "roomcast_errors_total", "kind", tt.kind)
			}
			header := tt.header
			if tt.status != 426 {
				header = upgradeHeader(header)
			}
			resp := rawGet(t, r.url(tt.path), header)
			if resp.status != tt.status || resp.json["error"] != tt.error {
				t.Fatalf("GET %s: %d %s, want %d with error %q", tt.path, resp.status, resp.body, tt.status, tt.error)
			}
			if resp.header.Get("X-Roomcast-Color") != "test" {
				t.Errorf("refusal without X-Roomcast-Color: %v", resp.header)
			}
			if tt.kind != "" {
				if after := testenv.Metric(t, r.Registry(), "roomcast_errors_total", "kind", tt.kind); after != before+1 {
					t.Errorf("errors_total{kind=%q}: %v -> %v", tt.kind, before, after)
				}
			}
		})
	}
	t.Run("room names at the limits are accepted", func(t *testing.T) {
		for _, room := range []string{"a", strings.Repeat("Z", 64), "A-b_9", "Lobby"} {
			r.dial(t, room).Close()
		}
	})
	t.Run("no Origin header is a non-browser client and allowed", func(t *testing.T) {
		r.dial(t, "lobby").Close()
	})
	t.Run("an allowed Origin is accepted", func(t *testing.T) {
		dialURL(t, r.wsURL("lobby"), wsclient.Options{Header: http.Header{"Origin": {"https://chat.example"}}}).Close()
	})
}

type rawResponse struct {
	status int
	header http.Header
	body   string
	json   map[string]string
}

func upgradeHeader(h http.Header) http.Header {
	out := http.Header{
		"Upgrade":               {"websocket"},
		"Connection":            {"Upgrade"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
		"Sec-Websocket-Version": {"13"},
	}
	for k, v := range h {
		out[k] = v
	}
	return out
}

// rawGet sends a GET without following redirects, so /ws/chat// is seen as sent.
func rawGet(t *testing.T, url string, header http.Header) rawResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return rawResponse{status: resp.StatusCode, header: resp.Header} // the body is the WebSocket
	}
	b, _ := io.ReadAll(resp.Body)
	out := rawResponse{status: resp.StatusCode, header: resp.Header, body: string(b)}
	_ = jsonUnmarshal(b, &out.json)
	return out
}

// TestWithoutAllowedOriginsOnlyTheHostsOwnPagesConnect is the default: another site's
// page cannot open connections with its visitors' browsers.
func TestWithoutAllowedOriginsOnlyTheHostsOwnPagesConnect(t *testing.T) {
	own := startReplica(t, "origins-unset", "", nil)
	star := startReplica(t, "origins-star", "", func(c *replica.Config) { c.Gateway.AllowedOrigins = wsgateway.Origins{"*"} })
	tests := []struct {
		name    string
		r       *testReplica
		origin  string // "" sends none
		allowed bool
	}{
		{"unset: no Origin (not a browser)", own, "", true},
		{"unset: the page's own host", own, "http://" + own.Addr().String(), true},
		{"unset: another site", own, "https://evil.example", false},
		{"unset: the same address on another port", own, "http://127.0.0.1:1", false},
		{"star: another site", star, "https://evil.example", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := http.Header{}
			if tt.origin != "" {
				header.Set("Origin", tt.origin)
			}
			before := testenv.Metric(t, tt.r.Registry(), "roomcast_errors_total", "kind", "forbidden_origin")
			resp := rawGet(t, tt.r.url("/ws/chat/lobby/"), upgradeHeader(header))
			want := http.StatusSwitchingProtocols
			if !tt.allowed {
				want = http.StatusForbidden
			}
			if resp.status != want {
				t.Fatalf("Origin %q: %d %s, want %d", tt.origin, resp.status, resp.body, want)
			}
			counted := testenv.Metric(t, tt.r.Registry(), "roomcast_errors_total", "kind", "forbidden_origin") - before
			if counted != map[bool]float64{true: 0, false: 1}[tt.allowed] {
				t.Errorf("errors_total{kind=forbidden_origin} grew by %v", counted)
			}
		})
	}
}
