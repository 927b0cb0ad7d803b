package httpapi_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"roomcast/pkg/envconfig"
	"roomcast/pkg/server/httpapi"
	"roomcast/pkg/testenv"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     httpapi.Config
		badVar  string // "" when valid
		allowed string
	}{
		{"defaults", httpapi.Config{Addr: ":8080", MaxHandshakes: 64}, "", ""},
		{"probe listener", httpapi.Config{Addr: ":8080", ProbeAddr: ":8091"}, "", ""},
		{"both on port 0", httpapi.Config{Addr: "127.0.0.1:0", ProbeAddr: "127.0.0.1:0"}, "", ""},
		{"no handshake cap", httpapi.Config{Addr: ":8080", MaxHandshakes: 0}, "", ""},
		{"address without a port", httpapi.Config{Addr: "8080"}, "ROOMCAST_ADDR", "host:port"},
		{"probe address without a port", httpapi.Config{Addr: ":8080", ProbeAddr: "localhost"}, "ROOMCAST_PROBE_ADDR", "host:port"},
		{"probe on the public port", httpapi.Config{Addr: ":8080", ProbeAddr: "127.0.0.1:8080"}, "ROOMCAST_PROBE_ADDR", "other than ROOMCAST_ADDR"},
		{"profile listener", httpapi.Config{Addr: ":8080", ProbeAddr: ":8091", PprofAddr: "127.0.0.1:6060"}, "", ""},
		{"all three on port 0", httpapi.Config{Addr: "127.0.0.1:0", ProbeAddr: "127.0.0.1:0", PprofAddr: "127.0.0.1:0"}, "", ""},
		{"profile address without a port", httpapi.Config{Addr: ":8080", PprofAddr: "6060"}, "ROOMCAST_PPROF_ADDR", "host:port"},
		{"profiles on the public port", httpapi.Config{Addr: ":8080", PprofAddr: "127.0.0.1:8080"}, "ROOMCAST_PPROF_ADDR", "other than ROOMCAST_ADDR's"},
		{"profiles on the probe port", httpapi.Config{Addr: ":8080", ProbeAddr: ":8091", PprofAddr: "127.0.0.1:8091"}, "ROOMCAST_PPROF_ADDR", "ROOMCAST_PROBE_ADDR's"},
		{"negative handshake cap", httpapi.Config{Addr: ":8080", MaxHandshakes: -1}, "ROOMCAST_MAX_HANDSHAKES", "0 (no limit) or more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate(map[string]string{})
			if tt.badVar == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ee *envconfig.Error
			if !errors.As(err, &ee) || ee.Var != tt.badVar || !strings.Contains(ee.Allowed, tt.allowed) {
				t.Fatalf("got %v, want an error naming %s and saying %q", err, tt.badVar, tt.allowed)
			}
		})
	}
}

// startServer listens and serves cfg with a WebSocket stand-in answering 418, until the
// test ends; draining is its readiness' switch.
func startServer(t *testing.T, cfg httpapi.Config, ws http.Handler) (*httpapi.Server, *atomic.Bool, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	var draining atomic.Bool
	if ws == nil {
		ws = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	}
	s := httpapi.New(cfg, ws,
		httpapi.Readiness{Draining: draining.Load, Broker: func() error { return nil }},
		reg, testenv.Logger(t), reg)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, &draining, reg
}

// get answers the status and the color header of GET url (bounded).
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, _ := fetch(t, url)
	return resp.StatusCode, resp.Header.Get(httpapi.HeaderColor)
}

// getBody answers the status and the body of GET url (bounded).
func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, body := fetch(t, url)
	return resp.StatusCode, string(body)
}

func fetch(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp, body
}

func TestTheProbeListenerServesProbesAndMetricsOnlyAndTheMainOneStillDoes(t *testing.T) {
	cfg := httpapi.Config{Addr: "127.0.0.1:0", ProbeAddr: "127.0.0.1:0", MaxHandshakes: 64,
		Identity: httpapi.Identity{Color: "blue", Instance: "b1"}}
	s, draining, _ := startServer(t, cfg, nil)
	public, probe := "http://"+s.Addr().String(), "http://"+s.ProbeAddr().String()
	tests := []struct {
		name, url string
		code      int
	}{
		{"probe /healthz", probe + "/healthz", 200},
		{"probe /readyz", probe + "/readyz", 200},
		{"probe /metrics", probe + "/metrics", 200},
		{"probe: no chat page", probe + "/", 404},
		{"probe: no WebSocket route", probe + "/ws/chat/room/", 404},
		{"public /healthz", public + "/healthz", 200},
		{"public /readyz", public + "/readyz", 200},
		{"public /metrics", public + "/metrics", 200},
		{"public chat page", public + "/", 200},
		{"public WebSocket route", public + "/ws/chat/room/", http.StatusTeapot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, color := get(t, tt.url)
			if code != tt.code || color != "blue" {
				t.Fatalf("%d with color %q, want %d with blue", code, color, tt.code)
			}
		})
	}
	t.Run("draining turns /readyz 503 on both listeners", func(t *testing.T) {
		draining.Store(true)
		for _, base := range []string{public, probe} {
			if code, _ := get(t, base+"/readyz"); code != 503 {
				t.Errorf("%s/readyz: %d while draining, want 503", base, code)
			}
		}
	})
	if a := (httpapi.Config{Addr: "127.0.0.1:0"}); httpapi.New(a, nil, httpapi.Readiness{}, prometheus.NewRegistry(), testenv.Logger(t), prometheus.NewRegistry()).ProbeAddr() != nil {
		t.Error("a server without ROOMCAST_PROBE_ADDR has a probe address")
	}
}

// Profiles show what the code is and does: they are served only where ROOMCAST_PPROF_ADDR
// says, never on the public or probe listener, whatever net/http/pprof registers on
// http.DefaultServeMux.
func TestProfilesAreServedOnTheProfileListenerAloneAndOnlyWhenAskedFor(t *testing.T) {
	cfg := httpapi.Config{Addr: "127.0.0.1:0", ProbeAddr: "127.0.0.1:0", PprofAddr: "127.0.0.1:0"}
	s, _, _ := startServer(t, cfg, nil)
	public, probe, profiles := "http://"+s.Addr().String(), "http://"+s.ProbeAddr().String(), "http://"+s.PprofAddr().String()
	off, _, _ := startServer(t, httpapi.Config{Addr: "127.0.0.1:0", ProbeAddr: "127.0.0.1:0"}, nil)
	if off.PprofAddr() != nil {
		t.Error("a server without ROOMCAST_PPROF_ADDR has a profile address")
	}
	offPublic, offProbe := "http://"+off.Addr().String(), "http://"+off.ProbeAddr().String()
	tests := []struct {
		name, url string
		code      int
		body      string // in the body when 200
	}{
		{"the index", profiles + "/debug/pprof/", 200, "goroutine"},
		{"goroutines", profiles + "/debug/pprof/goroutine?debug=1", 200, "goroutine profile:"},
		{"the heap", profiles + "/debug/pprof/heap?debug=1", 200, "heap profile:"},
		{"symbols", profiles + "/debug/pprof/symbol", 200, "num_symbols"},
		{"the profile listener has no probes", profiles + "/healthz", 404, ""},
		{"the profile listener has no metrics", profiles + "/metrics", 404, ""},
		{"the profile listener has no chat page", profiles + "/", 404, ""},
		{"the profile listener has no WebSocket route", profiles + "/ws/chat/room/", 404, ""},
		{"none on the public listener", public + "/debug/pprof/", 404, ""},
		{"none on the public listener, by name", public + "/debug/pprof/goroutine", 404, ""},
		{"none on the probe listener", probe + "/debug/pprof/", 404, ""},
		{"none on the public listener when off", offPublic + "/debug/pprof/", 404, ""},
		{"none on the probe listener when off", offProbe + "/debug/pprof/heap", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := getBody(t, tt.url)
			if code != tt.code || !strings.Contains(body, tt.body) {
				t.Fatalf("%d %.200q, want %d with %q", code, body, tt.code, tt.body)
			}
		})
	}
	t.Run("a CPU profile", func(t *testing.T) {
		code, body := getBody(t, profiles+"/debug/pprof/profile?seconds=1")
		if code != 200 || !strings.HasPrefix(body, "\x1f\x8b") { // gzipped protobuf
			t.Fatalf("%d %.100q, want 200 with a gzipped profile", code, body)
		}
	})
}

// A profile may be asked for minutes; stopping the server does not wait for it.
func TestShutdownCutsAProfileShortInsteadOfWaitingForIt(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", PprofAddr: "127.0.0.1:0"}, nil,
		httpapi.Readiness{Draining: func() bool { return false }, Broker: func() error { return nil }},
		reg, testenv.Logger(t), reg)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	profiles := "http://" + s.PprofAddr().String() + "/debug/pprof/profile?seconds=600"
	long := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{Timeout: time.Minute}).Get(profiles)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		long <- err
	}()
	goroutines := "http://" + s.PprofAddr().String() + "/debug/pprof/goroutine?debug=2"
	waitFor(t, "the long profile is being taken", func() bool {
		_, body := getBody(t, goroutines)
		return strings.Contains(body, "net/http/pprof.Profile(")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown waited for the profile: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
	select {
	case <-long:
	case <-time.After(10 * time.Second):
		t.Fatal("the profile's request still runs after shutdown")
	}
}

func TestAProbeAddressInUseFailsListenAndLeavesNothingBound(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	public := testenv.FreePort(t)
	reg := prometheus.NewRegistry()
	s := httpapi.New(httpapi.Config{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(public)), ProbeAddr: taken.Addr().String()},
		nil, httpapi.Readiness{}, reg, testenv.Logger(t), reg)
	if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "probes") {
		t.Fatalf("Listen: %v, want the probe listener's error", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(public)))
	if err != nil {
		t.Fatalf("the public port stayed bound: %v", err)
	}
	ln.Close()
}

// waitFor polls cond every 5ms until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dialSilent(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestAtTheHandshakeCapTheNextConnectionWaitsUntilASlotIsFree(t *testing.T) {
	cfg := httpapi.Config{Addr: "127.0.0.1:0", ProbeAddr: "127.0.0.1:0", MaxHandshakes: 2}
	s, _, reg := startServer(t, cfg, nil)
	addr := s.Addr().String()
	// Two clients connect and send nothing: both slots are taken.
	first := dialSilent(t, addr)
	dialSilent(t, addr)
	waitFor(t, "two handshakes in progress", func() bool {
		return testenv.Metric(t, reg, "roomcast_handshakes_in_progress") == 2
	})
	answered := make(chan int, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/healthz")
		if err != nil {
			answered <- -1
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	waitFor(t, "the accept loop waits for a slot", func() bool {
		return testenv.Metric(t, reg, "roomcast_accept_waits_total") == 1
	})
	select {
	case code := <-answered:
		t.Fatalf("a third connection was answered (%d) while both slots were taken", code)
	default:
	}
	// The probe listener is not paced.
	if code, _ := get(t, "http://"+s.ProbeAddr().String()+"/healthz"); code != 200 {
		t.Fatalf("probe /healthz: %d", code)
	}
	first.Close() // closed before its first request: its slot is free
	select {
	case code := <-answered:
		if code != 200 {
			t.Fatalf("the waiting request got %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request was not answered after a slot was freed")
	}
	// Answered and idle (keep-alive), it holds no slot: one silent client is left.
	waitFor(t, "one handshake in progress", func() bool {
		return testenv.Metric(t, reg, "roomcast_handshakes_in_progress") == 1
	})
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

func TestHijackedConnectionsGiveTheirSlotBack(t *testing.T) {
	var mu sync.Mutex
	var held []net.Conn
	hijack := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		mu.Lock()
		defer mu.Unlock()
		held = append(held, c)
		_ = brw.Flush()
	})
	s, _, reg := startServer(t, httpapi.Config{Addr: "127.0.0.1:0", MaxHandshakes: 1}, hijack)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	for i := range 3 { // one slot, three upgrades kept open: each gives the slot back
		c := dialSilent(t, s.Addr().String())
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /ws/chat/r/ HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 12)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "HTTP/1.1 101" {
			t.Fatalf("upgrade %d: %q %v", i, buf, err)
		}
	}
	if v := testenv.Metric(t, reg, "roomcast_handshakes_in_progress"); v != 0 {
		t.Errorf("handshakes in progress = %v after the upgrades, want 0", v)
	}
}

func TestASilentConnectionHoldsItsSlotForAFewSecondsAtMost(t *testing.T) {
	s, _, _ := startServer(t, httpapi.Config{Addr: "127.0.0.1:0", MaxHandshakes: 1}, nil)
	dialSilent(t, s.Addr().String())
	start := time.Now()
	if code, _ := get(t, "http://"+s.Addr().String()+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if waited := time.Since(start); waited > 4*time.Second {
		t.Errorf("waited %v behind a silent connection", waited)
	}
}
