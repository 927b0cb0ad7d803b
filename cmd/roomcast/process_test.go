package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"roomcast/pkg/testenv"
	"roomcast/pkg/wsclient"
	"roomcast/pkg/wsclient/wsclienttest"
)

// These tests run the real binaries: roomcast built from this module, and nats-server
// (from PATH, or built from the module's dependency). They show what only a process
// shows: signals, exit statuses, stderr, and recovery from a NATS that really goes away.
//
// They are subtests of one test so that the binaries are built once, into one
// t.TempDir, and the subtests run in parallel.
func TestProcesses(t *testing.T) {
	bins := buildBinaries(t)
	tests := []struct {
		name string
		run  func(*testing.T, binaries)
	}{
		{"RoomAcrossThreeReplicasSurvivesANATSRestart", testRoomAcrossReplicasSurvivesNATSRestart},
		{"SignalDrainsCloses1012AndExits0", testSignalDrains},
		{"SecondSIGTERMDuringTheDrainDelayExits1AtOnce", testSecondSignal},
		{"HelpListsEveryVariableWithItsDefault", testHelp},
		{"InvalidEnvironmentExits2WithOneLine", testInvalidEnvironment},
		{"EmbeddedNATSServesChatAndHealthcheckProbesIt", testEmbeddedAndHealthcheck},
		{"ProfilesOnTheirOwnAddressIncludeTheEmbeddedNATSServer", testProfiles},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, bins)
		})
	}
}

func testRoomAcrossReplicasSurvivesNATSRestart(t *testing.T, bins binaries) {
	ns := startNATSServer(t, bins, 0)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", ns.port)
	var reps []*roomcastProc
	for i := 1; i <= 3; i++ {
		r := startRoomcast(t, bins, fmt.Sprintf("r%d", i), "NATS_URL="+natsURL)
		waitReadyz(t, r, 200, "ready")
		reps = append(reps, r)
	}
	members := []*wsclient.Client{
		dial(t, reps[0], "span"), dial(t, reps[0], "span"), dial(t, reps[1], "span"), dial(t, reps[2], "span"),
	}
	everyoneGetsEveryoneOnce(t, members, "before")

	pids := make([]int, len(reps))
	for i, r := range reps {
		pids[i] = r.pid()
	}

	// NATS goes away for real: every replica notices, and says so.
	ns.signal(syscall.SIGTERM)
	if code := ns.wait(t, 10*time.Second); code != 0 {
		t.Logf("nats-server exited %d on SIGTERM", code)
	}
	for _, r := range reps {
		waitReadyz(t, r, 503, "not_ready")
		if _, body := readyz(t, r); body["reason"] == nil || body["reason"] == "" {
			t.Errorf("%s: not_ready without a reason: %v", r.name, body)
		}
	}
	if err := members[0].Send("into the void"); err != nil {
		t.Fatal(err)
	}
	expectError(t, members[0], "unavailable")

	// NATS comes back on the same port; nobody restarts the replicas.
	startNATSServer(t, bins, ns.port)
	for i, r := range reps {
		waitReadyz(t, r, 200, "ready")
		if r.exited() || r.pid() != pids[i] {
			t.Fatalf("%s was restarted (pid %d, was %d)", r.name, r.pid(), pids[i])
		}
	}
	// The connections opened before the outage deliver across replicas again, and the
	// refused message never shows up.
	everyoneGetsEveryoneOnce(t, members, "after")
}

func testSignalDrains(t *testing.T, bins binaries) {
	for name, sig := range map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const delay, window = 700 * time.Millisecond, 300 * time.Millisecond
			r := startRoomcast(t, bins, "drainer", "ROOMCAST_DRAIN_DELAY="+delay.String(), "ROOMCAST_DRAIN_TIMEOUT="+window.String())
			waitReadyz(t, r, 200, "ready")
			clients := []*wsclient.Client{dial(t, r, "drain"), dial(t, r, "drain"), dial(t, r, "drain")}

			signalled := time.Now()
			r.signal(sig)
			waitReadyz(t, r, 503, "draining")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, resp, err := wsclient.Dial(ctx, "ws://"+r.addr+"/ws/chat/drain/", wsclient.Options{})
			cancel()
			if err == nil {
				c.Close()
				t.Error("a new upgrade was accepted while draining")
			} else if resp == nil || resp.StatusCode != 503 {
				t.Errorf("a new upgrade while draining: %v, want HTTP 503", err)
			}
			for i, c := range clients {
				if code := expectClose(t, c); code != 1012 {
					t.Errorf("client %d closed with %d (%v), want 1012", i, code, c.CloseError())
				}
			}
			if code := r.wait(t, delay+window+10*time.Second); code != 0 {
				t.Fatalf("exit status %d after %s, want 0; stderr:\n%s", code, name, r.stderr)
			}
			took := time.Since(signalled)
			if took < delay {
				t.Errorf("exited %v after %s, before the drain delay of %v", took, name, delay)
			}
			if !r.stderr.hasJSON("msg", "drained") {
				t.Errorf("no \"drained\" log line; stderr:\n%s", r.stderr)
			}
			t.Logf("drained and exited %v after %s", took.Round(time.Millisecond), name)
		})
	}
}

func testSecondSignal(t *testing.T, bins binaries) {
	r := startRoomcast(t, bins, "stubborn", "ROOMCAST_DRAIN_DELAY=1m")
	waitReadyz(t, r, 200, "ready")
	c := dial(t, r, "stubborn")
	r.signal(syscall.SIGTERM)
	waitReadyz(t, r, 503, "draining")
	select {
	case <-c.Done():
		t.Fatal("a client was closed during the drain delay")
	default:
	}
	second := time.Now()
	r.signal(syscall.SIGTERM)
	if code := r.wait(t, 5*time.Second); code != 1 {
		t.Fatalf("exit status %d after a second SIGTERM, want 1; stderr:\n%s", code, r.stderr)
	}
	if took := time.Since(second); took > 3*time.Second {
		t.Errorf("the second SIGTERM took %v to end the process", took)
	}
	if !r.stderr.has("interrupted by a second signal") {
		t.Errorf("stderr does not say why it exited 1:\n%s", r.stderr)
	}
}

func testHelp(t *testing.T, bins binaries) {
	p := startProcess(t, "roomcast -h", bins.roomcast, nil, "-h")
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("roomcast -h exited %d; stderr:\n%s", code, p.stderr)
	}
	if s := p.stderr.String(); s != "" {
		t.Errorf("roomcast -h wrote to stderr: %q", s)
	}
	// The contract's variables and their defaults. ROOMCAST_SEND_QUEUE_BYTES is the
	// binary's own addition; the contract's auth variables (ROOMCAST_JWT_*,
	// ROOMCAST_MAX_CONNECTIONS, ROOMCAST_ACCEPT_RATE) are not implemented yet.
	want := []struct{ name, def string }{
		{"ROOMCAST_ADDR", ":8080"},
		{"NATS_URL", "(empty)"},
		{"ROOMCAST_EMBEDDED_NATS_ADDR", "(empty)"},
		{"ROOMCAST_COLOR", "local"},
		{"ROOMCAST_INSTANCE", "hostname"},
		{"ROOMCAST_MAX_MESSAGE_BYTES", "4096"},
		{"ROOMCAST_SEND_QUEUE", "256"},
		{"ROOMCAST_SEND_QUEUE_BYTES", "1048576"},
		{"ROOMCAST_RATE_LIMIT", "20"},
		{"ROOMCAST_RATE_BURST", "40"},
		{"ROOMCAST_ALLOWED_ORIGINS", "(empty)"},
		{"ROOMCAST_HISTORY_SIZE", "100"},
		{"ROOMCAST_HISTORY_TTL", "1h"},
		{"ROOMCAST_DRAIN_DELAY", "5s"},
		{"ROOMCAST_DRAIN_TIMEOUT", "20s"},
		{"ROOMCAST_PING_INTERVAL", "25s"},
		{"ROOMCAST_LOG_FORMAT", "json"},
		{"ROOMCAST_LOG_LEVEL", "info"},
	}
	defaults := map[string]string{}
	for _, line := range p.stdout.lines() {
		if f := strings.Fields(line); len(f) >= 2 && (strings.HasPrefix(f[0], "ROOMCAST_") || f[0] == "NATS_URL") {
			defaults[f[0]] = f[1]
		}
	}
	for _, w := range want {
		got, ok := defaults[w.name]
		switch {
		case !ok:
			t.Errorf("-h does not list %s", w.name)
		case got != w.def:
			t.Errorf("-h gives %s the default %q, want %q", w.name, got, w.def)
		}
	}
	if !strings.Contains(p.stdout.String(), "healthcheck") {
		t.Errorf("-h does not mention the healthcheck subcommand")
	}
}

func testInvalidEnvironment(t *testing.T, bins binaries) {
	tests := []struct{ name, value string }{
		{"ROOMCAST_SEND_QUEUE", "abc"},
		{"ROOMCAST_SEND_QUEUE", "0"},
		{"ROOMCAST_DRAIN_DELAY", "soon"},
		{"ROOMCAST_DRAIN_TIMEOUT", "-1s"},
		{"ROOMCAST_LOG_FORMAT", "xml"},
		{"ROOMCAST_LOG_LEVEL", "loud"},
		{"ROOMCAST_MAX_MESSAGE_BYTES", "0"},
		{"ROOMCAST_MAX_MESSAGE_BYTES", "4k"},
		{"ROOMCAST_RATE_LIMIT", "0"},
		{"ROOMCAST_RATE_BURST", "many"},
		{"ROOMCAST_PING_INTERVAL", "1ms"},
		{"ROOMCAST_ADDR", "8080"},
		{"ROOMCAST_EMBEDDED_NATS_ADDR", "nats"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			t.Parallel()
			env := []string{tt.name + "=" + tt.value}
			if tt.name != "ROOMCAST_ADDR" {
				env = append(env, "ROOMCAST_ADDR=127.0.0.1:0") // if it starts anyway, not on :8080
			}
			p := startProcess(t, "roomcast", bins.roomcast, env)
			if code := p.wait(t, 10*time.Second); code != 2 {
				t.Fatalf("exit status %d, want 2; stderr:\n%s", code, p.stderr)
			}
			lines := p.stderr.lines()
			if len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want exactly one:\n%s", len(lines), p.stderr)
			}
			// NAME, then the value, then what is allowed.
			line := lines[0]
			_, afterName, ok := strings.Cut(line, tt.name)
			_, afterValue, ok2 := strings.Cut(afterName, tt.value)
			if !ok || !ok2 {
				t.Fatalf("stderr %q does not name %s and %q", line, tt.name, tt.value)
			}
			if allowed := strings.Trim(afterValue, `"': `); allowed == "" {
				t.Errorf("stderr %q does not say what is allowed", line)
			}
			if s := p.stdout.String(); s != "" {
				t.Errorf("wrote to stdout: %q", s)
			}
		})
	}
}

func testEmbeddedAndHealthcheck(t *testing.T, bins binaries) {
	r := startRoomcast(t, bins, "solo") // no NATS_URL: embedded NATS in-process
	waitReadyz(t, r, 200, "ready")
	if r.stderr.hasJSON("msg", "embedded NATS listening") {
		t.Errorf("the embedded NATS server listens on a port without ROOMCAST_EMBEDDED_NATS_ADDR")
	}
	members := []*wsclient.Client{dial(t, r, "solo"), dial(t, r, "solo")}
	everyoneGetsEveryoneOnce(t, members, "m")
	resp := get(t, "http://"+r.addr+"/")
	if resp.code != 200 || !strings.Contains(resp.header.Get("Content-Type"), "text/html") || !bytes.Contains(resp.body, []byte("/ws/chat/")) {
		t.Errorf("GET /: %d %s", resp.code, resp.header.Get("Content-Type"))
	}

	_, port, _ := net.SplitHostPort(r.addr)
	// A second replica with a probe listener.
	probed := startRoomcast(t, bins, "probed", "ROOMCAST_PROBE_ADDR=127.0.0.1:0")
	probeAddr := probed.probeAddr(t)
	waitReadyz(t, probed, 200, "ready")
	if resp := get(t, "http://"+probeAddr+"/readyz"); resp.code != 200 {
		t.Errorf("GET /readyz on the probe listener: %d", resp.code)
	}
	_, probedPort, _ := net.SplitHostPort(probed.addr)
	_, probePort, _ := net.SplitHostPort(probeAddr)
	free := strconv.Itoa(testenv.FreePort(t))
	tests := []struct {
		name, addr, probeAddr string
		code                  int
		says                  string // in stderr when it fails
	}{
		{"a running replica", "127.0.0.1:" + port, "", 0, ""},
		{"a running replica given as :port", ":" + port, "", 0, ""},
		{"nothing listens", "127.0.0.1:" + free, "", 1, "/healthz"},
		{"a running replica's probe listener", ":" + probedPort, ":" + probePort, 0, ""},
		{"nothing listens on the probe address", ":" + probedPort, "127.0.0.1:" + free, 1, "/healthz"},
		// The probe listener answers, the public one is not where ROOMCAST_ADDR says.
		{"nothing listens on the public address", ":" + free, ":" + probePort, 1, "ROOMCAST_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := []string{"ROOMCAST_ADDR=" + tt.addr, "ROOMCAST_PROBE_ADDR=" + tt.probeAddr}
			p := startProcess(t, "roomcast healthcheck", bins.roomcast, env, "healthcheck")
			if code := p.wait(t, 10*time.Second); code != tt.code {
				t.Fatalf("roomcast healthcheck with %v exited %d, want %d; stderr:\n%s", env, code, tt.code, p.stderr)
			}
			if tt.code != 0 && !p.stderr.has(tt.says) {
				t.Errorf("a failed healthcheck does not say what it probed (%s): %q", tt.says, p.stderr)
			}
		})
	}
}

// With ROOMCAST_PPROF_ADDR, a replica's profiles show the embedded NATS server's work
// too (one process), and only that address serves them.
func testProfiles(t *testing.T, bins binaries) {
	r := startRoomcast(t, bins, "profiled", "ROOMCAST_PPROF_ADDR=127.0.0.1:0")
	waitReadyz(t, r, 200, "ready")
	everyoneGetsEveryoneOnce(t, []*wsclient.Client{dial(t, r, "p"), dial(t, r, "p")}, "m")
	profiles := "http://" + r.loggedAddr(t, "pprof_addr") + "/debug/pprof/"
	resp := get(t, profiles+"goroutine?debug=2")
	for _, want := range []string{"github.com/nats-io/nats-server/v2/server.", "roomcast/pkg/server/hub.", "github.com/lxzan/gws."} {
		if resp.code != 200 || !bytes.Contains(resp.body, []byte(want)) {
			t.Errorf("GET %sgoroutine: %d without %s", profiles, resp.code, want)
		}
	}
	if resp := get(t, "http://"+r.addr+"/debug/pprof/"); resp.code != 404 {
		t.Errorf("the public listener answers /debug/pprof/ with %d, want 404", resp.code)
	}
}

// everyoneGetsEveryoneOnce has each member send tag<i> and checks that every member,
// the sender included, receives each of them exactly once.
func everyoneGetsEveryoneOnce(t *testing.T, members []*wsclient.Client, tag string) {
	t.Helper()
	var want []string
	for i, c := range members {
		text := fmt.Sprintf("%s%d", tag, i)
		want = append(want, text)
		if err := c.Send(text); err != nil {
			t.Fatalf("member %d: sending: %v", i, err)
		}
	}
	slices.Sort(want)
	for i, c := range members {
		var got []string
		for len(got) < len(want) {
			f := next(t, c)
			if f.Type != "message" {
				t.Fatalf("member %d: unexpected frame %s", i, f.Raw)
			}
			got = append(got, f.Message)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("member %d got %q, want %q once each", i, got, want)
		}
	}
	// A duplicate (or a message that should never have gone out) would follow.
	for i, c := range members {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		f, err := c.Next(ctx)
		cancel()
		if err == nil {
			t.Errorf("member %d: extra frame %s", i, f.Raw)
		}
	}
}

// binaries are the programs under test.
type binaries struct{ roomcast, natsServer string }

// buildBinaries builds roomcast, and nats-server unless one is on PATH, into t.TempDir.
func buildBinaries(t *testing.T) binaries {
	t.Helper()
	dir := t.TempDir()
	goTool, err := exec.LookPath("go") // go test puts GOROOT/bin first on PATH
	if err != nil {
		t.Fatalf("no go command to build the binaries: %v", err)
	}
	build := func(out, pkg string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		started := time.Now()
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		t.Logf("built %s in %v", pkg, time.Since(started).Round(time.Millisecond))
	}
	bins := binaries{roomcast: filepath.Join(dir, "roomcast")}
	build(bins.roomcast, "roomcast/cmd/roomcast")
	if bins.natsServer, err = exec.LookPath("nats-server"); err != nil {
		bins.natsServer = filepath.Join(dir, "nats-server")
		build(bins.natsServer, "github.com/nats-io/nats-server/v2")
	}
	return bins
}

// process is a started program; it is killed in t.Cleanup if it is still running.
type process struct {
	name   string
	cmd    *exec.Cmd
	stdout *output
	stderr *output
	done   chan struct{} // closed when the process has exited and its output is read
}

func startProcess(t *testing.T, name, path string, env []string, args ...string) *process {
	t.Helper()
	p := &process{name: name, stdout: &output{}, stderr: &output{}, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = env // nothing from the test's environment leaks in
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	// If the test binary dies without its cleanups, so do the children.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = syscall.Kill(p.pid(), syscall.SIGKILL)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", name, p.pid())
		}
		if t.Failed() {
			t.Logf("%s (pid %d) stderr:\n%s", name, p.pid(), p.stderr)
		}
	})
	return p
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) signal(sig syscall.Signal) {
	_ = syscall.Kill(p.pid(), sig)
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits at most d for the process to exit and returns its exit status.
func (p *process) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("%s (pid %d) still running after %v; stderr:\n%s", p.name, p.pid(), d, p.stderr)
		return -1
	}
}

// output collects what a process writes; safe for concurrent use.
type output struct{ testenv.SyncBuffer }

// lines are the complete lines written so far.
func (o *output) lines() []string {
	s := o.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}

func (o *output) has(text string) bool { return strings.Contains(o.String(), text) }

// jsonLines are the lines that are JSON objects (slog's JSON handler).
func (o *output) jsonLines() []map[string]any {
	var out []map[string]any
	for _, line := range o.lines() {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func (o *output) hasJSON(key, value string) bool {
	return slices.ContainsFunc(o.jsonLines(), func(m map[string]any) bool { return m[key] == value })
}

// roomcastProc is a running roomcast server.
type roomcastProc struct {
	*process
	addr string // host:port it listens on
}

// probeAddr is the probe listener's address, from the replica's "listening" line.
func (r *roomcastProc) probeAddr(t *testing.T) string { return r.loggedAddr(t, "probe_addr") }

// loggedAddr is the address the "listening" line gives under key.
func (r *roomcastProc) loggedAddr(t *testing.T, key string) string {
	t.Helper()
	for _, m := range r.stderr.jsonLines() {
		if addr, ok := m[key].(string); ok && m["msg"] == "listening" {
			return addr
		}
	}
	t.Fatalf("roomcast %s logged no %s; stderr:\n%s", r.name, key, r.stderr)
	return ""
}

// startRoomcast starts a replica on a free port of 127.0.0.1 with short drain times;
// env adds to or overrides its environment.
func startRoomcast(t *testing.T, bins binaries, instance string, env ...string) *roomcastProc {
	t.Helper()
	base := []string{
		"ROOMCAST_ADDR=127.0.0.1:0",
		"ROOMCAST_INSTANCE=" + instance,
		"ROOMCAST_COLOR=proc",
		"ROOMCAST_DRAIN_DELAY=100ms",
		"ROOMCAST_DRAIN_TIMEOUT=100ms",
	}
	p := startProcess(t, "roomcast "+instance, bins.roomcast, append(base, env...)) // the last value of a key wins
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, m := range p.stderr.jsonLines() {
			if addr, ok := m["addr"].(string); ok && m["msg"] == "listening" {
				return &roomcastProc{process: p, addr: addr}
			}
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("roomcast %s did not log its address (exited: %v); stderr:\n%s", instance, p.exited(), p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// natsProc is a running nats-server.
type natsProc struct {
	*process
	port int
}

// startNATSServer starts nats-server on 127.0.0.1:port, or on a free port when port is 0.
func startNATSServer(t *testing.T, bins binaries, port int) *natsProc {
	t.Helper()
	fixed := port != 0
	for attempt := 1; ; attempt++ {
		if !fixed {
			port = testenv.FreePort(t)
		}
		p := startProcess(t, "nats-server", bins.natsServer, nil, "-a", "127.0.0.1", "-p", strconv.Itoa(port))
		deadline := time.Now().Add(10 * time.Second)
		for !p.stderr.has("Server is ready") && !p.exited() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		switch {
		case p.stderr.has("Server is ready"):
			return &natsProc{process: p, port: port}
		case p.exited() && !fixed && attempt < 3:
			continue // somebody took the free port meanwhile
		default:
			t.Fatalf("nats-server on port %d not ready (exited: %v); stderr:\n%s", port, p.exited(), p.stderr)
		}
	}
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func get(t *testing.T, url string) response {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return response{resp.StatusCode, resp.Header, body}
}

func readyz(t *testing.T, r *roomcastProc) (int, map[string]any) {
	t.Helper()
	resp := get(t, "http://"+r.addr+"/readyz")
	var body map[string]any
	if err := json.Unmarshal(resp.body, &body); err != nil {
		t.Fatalf("%s: /readyz body %q: %v", r.name, resp.body, err)
	}
	return resp.code, body
}

// waitReadyz polls /readyz for at most 15s until it answers code with status.
func waitReadyz(t *testing.T, r *roomcastProc, code int, status string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, body := readyz(t, r)
		if got == code && body["status"] == status {
			if body["instance"] != strings.TrimPrefix(r.name, "roomcast ") || body["color"] != "proc" {
				t.Errorf("%s: /readyz does not identify the replica: %v", r.name, body)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /readyz still %d %v, want %d %q", r.name, got, body, code, status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dial joins room on r; the connection is closed in t.Cleanup.
func dial(t *testing.T, r *roomcastProc, room string) *wsclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws://" + r.addr + "/ws/chat/" + room + "/"
	c, _, err := wsclient.Dial(ctx, url, wsclient.Options{})
	if err != nil {
		t.Fatalf("dialing %s: %v", url, err)
	}
	t.Cleanup(func() {
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Errorf("closing the connection to %s took more than 5s", url)
		}
	})
	return c
}

func next(t *testing.T, c *wsclient.Client) wsclient.Frame {
	t.Helper()
	return wsclienttest.Next(t, c)
}

func expectError(t *testing.T, c *wsclient.Client, code string) {
	t.Helper()
	if f := next(t, c); f.Type != "error" || f.Code != code || f.Error == "" {
		t.Fatalf("got %s, want an error frame with code %q", f.Raw, code)
	}
}

// expectClose waits at most 10s for the server to close c and returns the close code.
func expectClose(t *testing.T, c *wsclient.Client) uint16 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, err := c.WaitClosed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return code
}
