package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"roomcast/pkg/cli"
	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/edge"
	"roomcast/pkg/fleet/edge/edgetest"
	"roomcast/pkg/fleet/swarm/swarmtest"
	"roomcast/pkg/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHelpDocumentsEveryVariableWithItsDefault(t *testing.T) {
	clitest.Help(t, name, run,
		"ROOMCAST_EDGE_CONTROLLER", "DOCKER_HOST",
		"ROOMCAST_EDGE_SERVICE", "edge_nginx",
		"ROOMCAST_EDGE_DEFAULT_COLOR", "blue",
		"ROOMCAST_EDGE_APP_SERVICE", "{color}_app",
		"ROOMCAST_EDGE_APP_PORT", "8080",
		"ROOMCAST_EDGE_LISTEN_PORT", "80",
		"ROOMCAST_EDGE_STATUS_PORT", "8081",
		"ROOMCAST_EDGE_LIMIT_CONN",
		"ROOMCAST_EDGE_RESOLVER", "127.0.0.11",
		"ROOMCAST_EDGE_WORKER_SHUTDOWN_TIMEOUT", "40s",
		"ROOMCAST_EDGE_DRAIN_DELAY", "0s",
		"ROOMCAST_EDGE_STOP_TIMEOUT", "1s",
		"/edgez",
		"ROOMCAST_EDGE_POLL_INTERVAL", "5s",
		"ROOMCAST_EDGE_START_TIMEOUT", "2m",
		"ROOMCAST_EDGE_TEMPLATE", "/etc/roomcast-edge/nginx.conf.tmpl",
		"ROOMCAST_EDGE_CONFIG", "/run/roomcast-edge/nginx.conf",
		"ROOMCAST_EDGE_NGINX", "nginx",
		"ROOMCAST_EDGE_TLS_CERT_FILE", "ROOMCAST_EDGE_TLS_KEY_FILE",
		"ROOMCAST_EDGE_TLS_LISTEN_PORT", "8443",
		"ROOMCAST_EDGE_TLS_PUBLIC_PORT", "443",
		"ROOMCAST_EDGE_METRICS_ADDR", ":9180",
		"roomcast.active", "status",
	)
}

func TestInvalidEnvironmentExitsTwoWithOneLineNamingTheVariable(t *testing.T) {
	tests := []struct{ name, value string }{
		{"DOCKER_HOST", "/var/run/docker.sock"},
		{"DOCKER_HOST", "tcp://nohost"},
		{"ROOMCAST_EDGE_SERVICE", "edge nginx"},
		{"ROOMCAST_EDGE_DEFAULT_COLOR", "red"},
		{"ROOMCAST_EDGE_APP_SERVICE", "app"},
		{"ROOMCAST_EDGE_APP_SERVICE", "{color} app"},
		{"ROOMCAST_EDGE_APP_PORT", "0"},
		{"ROOMCAST_EDGE_APP_PORT", "http"},
		{"ROOMCAST_EDGE_LISTEN_PORT", "70000"},
		{"ROOMCAST_EDGE_LISTEN_IPV6", "maybe"},
		{"ROOMCAST_EDGE_STATUS_PORT", "70000"},
		{"ROOMCAST_EDGE_STATUS_PORT", "80"}, // the listen port: the status would be public
		{"ROOMCAST_EDGE_LIMIT_CONN", "-1"},
		{"ROOMCAST_EDGE_RESOLVER", "dns.example"},
		{"ROOMCAST_EDGE_RESOLVER_VALID", "1500ms"},
		{"ROOMCAST_EDGE_WORKER_SHUTDOWN_TIMEOUT", "40"},
		{"ROOMCAST_EDGE_WORKER_SHUTDOWN_TIMEOUT", "10ms"},
		{"ROOMCAST_EDGE_DRAIN_DELAY", "-1s"},
		{"ROOMCAST_EDGE_DRAIN_DELAY", "5"},
		{"ROOMCAST_EDGE_STOP_TIMEOUT", "1ms"},
		{"ROOMCAST_EDGE_CONNECT_TIMEOUT", "1ms"},
		{"ROOMCAST_EDGE_WS_IDLE_TIMEOUT", "500ms"},
		{"ROOMCAST_EDGE_NEXT_UPSTREAM_TRIES", "-1"},
		{"ROOMCAST_EDGE_POLL_INTERVAL", "1ms"},
		{"ROOMCAST_EDGE_START_TIMEOUT", "soon"},
		{"ROOMCAST_EDGE_CONFIG", "nginx.conf"},
		{"ROOMCAST_EDGE_CONFIG", "/run/$edge/nginx.conf"},
		{"ROOMCAST_EDGE_NGINX_USER", "ng inx"},
		{"ROOMCAST_EDGE_ACCESS_LOG", "stdout"},
		{"ROOMCAST_EDGE_ERROR_LOG", `/var/log/"x"`},
		{"ROOMCAST_EDGE_METRICS_ADDR", "9180"},
		{"ROOMCAST_LOG_FORMAT", "xml"},
		{"ROOMCAST_LOG_LEVEL", "loud"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			env := map[string]string{tt.name: tt.value}
			if tt.name != "DOCKER_HOST" {
				env["ROOMCAST_EDGE_CONTROLLER"] = "http://edge_controller:9190"
			}
			clitest.InvalidEnv(t, name, run, env, tt.name, tt.value)
		})
	}
	// Where the labels come from: the controller or Docker, exactly one.
	for _, env := range []map[string]string{
		{"ROOMCAST_EDGE_CONTROLLER": "edge_controller:9190"},
		{"ROOMCAST_EDGE_CONTROLLER": "http://edge_controller:9190/v1"},
		{"ROOMCAST_EDGE_CONTROLLER": "http://edge_controller:9190", "DOCKER_HOST": "unix:///var/run/docker.sock"},
		{"ROOMCAST_EDGE_CONTROLLER": ""},
	} {
		t.Run(fmt.Sprint(env), func(t *testing.T) {
			clitest.InvalidEnv(t, name, run, env, "ROOMCAST_EDGE_CONTROLLER", env["ROOMCAST_EDGE_CONTROLLER"])
		})
	}
}

func TestControllerCommand(t *testing.T) {
	t.Run("help", func(t *testing.T) {
		clitest.Help(t, name+" controller", runController,
			"DOCKER_HOST", "unix:///var/run/docker.sock",
			"ROOMCAST_EDGE_SERVICE", "edge_nginx",
			"ROOMCAST_EDGE_CONTROLLER_ADDR", ":9190",
			"ROOMCAST_EDGE_POLL_INTERVAL", "5s",
			"ROOMCAST_EDGE_CONTROLLER_MAX_WAIT", "30s",
			"/v1/labels", "after=", "healthcheck",
		)
	})
	for _, tt := range []struct{ name, value string }{
		{"DOCKER_HOST", "/var/run/docker.sock"},
		{"ROOMCAST_EDGE_SERVICE", "edge nginx"},
		{"ROOMCAST_EDGE_CONTROLLER_ADDR", "9190"},
		{"ROOMCAST_EDGE_POLL_INTERVAL", "1ms"},
		{"ROOMCAST_EDGE_CONTROLLER_MAX_WAIT", "1h"},
		{"ROOMCAST_LOG_LEVEL", "loud"},
	} {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			clitest.InvalidEnv(t, name+" controller", runController, map[string]string{tt.name: tt.value}, tt.name, tt.value)
		})
	}
	t.Run("serves the release labels, read-only", func(t *testing.T) {
		w := newWorld(t, "blue")
		w.fake.SetLabel("edge_nginx", "roomcast.lock", "someone 2026-12-06T04:00:00Z")
		clitest.Eventually(t, 5*time.Second, "labels served", func() error {
			d, err := w.desired()
			if err != nil {
				return err
			}
			if _, ok := d.Labels["roomcast.lock"]; ok || d.Labels[bluegreen.LabelActive] != "blue" {
				return fmt.Errorf("served %v", d.Labels)
			}
			return nil
		})
		resp, err := client.Post("http://"+w.ctrlAddr+edge.LabelsPath, "application/json", strings.NewReader(`{"labels":{"roomcast.active":"green"}}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || w.fake.Labels("edge_nginx")[bluegreen.LabelActive] != "blue" {
			t.Fatalf("POST: %d, label %v", resp.StatusCode, w.fake.Labels("edge_nginx"))
		}
		if code, out := clitest.Exit(name, run, []string{"controller", "healthcheck"}, map[string]string{"ROOMCAST_EDGE_CONTROLLER_ADDR": w.ctrlAddr}); code != 0 {
			t.Fatalf("healthcheck: exit %d: %s", code, out)
		}
	})
}

func TestUnknownFlagOrArgumentExitsTwo(t *testing.T) {
	clitest.UsageErrors(t, name, run, []string{"-port", "1"}, []string{"serve"}, []string{"status", "extra"}, []string{"status", "-color", "red"})
}

// app stands in for one color's replica: it answers with its color in
// X-Roomcast-Color, and a WebSocket-style upgrade gets 101 and a line echo.
type app struct {
	color string
	hits  atomic.Int64
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.hits.Add(1)
	w.Header().Set("X-Roomcast-Color", a.color)
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Roomcast-Color: %s\r\n\r\n", a.color)
		_ = rw.Flush()
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(rw, "%s %s", a.color, line)
			_ = rw.Flush()
		}
	}
	fmt.Fprintln(w, a.color)
}

// world is what roomcast-edge runs in: a fake Docker API holding the nginx service,
// a DNS server standing in for Docker's, and the blue and green apps on one port of
// 127.0.0.2 and 127.0.0.3 (as Swarm tasks of two services listen on one port).
type world struct {
	nginx       string
	fake        *swarmtest.Server
	dns         *edgetest.DNS
	port        int
	blue, green *app
	// ctrl is the edge controller on the fake Engine API, at ctrlAddr, which the
	// edges read (as in the stack); with direct they read the fake Engine API.
	ctrl     *clitest.Process
	ctrlAddr string
	direct   bool
}

// runController is `roomcast-edge controller`.
func runController(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	return run(ctx, append([]string{"controller"}, args...), env, stdout, stderr)
}

// startController runs the edge controller of w (poll every 200ms) at w.ctrlAddr until
// the test ends or stopController.
func (w *world) startController(t *testing.T) {
	t.Helper()
	w.ctrl = clitest.Start(t, name+" controller", runController, map[string]string{
		"DOCKER_HOST":                       w.fake.Host(),
		"ROOMCAST_EDGE_CONTROLLER_ADDR":     w.ctrlAddr,
		"ROOMCAST_EDGE_POLL_INTERVAL":       "200ms",
		"ROOMCAST_EDGE_CONTROLLER_MAX_WAIT": "5s",
		"ROOMCAST_LOG_LEVEL":                "debug",
	})
	clitest.Eventually(t, 10*time.Second, "controller healthy", func() error {
		return cli.Healthcheck(context.Background(), nil, map[string]string{"A": w.ctrlAddr}, "A", "", io.Discard)
	})
}

// waitControllerServes waits until the controller serves color as the active one (it
// follows Docker a moment after a change, as the nginx tasks follow it).
func (w *world) waitControllerServes(t *testing.T, color string) {
	t.Helper()
	clitest.Eventually(t, 5*time.Second, "controller serving "+color, func() error {
		d, err := w.desired()
		if err != nil {
			return err
		}
		if got := d.Labels[bluegreen.LabelActive]; got != color {
			return fmt.Errorf("serves %q", got)
		}
		return nil
	})
}

// desired is what the controller serves now.
func (w *world) desired() (edge.Desired, error) {
	var d edge.Desired
	resp, err := client.Get("http://" + w.ctrlAddr + edge.LabelsPath)
	if err != nil {
		return d, err
	}
	defer resp.Body.Close()
	return d, json.NewDecoder(resp.Body).Decode(&d)
}

func (w *world) stopController(t *testing.T) {
	t.Helper()
	if err := w.ctrl.Stop(10 * time.Second); err != nil {
		t.Fatalf("stopping the controller: %v", err)
	}
}

// ctrlMetric is the value of one series of the controller's /metrics, -1 if absent.
func (w *world) ctrlMetric(series string) float64 {
	return clitest.Scrape("http://"+w.ctrlAddr+"/metrics", series)
}

func newWorld(t *testing.T, label string) *world {
	t.Helper()
	w := &world{
		nginx: testenv.Program(t, "nginx"),
		fake:  swarmtest.NewServer(t),
		dns:   edgetest.NewDNS(t),
		blue:  &app{color: "blue"},
		green: &app{color: "green"},
	}
	labels := map[string]string{}
	if label != "" {
		labels[bluegreen.LabelActive] = label
	}
	one := uint64(1)
	w.fake.SetService("edge_nginx", labels, &one)
	var lnBlue, lnGreen net.Listener
	for attempt := 0; lnGreen == nil; attempt++ {
		var err error
		if lnBlue, err = net.Listen("tcp", "127.0.0.2:0"); err != nil {
			t.Fatal(err)
		}
		w.port = lnBlue.Addr().(*net.TCPAddr).Port
		if lnGreen, err = net.Listen("tcp", fmt.Sprintf("127.0.0.3:%d", w.port)); err != nil {
			lnBlue.Close()
			if attempt == 10 {
				t.Fatal(err)
			}
		}
	}
	for _, s := range []struct {
		ln net.Listener
		h  http.Handler
	}{{lnBlue, w.blue}, {lnGreen, w.green}} {
		srv := &http.Server{Handler: s.h}
		go func() { _ = srv.Serve(s.ln) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	w.dns.Set("blue_app", "127.0.0.2")
	w.ctrlAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	w.startController(t)
	return w
}

func (w *world) deployGreen() { w.dns.Set("green_app", "127.0.0.3") }

// edgeRun is one roomcast-edge (run in this process) with a real nginx child.
type edgeRun struct {
	*clitest.Process
	t          *testing.T
	dir        string
	listen     int
	statusPort int
	metrics    int
}

// start runs roomcast-edge in w with test values (poll 200ms) changed by extra, and
// stops it, then its nginx by PID if it is still there, in t.Cleanup.
func (w *world) start(t *testing.T, extra map[string]string) *edgeRun {
	t.Helper()
	tmpl, err := filepath.Abs("../../nginx/nginx.conf.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	e := &edgeRun{t: t, dir: t.TempDir(), listen: testenv.FreePort(t), statusPort: testenv.FreePort(t), metrics: testenv.FreePort(t)}
	env := map[string]string{
		"ROOMCAST_EDGE_CONTROLLER":              "http://" + w.ctrlAddr,
		"ROOMCAST_EDGE_RESOLVER":                w.dns.Addr(),
		"ROOMCAST_EDGE_RESOLVER_VALID":          "1s",
		"ROOMCAST_EDGE_APP_PORT":                strconv.Itoa(w.port),
		"ROOMCAST_EDGE_LISTEN_PORT":             strconv.Itoa(e.listen),
		"ROOMCAST_EDGE_STATUS_PORT":             strconv.Itoa(e.statusPort),
		"ROOMCAST_EDGE_TEMPLATE":                tmpl,
		"ROOMCAST_EDGE_CONFIG":                  filepath.Join(e.dir, "run", "nginx.conf"),
		"ROOMCAST_EDGE_NGINX":                   w.nginx,
		"ROOMCAST_EDGE_ERROR_LOG":               filepath.Join(e.dir, "error.log"),
		"ROOMCAST_EDGE_ACCESS_LOG":              filepath.Join(e.dir, "access.log"),
		"ROOMCAST_EDGE_METRICS_ADDR":            fmt.Sprintf("127.0.0.1:%d", e.metrics),
		"ROOMCAST_EDGE_WORKER_SHUTDOWN_TIMEOUT": "1s",
		"ROOMCAST_EDGE_POLL_INTERVAL":           "200ms",
		"ROOMCAST_EDGE_START_TIMEOUT":           "20s",
		"ROOMCAST_LOG_LEVEL":                    "debug",
	}
	if w.direct {
		delete(env, "ROOMCAST_EDGE_CONTROLLER")
		env["DOCKER_HOST"] = w.fake.Host()
	}
	for k, v := range extra {
		env[k] = v
	}
	// Registered before Start, so that it runs once roomcast-edge has returned.
	t.Cleanup(func() {
		if pid := e.pid(); pid > 0 && syscall.Kill(pid, 0) == nil {
			t.Errorf("nginx (pid %d) still running after roomcast-edge returned; killing it", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			errLog, _ := os.ReadFile(filepath.Join(e.dir, "error.log"))
			t.Logf("nginx error.log:\n%s", errLog)
		}
	})
	e.Process = clitest.Start(t, name, run, env)
	return e
}

// pid is the nginx master's PID from its pid file, 0 if there is none.
func (e *edgeRun) pid() int {
	b, err := os.ReadFile(filepath.Join(e.dir, "run", "nginx.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

var client = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func (e *edgeRun) status() (edge.Status, error) {
	var st edge.Status
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/.roomcast/edge", e.statusPort))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return st, fmt.Errorf("status %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// color is who answered GET / through nginx.
func (e *edgeRun) color() (string, error) {
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", e.listen))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	if h, b := resp.Header.Get("X-Roomcast-Color"), strings.TrimSpace(string(body)); h != b {
		return "", fmt.Errorf("X-Roomcast-Color %q but body %q", h, b)
	}
	return resp.Header.Get("X-Roomcast-Color"), nil
}

// metric is the value of one series of roomcast-edge's /metrics, -1 if absent.
func (e *edgeRun) metric(series string) float64 {
	return clitest.Scrape(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.metrics), series)
}

func (e *edgeRun) errorsOf(kind string) float64 {
	return e.metric(`roomcast_edge_errors_total{kind="` + kind + `"}`)
}

func (e *edgeRun) waitServing(color string, d time.Duration) edge.Status {
	e.t.Helper()
	var st edge.Status
	clitest.Eventually(e.t, d, "nginx serving "+color, func() error {
		var err error
		if st, err = e.status(); err != nil {
			return err
		}
		if st.Color != color {
			return fmt.Errorf("/.roomcast/edge says %s", st.Color)
		}
		if c, err := e.color(); err != nil || c != color {
			return fmt.Errorf("GET / answered by %q (%v)", c, err)
		}
		return nil
	})
	return st
}

// load sends GET / through nginx every 10ms, one at a time on a new connection each,
// until stopped or 15s have passed, and records who answered.
type load struct {
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	colors []string
	at     []time.Time
	failed []string
}

func startLoad(e *edgeRun) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		deadline := time.After(15 * time.Second)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
			c, err := e.color()
			l.mu.Lock()
			if err != nil {
				l.failed = append(l.failed, err.Error())
			} else {
				l.colors = append(l.colors, c)
				l.at = append(l.at, time.Now())
			}
			l.mu.Unlock()
		}
	}()
	return l
}

// firstOf is when color first answered, zero if it has not.
func (l *load) firstOf(color string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, c := range l.colors {
		if c == color {
			return l.at[i]
		}
	}
	return time.Time{}
}

// answeredAt is when the i-th answered request was answered.
func (l *load) answeredAt(i int) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.at[i]
}

func (l *load) end() (colors, failed []string) {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.colors, l.failed
}

// dialWS opens an upgraded connection through nginx.
func dialWS(t *testing.T, e *edgeRun) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", e.listen), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /ws/chat/lobby/ HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	r := bufio.NewReader(conn)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return conn, r
}

func TestFlipFromBlueToGreenFailsNoRequest(t *testing.T) {
	w := newWorld(t, "blue")
	w.deployGreen()
	// Poll every hour: only the Docker event can make this flip quick.
	e := w.start(t, map[string]string{"ROOMCAST_EDGE_POLL_INTERVAL": "1h", "ROOMCAST_EDGE_WORKER_SHUTDOWN_TIMEOUT": "4s"})
	before := e.waitServing("blue", 10*time.Second)
	clitest.Eventually(t, 5*time.Second, "event stream open", func() error {
		if w.fake.Streams() == 0 {
			return errors.New("no stream")
		}
		return nil
	})
	ws, wsr := dialWS(t, e)

	l := startLoad(e)
	time.Sleep(300 * time.Millisecond) // some requests on blue first
	flipped := time.Now()
	w.fake.SetLabel("edge_nginx", bluegreen.LabelActive, "green")
	clitest.Eventually(t, 5*time.Second, "a request answered by green", func() error {
		if l.firstOf("green").IsZero() {
			return errors.New("none yet")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // and some after
	colors, failed := l.end()
	took := l.firstOf("green").Sub(flipped)
	t.Logf("flip: first green answer %v after the label change; %d requests, %d failed", took.Round(time.Millisecond), len(colors), len(failed))

	if len(failed) > 0 {
		t.Fatalf("%d requests failed during the flip: %v", len(failed), failed)
	}
	if len(colors) < 40 || colors[0] != "blue" {
		t.Fatalf("requests %v: want blue first and enough of them", colors)
	}
	// During a reload nginx's old and new workers both accept on the listening socket
	// until the master's QUIT reaches the old ones, so a few new connections may still
	// reach blue right after green first answered; past that overlap, only green.
	const overlap = 500 * time.Millisecond
	greenAt := l.firstOf("green")
	for i, c := range colors {
		if at := l.answeredAt(i); c != "green" && at.After(greenAt) && at.Sub(greenAt) > overlap {
			t.Fatalf("request %d answered by %s %v after green had answered: %v", i, c, at.Sub(greenAt), colors)
		}
	}
	if took > 2*time.Second {
		t.Fatalf("flip took %v, want well under a second after the event", took)
	}
	st, err := e.status()
	if err != nil || st.Color != "green" {
		t.Fatalf("/.roomcast/edge: %+v %v", st, err)
	}
	at, err := time.Parse(time.RFC3339, st.AppliedAt)
	if err != nil || at.Before(flipped.Add(-time.Millisecond)) || st.AppliedAt == before.AppliedAt {
		t.Fatalf("applied_at %q (before: %q, flip at %v): %v", st.AppliedAt, before.AppliedAt, flipped, err)
	}
	if n := e.metric("roomcast_edge_reloads_total"); n != 1 {
		t.Fatalf("reloads_total %v, want 1", n)
	}
	if n := e.metric(`roomcast_edge_active_color{color="green"}`); n != 1 {
		t.Fatalf("active_color{green} %v", n)
	}
	if !strings.Contains(e.Stderr.String(), `"msg":"nginx reloaded","from":"blue","to":"green"`) {
		t.Fatal("no reload in the log")
	}
	// Engine API 1.41 (Docker 20.10), negotiated through /_ping; only the nginx
	// service is read.
	for _, r := range w.fake.Requests() {
		if r != "HEAD /_ping" && r != "GET /_ping" && r != "GET /v1.41/services/edge_nginx" && r != "GET /v1.41/events" {
			t.Errorf("unexpected Docker API request %q", r)
		}
	}
	var out bytes.Buffer
	err = run(context.Background(), []string{"status", "-color", "green"}, map[string]string{"ROOMCAST_EDGE_STATUS_PORT": strconv.Itoa(e.statusPort)}, &out, io.Discard)
	if err != nil || !strings.Contains(out.String(), `"color":"green"`) {
		t.Fatalf("roomcast-edge status: %q %v", out.String(), err)
	}
	if err := run(context.Background(), []string{"status", "-color", "blue"}, map[string]string{"ROOMCAST_EDGE_STATUS_PORT": strconv.Itoa(e.statusPort)}, io.Discard, io.Discard); cli.ExitCode(name, err, io.Discard) != 1 {
		t.Fatalf("status -color blue on green: %v, want exit 1", err)
	}

	// The WebSocket opened before the flip stays on blue (its old worker) until
	// worker_shutdown_timeout (4s here) ends it.
	_ = ws.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(ws, "still there?\n")
	if line, err := wsr.ReadString('\n'); err != nil || line != "blue still there?\n" {
		t.Fatalf("WebSocket after the flip: %q %v, want it still on blue", line, err)
	}
	if _, err := wsr.ReadString('\n'); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WebSocket on the old worker not closed by worker_shutdown_timeout: %v", err)
	}
}

func TestFlipByPollWhenTheEventStreamFails(t *testing.T) {
	// Whoever reads Docker (the controller, or the edge itself) polls while its event
	// stream is refused, counts the failure and reopens the stream once it works.
	for _, tc := range []struct {
		name   string
		direct bool
	}{{"through the controller", false}, {"edge reading Docker", true}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, "blue")
			w.direct = tc.direct
			w.deployGreen()
			w.fake.RefuseStreams(true)
			w.fake.CutStreams()
			e := w.start(t, nil) // poll every 200ms
			e.waitServing("blue", 10*time.Second)
			w.fake.SetLabelQuietly("edge_nginx", bluegreen.LabelActive, "green")
			e.waitServing("green", 5*time.Second)
			counted := e.errorsOf(edge.KindEventStream)
			if !tc.direct {
				counted = w.ctrlMetric(`roomcast_edge_controller_errors_total{kind="event_stream"}`)
			}
			if counted < 1 {
				t.Fatalf("event stream failures counted %v", counted)
			}
			w.fake.RefuseStreams(false)
			clitest.Eventually(t, 10*time.Second, "event stream reopened", func() error {
				if w.fake.Streams() == 0 {
					return errors.New("no stream")
				}
				return nil
			})
		})
	}
}

func TestTheControllerDownKeepsTheRunningColor(t *testing.T) {
	w := newWorld(t, "blue")
	w.deployGreen()
	e := w.start(t, nil)
	e.waitServing("blue", 10*time.Second)
	// The controller goes away: the long poll is lost, counted, and nginx keeps blue.
	w.stopController(t)
	clitest.Eventually(t, 10*time.Second, "lost controller counted", func() error {
		if e.errorsOf(edge.KindEventStream) < 1 || e.errorsOf(edge.KindController) < 1 {
			return fmt.Errorf("event_stream %v, controller %v", e.errorsOf(edge.KindEventStream), e.errorsOf(edge.KindController))
		}
		return nil
	})
	e.waitServing("blue", time.Second)
	// The label flips while it is down; once it is back the edge follows.
	w.fake.SetLabel("edge_nginx", bluegreen.LabelActive, "green")
	w.startController(t)
	e.waitServing("green", 10*time.Second)
}

func TestAtStartItWaitsForTheController(t *testing.T) {
	w := newWorld(t, "green")
	w.deployGreen()
	w.stopController(t)
	// Like Docker down at start: no guess (the default color is blue), a bounded wait.
	e := w.start(t, map[string]string{"ROOMCAST_EDGE_DEFAULT_COLOR": "blue"})
	clitest.Eventually(t, 10*time.Second, "waiting counted", func() error {
		if e.errorsOf(edge.KindController) < 2 {
			return errors.New("not yet")
		}
		return nil
	})
	if _, err := e.status(); err == nil {
		t.Fatal("nginx answers before the controller did")
	}
	w.startController(t)
	e.waitServing("green", 10*time.Second)
	if w.blue.hits.Load() != 0 {
		t.Fatal("requests went to blue")
	}
}

func TestRefusedChangesKeepTheOldColor(t *testing.T) {
	brokenForGreen := func(t *testing.T) string {
		b, err := os.ReadFile("../../nginx/nginx.conf.tmpl")
		if err != nil {
			t.Fatal(err)
		}
		s := strings.Replace(string(b), "http {", "http {\n{{if eq .Color \"green\"}}    no_such_directive on;\n{{end}}", 1)
		path := filepath.Join(t.TempDir(), "broken.tmpl")
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tests := []struct {
		name   string
		env    func(t *testing.T) map[string]string
		refuse func(w *world)
		mend   func(w *world) // nil: stays refused
		kind   string
		direct bool // the edge reads Docker (a controller keeps its last labels)
	}{
		{
			name:   "green does not resolve",
			refuse: func(w *world) { w.fake.SetLabel("edge_nginx", bluegreen.LabelActive, "green") },
			mend:   func(w *world) { w.deployGreen() },
			kind:   edge.KindUnresolved,
		},
		{
			name:   "label is not a color",
			refuse: func(w *world) { w.deployGreen(); w.fake.SetLabel("edge_nginx", bluegreen.LabelActive, "purple") },
			mend:   func(w *world) { w.fake.SetLabel("edge_nginx", bluegreen.LabelActive, "green") },
			kind:   edge.KindBadLabel,
		},
		{
			name:   "nginx service missing",
			refuse: func(w *world) { w.deployGreen(); w.fake.RemoveService("edge_nginx") },
			mend: func(w *world) {
				one := uint64(1)
				w.fake.SetService("edge_nginx", map[string]string{bluegreen.LabelActive: "green"}, &one)
			},
			kind: edge.KindServiceNotFound,
		},
		{
			name: "Docker API errors",
			refuse: func(w *world) {
				w.deployGreen()
				w.fake.Fail(`^/services/`, http.StatusInternalServerError, -1)
				w.fake.SetLabel("edge_nginx", bluegreen.LabelActive, "green")
			},
			mend:   func(w *world) { w.fake.Fail(`^/services/`, 0, 0) },
			kind:   edge.KindDockerAPI,
			direct: true,
		},
		{
			name: "nginx -t rejects the green config",
			env: func(t *testing.T) map[string]string {
				return map[string]string{"ROOMCAST_EDGE_TEMPLATE": brokenForGreen(t)}
			},
			refuse: func(w *world) { w.deployGreen(); w.fake.SetLabel("edge_nginx", bluegreen.LabelActive, "green") },
			kind:   edge.KindConfigTest,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, "blue")
			w.direct = tt.direct
			var env map[string]string
			if tt.env != nil {
				env = tt.env(t)
			}
			e := w.start(t, env)
			before := e.waitServing("blue", 10*time.Second)
			tt.refuse(w)
			// Refused at least three times (event + polls), each counted.
			clitest.Eventually(t, 10*time.Second, tt.kind+" counted three times", func() error {
				if n := e.errorsOf(tt.kind); n < 3 {
					return fmt.Errorf("%s counted %v times", tt.kind, n)
				}
				return nil
			})
			if st, err := e.status(); err != nil || st != before {
				t.Fatalf("/.roomcast/edge %+v (%v), want the old %+v", st, err, before)
			}
			if c, err := e.color(); err != nil || c != "blue" {
				t.Fatalf("GET / answered by %q (%v), want blue", c, err)
			}
			conf, _ := os.ReadFile(filepath.Join(e.dir, "run", "nginx.conf"))
			if !strings.Contains(string(conf), "set $backend blue_app;") {
				t.Fatal("the config on disk no longer routes to blue")
			}
			if n := e.metric("roomcast_edge_reloads_total"); n != 0 {
				t.Fatalf("reloads_total %v", n)
			}
			if !strings.Contains(e.Stderr.String(), `"kind":"`+tt.kind+`"`) {
				t.Fatalf("no log line with kind %s", tt.kind)
			}
			if tt.mend != nil {
				tt.mend(w)
				e.waitServing("green", 5*time.Second)
			}
		})
	}
}

func TestARestartedEdgeReadsTheLabel(t *testing.T) {
	w := newWorld(t, "blue")
	w.deployGreen()
	first := w.start(t, nil)
	first.waitServing("blue", 10*time.Second)
	if err := first.Stop(15 * time.Second); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	if pid := first.pid(); pid > 0 && syscall.Kill(pid, 0) == nil {
		t.Fatalf("nginx (pid %d) survived the stop", pid)
	}

	// While it was down the label moved on; the default color is blue.
	w.fake.SetLabel("edge_nginx", bluegreen.LabelActive, "green")
	w.waitControllerServes(t, "green")
	blueHits := w.blue.hits.Load()
	second := w.start(t, map[string]string{"ROOMCAST_EDGE_DEFAULT_COLOR": "blue"})
	second.waitServing("green", 10*time.Second)
	if w.blue.hits.Load() != blueHits {
		t.Fatal("the restarted edge sent requests to blue")
	}
	if logs := second.Stderr.String(); !strings.Contains(logs, `"msg":"nginx started","color":"green"`) ||
		strings.Contains(logs, `"msg":"nginx started","color":"blue"`) {
		t.Fatalf("the restarted edge did not start on green:\n%s", logs)
	}
}

func TestWithoutTheLabelAtStartTheDefaultColorIsUsed(t *testing.T) {
	w := newWorld(t, "")
	w.deployGreen()
	e := w.start(t, map[string]string{"ROOMCAST_EDGE_DEFAULT_COLOR": "green"})
	e.waitServing("green", 10*time.Second)
	// Once running, a label is followed as usual.
	w.fake.SetLabel("edge_nginx", bluegreen.LabelActive, "blue")
	e.waitServing("blue", 5*time.Second)
}

func TestAtStartItWaitsForTheLabelledColor(t *testing.T) {
	w := newWorld(t, "green") // green is not deployed yet; blue is
	e := w.start(t, nil)
	clitest.Eventually(t, 10*time.Second, "waiting logged", func() error {
		if e.errorsOf(edge.KindUnresolved) < 2 {
			return errors.New("not yet")
		}
		return nil
	})
	if _, err := e.status(); err == nil {
		t.Fatal("nginx answers before green resolves")
	}
	if w.blue.hits.Load() != 0 {
		t.Fatal("requests went to blue")
	}
	w.deployGreen()
	e.waitServing("green", 10*time.Second)
}

func TestAtStartItGivesUpAfterTheStartTimeout(t *testing.T) {
	w := newWorld(t, "green") // never deployed
	e := w.start(t, map[string]string{"ROOMCAST_EDGE_START_TIMEOUT": "1s"})
	err := e.Wait(10 * time.Second)
	if code := cli.ExitCode(name, err, io.Discard); code == 0 || !strings.Contains(fmt.Sprint(err), "green_app") {
		t.Fatalf("run: %v (exit %d), want a non-zero exit naming green_app", err, code)
	}
	if e.pid() != 0 {
		t.Fatal("nginx was started")
	}
}

func TestSIGQUITStopsNginxGracefully(t *testing.T) {
	w := newWorld(t, "blue")
	e := w.start(t, nil)
	e.waitServing("blue", 10*time.Second)
	pid := e.pid()
	// run has had SIGQUIT on its signal channel since before nginx started.
	if err := syscall.Kill(os.Getpid(), syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	err := e.Wait(15 * time.Second)
	if code := cli.ExitCode(name, err, io.Discard); code != 0 {
		t.Fatalf("exit %d (%v), want nginx's 0", code, err)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatalf("nginx (pid %d) still running", pid)
	}
	if !strings.Contains(e.Stderr.String(), `"signal":"quit","graceful":true`) {
		t.Fatalf("no graceful stop in the log:\n%s", e.Stderr)
	}
}

func TestNginxDyingOnItsOwnEndsRoomcastEdge(t *testing.T) {
	w := newWorld(t, "blue")
	e := w.start(t, nil)
	e.waitServing("blue", 10*time.Second)
	// A fast shutdown asked of nginx directly: status 0, but not asked by us.
	if err := syscall.Kill(e.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := e.Wait(10 * time.Second)
	if code := cli.ExitCode(name, err, io.Discard); code == 0 || !strings.Contains(fmt.Sprint(err), "on its own") {
		t.Fatalf("run: %v (exit %d), want non-zero", err, code)
	}
}

func TestDefaultsAndEmptyValues(t *testing.T) {
	cfg, err := loadConfig(map[string]string{"ROOMCAST_EDGE_METRICS_ADDR": "", "ROOMCAST_EDGE_SERVICE": "", "ROOMCAST_EDGE_CONTROLLER": "http://edge_controller:9190"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MetricsAddr != ":9180" || cfg.Service != "edge_nginx" || cfg.DockerHost != "" ||
		cfg.ShutdownTimeout != 40*time.Second || cfg.DrainDelay != 0 || cfg.StopTimeout != time.Second || cfg.ListenPort != 80 || cfg.StatusPort != 8081 || cfg.LimitConn != 0 || cfg.AppPort != 8080 || cfg.Resolver != "127.0.0.11" {
		t.Fatalf("defaults: %+v", cfg)
	}
	p := cfg.params()
	if p.PidPath != "/run/roomcast-edge/nginx.pid" || p.TempDir != "/run/roomcast-edge/tmp" || p.HealthDir != "/run/roomcast-edge/health" || p.User != "" {
		t.Fatalf("paths: %+v", p)
	}
	if cfg, err := loadConfig(map[string]string{"ROOMCAST_EDGE_METRICS_ADDR": "off", "ROOMCAST_EDGE_RESOLVER": "fd00::53", "DOCKER_HOST": "unix:///d.sock"}); err != nil ||
		cfg.MetricsAddr != "off" || cfg.params().Resolver != "[fd00::53]" {
		t.Fatalf("off / IPv6 resolver: %+v %v", cfg, err)
	}
}

// The TLS files come both or neither, readable, and as a certificate with its key:
// anything else stops the edge at start (exit 2) naming the variable at fault.
func TestTLSFilesAreCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	ca := edgetest.NewCA(t, dir)
	other := edgetest.NewCA(t, t.TempDir())
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	const certVar, keyVar = "ROOMCAST_EDGE_TLS_CERT_FILE", "ROOMCAST_EDGE_TLS_KEY_FILE"
	tests := []struct {
		name, cert, key, variable string
	}{
		{"cert without key", ca.CertFile, "", keyVar},
		{"key without cert", "", ca.KeyFile, certVar},
		{"missing cert", missing, ca.KeyFile, certVar},
		{"missing key", ca.CertFile, missing, keyVar},
		{"garbage cert", garbage, ca.KeyFile, certVar},
		{"key as cert", ca.KeyFile, ca.KeyFile, certVar},
		{"garbage key", ca.CertFile, garbage, keyVar},
		{"another certificate's key", ca.CertFile, other.KeyFile, keyVar},
		{"relative path", "tls.crt", ca.KeyFile, certVar},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"ROOMCAST_EDGE_CONTROLLER": "http://edge_controller:9190", certVar: tt.cert, keyVar: tt.key}
			value := tt.cert
			if tt.variable == keyVar {
				value = tt.key
			}
			clitest.InvalidEnv(t, name, run, env, tt.variable, value)
		})
	}
	for _, tt := range []struct{ name, value string }{
		{"ROOMCAST_EDGE_TLS_LISTEN_PORT", "0"},
		{"ROOMCAST_EDGE_TLS_LISTEN_PORT", "8081"}, // the status port
		{"ROOMCAST_EDGE_TLS_PUBLIC_PORT", "70000"},
	} {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			env := map[string]string{"ROOMCAST_EDGE_CONTROLLER": "http://edge_controller:9190", tt.name: tt.value}
			clitest.InvalidEnv(t, name, run, env, tt.name, tt.value)
		})
	}
}

// A good pair reaches the template values; none leaves the edge on HTTP.
func TestTLSFilesReachTheTemplate(t *testing.T) {
	ca := edgetest.NewCA(t, t.TempDir())
	cfg, err := loadConfig(map[string]string{"ROOMCAST_EDGE_CONTROLLER": "http://edge_controller:9190",
		"ROOMCAST_EDGE_TLS_CERT_FILE": ca.CertFile, "ROOMCAST_EDGE_TLS_KEY_FILE": ca.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.params()
	if !p.TLS() || p.TLSCertFile != ca.CertFile || p.TLSKeyFile != ca.KeyFile || p.TLSListenPort != 8443 || p.TLSPublicPort != 443 || p.RedirectPort() != "" {
		t.Fatalf("params %+v: want the files, 8443 inside, 443 outside", p)
	}
	cfg, err = loadConfig(map[string]string{"ROOMCAST_EDGE_CONTROLLER": "http://edge_controller:9190"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.params().TLS() {
		t.Fatal("TLS without the files")
	}
}

// A stop drains in the order a load balancer needs: /edgez answers 503 at once while
// nginx serves everything else for ROOMCAST_EDGE_DRAIN_DELAY; then nginx stops
// accepting and the WebSockets still open are closed after ROOMCAST_EDGE_STOP_TIMEOUT,
// long before worker_shutdown_timeout, and roomcast-edge exits 0.
func TestStopDrainsForTheLoadBalancer(t *testing.T) {
	const drainDelay, stopTimeout = 1500 * time.Millisecond, 500 * time.Millisecond
	w := newWorld(t, "blue")
	e := w.start(t, map[string]string{
		"ROOMCAST_EDGE_DRAIN_DELAY":             drainDelay.String(),
		"ROOMCAST_EDGE_STOP_TIMEOUT":            stopTimeout.String(),
		"ROOMCAST_EDGE_WORKER_SHUTDOWN_TIMEOUT": "40s",
	})
	e.waitServing("blue", 10*time.Second)
	// nginx's workers, run by root, are nginx's default user: let them reach the file.
	for _, d := range []string{filepath.Dir(e.dir), e.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	edgez := func() (int, error) {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/edgez", e.listen))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := edgez(); code != http.StatusOK {
		t.Fatalf("/edgez while serving: %d %v, want 200", code, err)
	}
	conn, r := dialWS(t, e)
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	echo := func(msg string) error {
		if _, err := fmt.Fprintf(conn, "%s\n", msg); err != nil {
			return err
		}
		line, err := r.ReadString('\n')
		if err == nil && line != "blue "+msg+"\n" {
			err = fmt.Errorf("echo %q", line)
		}
		return err
	}
	if err := echo("before"); err != nil {
		t.Fatal(err)
	}

	stopped := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	clitest.Eventually(t, time.Second, "/edgez answering 503", func() error {
		if code, err := edgez(); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/edgez %d %v", code, err)
		}
		return nil
	})
	// Still within the drain delay: everything else is served, the WebSocket too.
	if c, err := e.color(); err != nil || c != "blue" {
		t.Fatalf("GET / while draining: %q %v", c, err)
	}
	if err := echo("draining"); err != nil {
		t.Fatalf("the WebSocket while draining: %v", err)
	}
	if since := time.Since(stopped); since >= drainDelay {
		t.Fatalf("the checks took %s, past the drain delay: the test proves nothing", since)
	}

	// Then the WebSocket is closed, after the drain delay and the stop timeout but
	// long before worker_shutdown_timeout (40s).
	_, err := r.ReadString('\n')
	closed := time.Since(stopped)
	if err == nil {
		t.Fatal("the WebSocket got data after the stop")
	}
	if closed < drainDelay || closed > drainDelay+stopTimeout+5*time.Second {
		t.Fatalf("the WebSocket was closed %s after the stop (%v), want between %s and %s",
			closed.Round(time.Millisecond), err, drainDelay, drainDelay+stopTimeout+5*time.Second)
	}
	if err := e.Wait(10 * time.Second); err != nil {
		t.Fatalf("roomcast-edge: %v, want exit 0", err)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", e.listen), time.Second); err == nil {
		c.Close()
		t.Fatal("nginx still accepts after roomcast-edge returned")
	}
	t.Logf("WebSocket closed %s after SIGTERM (drain delay %s, stop timeout %s)", closed.Round(time.Millisecond), drainDelay, stopTimeout)
	logs := e.Stderr.String()
	for _, want := range []string{`"msg":"health check failing"`, `"msg":"draining: health check failing, nginx still serving","drain_delay":"1.5s"`,
		`"signal":"quit","graceful":true`, `"msg":"closing the connections still open","signal":"terminated","stop_timeout":"500ms"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %s:\n%s", want, logs)
		}
	}
}
