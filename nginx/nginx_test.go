// Tests of the edge's nginx config template (nginx.conf.tmpl) with a real nginx:
// `nginx -t` on rendered value sets, then nginx serving /.roomcast/edge on its status listener, proxying to
// a backend with WebSocket upgrade and retrying the next replica. They need nginx on
// PATH (Debian's package is enough) and skip without it unless ROOMCAST_TEST_ALL=1.
package nginx_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"roomcast/pkg/fleet/edge"
	"roomcast/pkg/fleet/edge/edgetest"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/testenv"
)

// params are production-like values with every path in dir.
func params(dir string) edge.Params {
	return edge.Params{
		Color:                 "green",
		AppliedAt:             time.Date(2026, 11, 26, 20, 15, 35, 123e6, time.UTC),
		Backend:               "green_app",
		BackendPort:           8080,
		ListenPort:            80,
		StatusPort:            8081,
		Resolver:              "127.0.0.11",
		ResolverValid:         5 * time.Second,
		WorkerShutdownTimeout: 40 * time.Second,
		ConnectTimeout:        2 * time.Second,
		WSIdleTimeout:         time.Minute,
		NextUpstreamTries:     3,
		PidPath:               filepath.Join(dir, "nginx.pid"),
		ErrorLog:              filepath.Join(dir, "error.log"),
		AccessLog:             filepath.Join(dir, "access.log"),
		TempDir:               filepath.Join(dir, "tmp"),
	}
}

// serveParams are params(dir) for an nginx a test runs: both listeners on free ports,
// proxying to host:port, stopping fast.
func serveParams(tb testing.TB, dir, host string, port int) edge.Params {
	p := params(dir)
	p.Backend, p.BackendPort, p.ListenPort, p.StatusPort = host, port, testenv.FreePort(tb), testenv.FreePort(tb)
	p.WorkerShutdownTimeout = time.Second
	return p
}

// MustTemplate parses nginx.conf.tmpl.
func MustTemplate(tb testing.TB) *edge.Template {
	tb.Helper()
	tmpl, err := edge.ParseTemplate("nginx.conf.tmpl")
	if err != nil {
		tb.Fatal(err)
	}
	return tmpl
}

// MustRender writes the config for p into dir/nginx.conf and returns its path and text.
func MustRender(tb testing.TB, tmpl *edge.Template, dir string, p edge.Params) (string, string) {
	tb.Helper()
	if err := os.MkdirAll(p.TempDir, 0o755); err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := tmpl.RenderFile(path, p); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return path, string(b)
}

func TestRenderedConfigsPassNginxTest(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	tmpl := MustTemplate(t)
	tests := []struct {
		name    string
		change  func(*edge.Params)
		want    []string
		notWant []string
	}{
		{
			name: "production defaults",
			want: []string{
				"worker_processes auto;",
				"worker_shutdown_timeout 40s;",
				"map $http_upgrade $connection_upgrade {",
				"resolver 127.0.0.11 valid=5s ipv6=off;",
				"listen 80;",
				"set $backend green_app;",
				"proxy_pass http://$backend:8080;",
				"proxy_http_version 1.1;",
				"proxy_set_header Upgrade $http_upgrade;",
				"proxy_set_header Connection $connection_upgrade;",
				"proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
				"proxy_set_header X-Forwarded-Proto $scheme;",
				"proxy_set_header Host $http_host;",
				"proxy_read_timeout 60s;",
				"proxy_send_timeout 60s;",
				"proxy_connect_timeout 2s;",
				"proxy_next_upstream error timeout http_502 http_503;",
				"proxy_next_upstream_tries 3;",
				"location = /.roomcast/edge {",
				"location ~ ^/(metrics|readyz)/*$ {", "location ^~ /.roomcast/ {",
				"listen 8081;",
				"worker_rlimit_nofile 16384;",
				`'{"color":"green","applied_at":"2026-11-26T20:15:35.123Z"}\n'`,
			},
			notWant: []string{"user ", "proxy_hide_header", "daemon", "listen [::]", "geo ", "limit_conn"},
		},
		{
			name: "blue on other ports, stdio logs, a user",
			change: func(p *edge.Params) {
				p.Color, p.Backend, p.BackendPort, p.ListenPort, p.StatusPort = "blue", "blue_app", 9000, 8081, 9001
				p.ErrorLog, p.AccessLog, p.User = "stderr", "/dev/stdout", "www-data"
			},
			want: []string{"user www-data;", "set $backend blue_app;", "proxy_pass http://$backend:9000;", "listen 8081;", "listen 9001;",
				`error_log "stderr" warn;`, `access_log "/dev/stdout" roomcast;`, `"color":"blue"`},
		},
		{
			name: "sub-second timeouts, resolver port, IPv6, no access log, no retry limit",
			change: func(p *edge.Params) {
				p.WorkerShutdownTimeout, p.ConnectTimeout, p.ResolverValid = 1500*time.Millisecond, 250*time.Millisecond, 2*time.Second
				p.Resolver, p.ListenIPv6, p.AccessLog, p.NextUpstreamTries = "127.0.0.1:5353", true, "off", 0
			},
			want: []string{"worker_shutdown_timeout 1500ms;", "proxy_connect_timeout 250ms;",
				"resolver 127.0.0.1:5353 valid=2s ipv6=off;", "listen [::]:80;", "access_log off;\n\n    client_body_temp_path", "proxy_next_upstream_tries 0;"},
		},
		{
			name:   "a connection limit per client address",
			change: func(p *edge.Params) { p.LimitConn = 20 },
			want: []string{"limit_conn_zone $binary_remote_addr zone=roomcast_addr:10m;", "limit_conn_status 429;",
				"limit_conn roomcast_addr 20;"},
		},
		{
			name:    "response statuses to roomcast-edge, without an access log",
			change:  func(p *edge.Params) { p.ResponseLogPort, p.AccessLog = 9181, "off" },
			want:    []string{"log_format roomcast_status '$status';", "access_log syslog:server=127.0.0.1:9181,nohostname,tag=roomcast_edge roomcast_status;"},
			notWant: []string{"access_log off;\n\n    client_body_temp_path"}, // off at the http level would turn the syslog log off too
		},
		{
			name:   "backend as an IP address",
			change: func(p *edge.Params) { p.Backend = "10.0.3.7" },
			want:   []string{"set $backend 10.0.3.7;"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := params(dir)
			if tt.change != nil {
				tt.change(&p)
			}
			path, text := MustRender(t, tmpl, dir, p)
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("rendered config lacks %q", w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(text, w) {
					t.Errorf("rendered config has %q", w)
				}
			}
			if err := edge.NewNginx(bin, path, io.Discard, io.Discard).Test(context.Background(), path); err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
		})
	}
}

func TestNginxTestCatchesABrokenConfig(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(path, []byte("events {}\nhttp { no_such_directive on; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := edge.NewNginx(bin, path, io.Discard, io.Discard).Test(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), "no_such_directive") {
		t.Fatalf("nginx -t of a broken config: %v, want nginx's complaint", err)
	}
}

func TestUnsafeValuesAreNotRendered(t *testing.T) {
	tmpl := MustTemplate(t)
	for _, tt := range []struct {
		name   string
		change func(*edge.Params)
	}{
		{"directive injection in the backend", func(p *edge.Params) { p.Backend = "green_app; return 200" }},
		{"block in the color", func(p *edge.Params) { p.Color = "green}" }},
		{"quote in a path", func(p *edge.Params) { p.PidPath = `/tmp/a".pid` }},
		{"variable in a path", func(p *edge.Params) { p.AccessLog = "/tmp/$host.log" }},
		{"newline in a path", func(p *edge.Params) { p.ErrorLog = "/tmp/a\nb" }},
		{"space in the resolver", func(p *edge.Params) { p.Resolver = "127.0.0.11 valid=0" }},
		{"quote in the user", func(p *edge.Params) { p.User = `"root"` }},
		{"no port", func(p *edge.Params) { p.BackendPort = 0 }},
		{"no time", func(p *edge.Params) { p.AppliedAt = time.Time{} }},
		{"no shutdown timeout", func(p *edge.Params) { p.WorkerShutdownTimeout = 0 }},
		{"status on the public port", func(p *edge.Params) { p.StatusPort = p.ListenPort }},
		{"negative connection limit", func(p *edge.Params) { p.LimitConn = -1 }},
		{"certificate without key", func(p *edge.Params) { p.TLSCertFile, p.TLSListenPort, p.TLSPublicPort = "/tls.crt", 8443, 443 }},
		{"key without certificate", func(p *edge.Params) { p.TLSKeyFile, p.TLSListenPort, p.TLSPublicPort = "/tls.key", 8443, 443 }},
		{"quote in the key's path", func(p *edge.Params) {
			p.TLSCertFile, p.TLSKeyFile, p.TLSListenPort, p.TLSPublicPort = "/tls.crt", `/tls".key`, 8443, 443
		}},
		{"HTTPS on the plain port", func(p *edge.Params) {
			p.TLSCertFile, p.TLSKeyFile, p.TLSListenPort, p.TLSPublicPort = "/tls.crt", "/tls.key", p.ListenPort, 443
		}},
		{"HTTPS without a public port", func(p *edge.Params) {
			p.TLSCertFile, p.TLSKeyFile, p.TLSListenPort = "/tls.crt", "/tls.key", 8443
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := params(t.TempDir())
			tt.change(&p)
			var b strings.Builder
			if err := tmpl.Render(&b, p); err == nil {
				t.Fatalf("rendered:\n%s", b.String())
			}
		})
	}
}

// MustServe starts nginx on the config at path, stopped by PID in t.Cleanup, and
// waits until it answers on port.
func MustServe(tb testing.TB, bin, path string, port int) {
	tb.Helper()
	var out testenv.SyncBuffer
	n := edge.NewNginx(bin, path, io.Discard, &out)
	if err := n.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if pid := n.Pid(); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		select {
		case <-n.Done():
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(n.Pid(), syscall.SIGKILL)
			tb.Errorf("nginx (pid %d) did not stop on SIGTERM", n.Pid())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-n.Done():
			tb.Fatalf("nginx exited: %v\n%s", n.Err(), out.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("nginx not listening on %d: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// backend is an httptest-like server on addr answering as color and recording the
// headers nginx sent. A request with Upgrade: websocket gets a 101 and an echo.
func backend(tb testing.TB, addr, color string, status int) *backendServer {
	tb.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	b := &backendServer{ln: ln}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.last.Store(r.Header.Clone())
		b.lastURI.Store(r.RequestURI)
		w.Header().Set("X-Roomcast-Color", color)
		w.Header().Set("X-Roomcast-Instance", color+"-1")
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			conn, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Roomcast-Color: %s\r\n\r\n", color)
			_ = rw.Flush()
			line, err := rw.ReadString('\n')
			if err == nil {
				fmt.Fprintf(rw, "echo %s: %s", color, line)
				_ = rw.Flush()
			}
			return
		}
		w.WriteHeader(status)
		fmt.Fprintln(w, color)
	})}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return b
}

type backendServer struct {
	ln      net.Listener
	hits    atomic.Int64
	last    atomic.Value // http.Header
	lastURI atomic.Value // string
}

func (b *backendServer) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

func get(tb testing.TB, url string) (*http.Response, string) {
	tb.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestNginxServesEdgeStatusAndProxiesToTheColor(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	green := backend(t, "127.0.0.1:0", "green", http.StatusOK)
	dir := t.TempDir()
	p := serveParams(t, dir, "127.0.0.1", green.port())
	ipv6 := false
	if ln, err := net.Listen("tcp6", fmt.Sprintf("[::1]:%d", p.ListenPort)); err == nil {
		ln.Close()
		ipv6, p.ListenIPv6 = true, true
	}
	path, _ := MustRender(t, MustTemplate(t), dir, p)
	MustServe(t, bin, path, p.ListenPort)
	base := fmt.Sprintf("http://127.0.0.1:%d", p.ListenPort)

	status := fmt.Sprintf("http://127.0.0.1:%d", p.StatusPort)

	t.Run("edge status on the status listener", func(t *testing.T) {
		resp, body := get(t, status+"/.roomcast/edge")
		var st edge.Status
		if err := json.Unmarshal([]byte(body), &st); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d body %q: %v", resp.StatusCode, body, err)
		}
		if st.Color != "green" || st.AppliedAt != "2026-11-26T20:15:35.123Z" {
			t.Fatalf("status %+v", st)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		if resp, body := get(t, status+"/.roomcast/nginx_status"); resp.StatusCode != 200 || !strings.Contains(body, "Active connections:") {
			t.Fatalf("stub_status: %d %q", resp.StatusCode, body)
		}
		if resp, _ := get(t, status+"/"); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status listener /: %d, want 404 (it proxies nothing)", resp.StatusCode)
		}
		if green.hits.Load() != 0 {
			t.Error("a status request reached the backend")
		}
	})
	t.Run("internal paths are 404 on the public listener from any address", func(t *testing.T) {
		bases := []string{base}
		if ipv6 {
			bases = append(bases, fmt.Sprintf("http://[::1]:%d", p.ListenPort))
		}
		before := green.hits.Load()
		for _, b := range bases {
			for _, path := range []string{
				"/metrics", "/metrics/", "/metrics?x=1", "/metrics/?format=text", "//metrics", "/%6detrics",
				"/readyz", "/readyz/", "/readyz?x=1", "/readyz//",
				"/.roomcast/edge", "/.roomcast/edge?x", "/.roomcast/nginx_status", "/.roomcast/nginx_status/", "/.roomcast/edge/other",
			} {
				if resp, _ := get(t, b+path); resp.StatusCode != http.StatusNotFound {
					t.Errorf("%s%s: status %d, want 404", b, path, resp.StatusCode)
				}
			}
		}
		if n := green.hits.Load() - before; n != 0 {
			t.Errorf("%d internal requests reached the backend", n)
		}
	})
	t.Run("other paths reach the color with its headers", func(t *testing.T) {
		for _, path := range []string{"/", "/healthz", "/?token=x", "/ws/chat/lobby/", "/metricsx", "/rooms/metrics"} {
			resp, body := get(t, base+path)
			if resp.StatusCode != 200 || strings.TrimSpace(body) != "green" {
				t.Fatalf("%s: status %d body %q", path, resp.StatusCode, body)
			}
			if c := resp.Header.Get("X-Roomcast-Color"); c != "green" {
				t.Fatalf("%s: X-Roomcast-Color %q, want it passed through", path, c)
			}
			if i := resp.Header.Get("X-Roomcast-Instance"); i != "green-1" {
				t.Fatalf("%s: X-Roomcast-Instance %q", path, i)
			}
		}
		h := green.last.Load().(http.Header)
		if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Proto") != "http" {
			t.Fatalf("forwarding headers %v", h)
		}
		if h.Get("Connection") != "close" || h.Get("Upgrade") != "" {
			t.Fatalf("plain request sent Connection %q Upgrade %q", h.Get("Connection"), h.Get("Upgrade"))
		}
	})
	t.Run("websocket upgrade", func(t *testing.T) {
		conn, r, resp := upgrade(t, p.ListenPort)
		if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("X-Roomcast-Color") != "green" {
			t.Fatalf("upgrade: status %d, color %q", resp.StatusCode, resp.Header.Get("X-Roomcast-Color"))
		}
		fmt.Fprintf(conn, "hello\n")
		line, err := r.ReadString('\n')
		if err != nil || line != "echo green: hello\n" {
			t.Fatalf("after the upgrade: %q, %v", line, err)
		}
		h := green.last.Load().(http.Header)
		if h.Get("Upgrade") != "websocket" || h.Get("Connection") != "upgrade" || h.Get("Sec-Websocket-Key") == "" {
			t.Fatalf("upgrade headers sent to the backend: %v", h)
		}
	})
}

// upgrade asks nginx on port for a WebSocket upgrade of /ws/chat/lobby/ and reads the
// answer; the connection is closed in t.Cleanup.
func upgrade(tb testing.TB, port int) (net.Conn, *bufio.Reader, *http.Response) {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	r, resp := upgradeOn(tb, conn)
	return conn, r, resp
}

// upgradeOn asks for the WebSocket upgrade on conn (plain or TLS), closed in t.Cleanup.
func upgradeOn(tb testing.TB, conn net.Conn) (*bufio.Reader, *http.Response) {
	tb.Helper()
	tb.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws/chat/lobby/ HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return r, resp
}

// With LimitConn, a client address holds at most that many connections through nginx
// (an open WebSocket is one); one more gets 429 without reaching the app, and a closed
// one frees its place.
func TestNginxLimitsConnectionsPerClientAddress(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	green := backend(t, "127.0.0.1:0", "green", http.StatusOK)
	dir := t.TempDir()
	p := serveParams(t, dir, "127.0.0.1", green.port())
	p.LimitConn = 2
	path, _ := MustRender(t, MustTemplate(t), dir, p)
	MustServe(t, bin, path, p.ListenPort)
	base := fmt.Sprintf("http://127.0.0.1:%d", p.ListenPort)

	var open []net.Conn
	for i := range p.LimitConn {
		conn, _, resp := upgrade(t, p.ListenPort)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("WebSocket %d of %d: status %d, want 101", i+1, p.LimitConn, resp.StatusCode)
		}
		open = append(open, conn)
	}
	hits := green.hits.Load()
	if _, _, resp := upgrade(t, p.ListenPort); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("WebSocket over the limit: status %d, want 429", resp.StatusCode)
	}
	if resp, _ := get(t, base+"/"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("GET / over the limit: status %d, want 429", resp.StatusCode)
	}
	if n := green.hits.Load() - hits; n != 0 {
		t.Fatalf("%d requests over the limit reached the app", n)
	}
	// The status listener has no limit: the exporter keeps scraping.
	if resp, _ := get(t, fmt.Sprintf("http://127.0.0.1:%d/.roomcast/nginx_status", p.StatusPort)); resp.StatusCode != 200 {
		t.Fatalf("stub_status over the limit: %d", resp.StatusCode)
	}

	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, body := get(t, base+"/")
		if resp.StatusCode == 200 && strings.TrimSpace(body) == "green" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing a WebSocket: status %d, want 200 within 5s", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNginxLogsNoToken(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	green := backend(t, "127.0.0.1:0", "green", http.StatusOK)
	dir := t.TempDir()
	p := serveParams(t, dir, "127.0.0.1", green.port())
	path, _ := MustRender(t, MustTemplate(t), dir, p)
	MustServe(t, bin, path, p.ListenPort)
	addr := fmt.Sprintf("127.0.0.1:%d", p.ListenPort)

	// A plain request and a WebSocket upgrade, each with its token in the query.
	resp, _ := get(t, "http://"+addr+"/ws/chat/tokened/?token=SECRET-plain&since=1")
	if resp.StatusCode != 200 {
		t.Fatalf("GET: status %d", resp.StatusCode)
	}
	if uri := green.lastURI.Load(); uri != "/ws/chat/tokened/?token=SECRET-plain&since=1" {
		t.Fatalf("the app got %q: the query must still reach it", uri)
	}
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws/chat/tokened/?token=SECRET-ws HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	conn.Close() // nginx logs a WebSocket when it ends

	var log string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(p.AccessLog)
		log = string(b)
		if strings.Count(log, `"request":"GET /ws/chat/tokened/ HTTP/1.1"`) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the access log has not both requests, logged by path without the query:\n%s", log)
		}
	}
	if strings.Contains(log, "SECRET") || strings.Contains(log, "token=") {
		t.Fatalf("the access log holds the token:\n%s", log)
	}
}

// TestBrowsersThroughNginxPassTheAppsOriginCheck: nginx passes the Host the browser
// sent, port included, so a replica without ROOMCAST_ALLOWED_ORIGINS admits the pages of
// the address the browser used and refuses other sites'.
func TestBrowsersThroughNginxPassTheAppsOriginCheck(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	app := replicatest.Start(t)
	appPort := app.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	p := serveParams(t, dir, "127.0.0.1", appPort)
	path, _ := MustRender(t, MustTemplate(t), dir, p)
	MustServe(t, bin, path, p.ListenPort)
	edgeAddr := fmt.Sprintf("127.0.0.1:%d", p.ListenPort)
	tests := []struct {
		origin string
		status int
	}{
		{"http://" + edgeAddr, http.StatusSwitchingProtocols},
		{"https://evil.example", http.StatusForbidden},
		{fmt.Sprintf("http://127.0.0.1:%d", appPort), http.StatusForbidden}, // the app's own port is not the one the browser used
	}
	for _, tt := range tests {
		t.Run(tt.origin, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", edgeAddr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(conn, "GET /ws/chat/lobby/ HTTP/1.1\r\nHost: %s\r\nOrigin: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", edgeAddr, tt.origin)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("Origin %s through nginx: status %d, want %d", tt.origin, resp.StatusCode, tt.status)
			}
		})
	}
}

func TestNginxTriesTheNextReplica(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	dns := edgetest.NewDNS(t)
	tests := []struct {
		name  string
		first func(t *testing.T, port int) *backendServer // what the other address does; nil: refuses connections
	}{
		{"other replica refuses connections", func(t *testing.T, port int) *backendServer { return nil }},
		{"other replica is draining (503)", func(t *testing.T, port int) *backendServer {
			return backend(t, fmt.Sprintf("127.0.0.2:%d", port), "draining", http.StatusServiceUnavailable)
		}},
		{"other replica answers 502", func(t *testing.T, port int) *backendServer {
			return backend(t, fmt.Sprintf("127.0.0.2:%d", port), "broken", http.StatusBadGateway)
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Both replicas listen on one port, as Swarm tasks do, on two loopback
			// addresses; the name resolves to both (nginx rotates their order).
			ok := backend(t, "127.0.0.3:0", "green", http.StatusOK)
			bad := tt.first(t, ok.port())
			name := fmt.Sprintf("green%d_app", i)
			dns.Set(name, "127.0.0.2", "127.0.0.3")
			dir := t.TempDir()
			p := serveParams(t, dir, name, ok.port())
			p.Resolver, p.ConnectTimeout = dns.Addr(), 500*time.Millisecond
			path, _ := MustRender(t, MustTemplate(t), dir, p)
			MustServe(t, bin, path, p.ListenPort)
			for n := range 10 {
				resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", p.ListenPort))
				if resp.StatusCode != 200 || strings.TrimSpace(body) != "green" {
					t.Fatalf("request %d: status %d body %q", n, resp.StatusCode, body)
				}
			}
			if dns.Queries(name) == 0 {
				t.Fatal("nginx did not ask the resolver")
			}
			if bad != nil && bad.hits.Load() == 0 {
				t.Fatal("no request was tried on the bad replica first")
			}
		})
	}
}

// A WebSocket that carries nothing from its replica for WSIdleTimeout is closed by
// nginx: the replica is gone without a close (its node lost power), and the client must
// learn it to reconnect. The app's pings keep a live one busy.
func TestNginxClosesAWebSocketWhoseReplicaFellSilent(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	silent := backend(t, "127.0.0.1:0", "green", http.StatusOK) // answers 101, then waits for a line
	dir := t.TempDir()
	p := serveParams(t, dir, "127.0.0.1", silent.port())
	p.WSIdleTimeout = time.Second
	path, _ := MustRender(t, MustTemplate(t), dir, p)
	MustServe(t, bin, path, p.ListenPort)
	conn, r, resp := upgrade(t, p.ListenPort)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	// Far beyond the idle timeout: nginx must have closed before.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("reading a WebSocket whose replica says nothing: %v, want nginx to close it (EOF)", err)
	}
}
