package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"go.uber.org/goleak"

	"roomcast/pkg/auth"
	"roomcast/pkg/cli"
	"roomcast/pkg/server/httpapi"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
)

// The tests drive run() exactly as the command line does, against in-process replicas.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startReplica starts a replica of color on a free port of 127.0.0.1 and returns its
// address.
func startReplica(t *testing.T, name, natsURL, color string) string {
	t.Helper()
	return startReplicaWithAuth(t, name, natsURL, color, nil)
}

// startReplicaWithAuth is startReplica with every upgrade needing a token of v.
func startReplicaWithAuth(t *testing.T, name, natsURL, color string, v *auth.Verifier) string {
	t.Helper()
	return replicatest.Start(t, replicatest.Instance(name), replicatest.NATS(natsURL), replicatest.Color(color),
		replicatest.Auth(v), replicatest.RateLimit(20, 40)).Addr().String()
}

type outcome struct {
	code           int
	stdout, stderr string
}

// start runs the command with args in the background; the channel gets its exit code
// and output.
func start(args ...string) <-chan outcome {
	return startWithInput("", args...)
}

// startWithInput is start with stdin holding input.
func startWithInput(input string, args ...string) <-chan outcome {
	done := make(chan outcome, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, map[string]string{}, strings.NewReader(input), &stdout, &stderr)
		code := cli.ExitCode(name, err, &stderr)
		done <- outcome{code: code, stdout: stdout.String(), stderr: stderr.String()}
	}()
	return done
}

// wait returns what start's run did. It fails the test if run outlives the -timeout in
// args (default 60s) by far: however it fails, a run must be bounded.
func wait(t *testing.T, done <-chan outcome, args ...string) outcome {
	t.Helper()
	limit := 60 * time.Second
	for i, a := range args {
		if a == "-timeout" && i+1 < len(args) {
			if d, err := time.ParseDuration(args[i+1]); err == nil && d > 0 {
				limit = d
			}
		}
	}
	select {
	case o := <-done:
		return o
	case <-time.After(limit + 30*time.Second):
		t.Fatalf("run %q still running 30s after its timeout of %s", args, limit)
		return outcome{}
	}
}

// runSmoke runs the command with args and returns its exit code and output.
func runSmoke(t *testing.T, args ...string) outcome {
	t.Helper()
	return wait(t, start(args...), args...)
}

// lines returns the output lines that start with prefix.
func lines(out, prefix string) []string {
	var got []string
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, prefix) {
			got = append(got, strings.TrimSuffix(l, "\n"))
		}
	}
	return got
}

// wantOneLine fails unless exactly one line of out starts with prefix.
func wantOneLine(t *testing.T, out, prefix string) string {
	t.Helper()
	got := lines(out, prefix)
	if len(got) != 1 {
		t.Errorf("want one line starting %q, got %d; output:\n%s", prefix, len(got), out)
		return ""
	}
	return got[0]
}

func TestAllChecksPassOnReplicasSharingNATS(t *testing.T) {
	nats := natstest.Start(t).ClientURL()
	a := startReplica(t, "a", nats, "green")
	b := startReplica(t, "b", nats, "green")
	c := startReplica(t, "c", nats, "green")

	// a appears under two -target flags (and twice within one): one replica all the same.
	o := runSmoke(t, "-target", a+","+b+", "+a, "-target", c+","+a, "-color", "green")
	if o.code != 0 {
		t.Fatalf("exit code %d, want 0; stdout:\n%s\nstderr:\n%s", o.code, o.stdout, o.stderr)
	}
	if got := lines(o.stdout, "ok   resolve "); len(got) != 4 {
		t.Errorf("want a resolve line per -target entry (a, b, c, a), got %q", got)
	}
	for _, addr := range []string{a, b, c} {
		if l := wantOneLine(t, o.stdout, "ok   ready "+addr+" "); l != "" {
			if !strings.Contains(l, "color=green") || !strings.Contains(l, "waited=") {
				t.Errorf("ready line %q lacks the color or the time waited", l)
			}
		}
		if l := wantOneLine(t, o.stdout, "ok   metrics "+addr+" "); l != "" && !strings.Contains(l, "roomcast_build_info color=green") {
			t.Errorf("metrics line %q lacks roomcast_build_info color=green", l)
		}
		if l := wantOneLine(t, o.stdout, "ok   join "+addr+" "); l != "" && !strings.Contains(l, "room=smoke-") {
			t.Errorf("join line %q lacks the smoke-<random> room", l)
		}
		if l := wantOneLine(t, o.stdout, "ok   message "+addr+" "); l != "" && !strings.Contains(l, "each of the 3 messages exactly once") {
			t.Errorf("message line %q does not say it got all 3 messages once", l)
		}
	}
	if got := lines(o.stdout, "FAIL"); len(got) > 0 {
		t.Errorf("FAIL lines: %q", got)
	}
	if got := lines(o.stdout, "skip"); len(got) > 0 {
		t.Errorf("skip lines: %q", got)
	}
	// 16 checks, or more where the replicas number messages (the seq agreement check).
	if l := lastLine(o.stdout); !strings.HasPrefix(l, "PASS all ") || !strings.Contains(l, " checks on 3 replicas of green") {
		t.Errorf("last line %q, want the PASS summary", lastLine(o.stdout))
	}
}

func TestWithAuthOnTheJoinsCarryATokenMintedWithTheKey(t *testing.T) {
	const key = "the deployment's HS256 key, 32 bytes or more"
	v, err := auth.New(auth.Config{Secret: []byte(key)})
	if err != nil {
		t.Fatal(err)
	}
	nats := natstest.Start(t).ClientURL()
	targets := startReplicaWithAuth(t, "a", nats, "green", v) + "," + startReplicaWithAuth(t, "b", nats, "green", v)
	keyFile := filepath.Join(t.TempDir(), "jwt-secret")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("no key: the joins are refused", func(t *testing.T) {
		o := runSmoke(t, "-target", targets, "-color", "green", "-timeout", "20s")
		if o.code != 1 || len(lines(o.stdout, "FAIL join ")) != 2 || !strings.Contains(o.stdout, "401") {
			t.Fatalf("exit %d, want 1 with both joins failing on 401:\n%s", o.code, o.stdout)
		}
	})
	t.Run("key from a file", func(t *testing.T) {
		if o := runSmoke(t, "-target", targets, "-color", "green", "-jwt-secret-file", keyFile); o.code != 0 {
			t.Fatalf("exit %d:\n%s%s", o.code, o.stdout, o.stderr)
		}
	})
	t.Run("key from stdin", func(t *testing.T) {
		args := []string{"-target", targets, "-color", "green", "-jwt-secret-file", "-"}
		if o := wait(t, startWithInput(key+"\n", args...), args...); o.code != 0 {
			t.Fatalf("exit %d:\n%s%s", o.code, o.stdout, o.stderr)
		}
	})
	t.Run("another key", func(t *testing.T) {
		args := []string{"-target", targets, "-color", "green", "-jwt-secret-file", "-", "-timeout", "20s"}
		o := wait(t, startWithInput("not the deployment's key, though long enough", args...), args...)
		if o.code != 1 || len(lines(o.stdout, "FAIL join ")) != 2 {
			t.Fatalf("exit %d, want 1 with both joins failing:\n%s", o.code, o.stdout)
		}
	})
	t.Run("a key shorter than the servers accept", func(t *testing.T) {
		args := []string{"-target", targets, "-color", "green", "-jwt-secret-file", "-"}
		o := wait(t, startWithInput(key[:31], args...), args...)
		if o.code != 2 || !strings.Contains(o.stderr, "at least 32 bytes") {
			t.Fatalf("exit %d, want 2 naming the length:\n%s%s", o.code, o.stdout, o.stderr)
		}
	})
	t.Run("replicas that check aud and iss", func(t *testing.T) {
		strict, err := auth.New(auth.Config{Secret: []byte(key), Audience: "roomcast", Issuer: "ops"})
		if err != nil {
			t.Fatal(err)
		}
		targets := startReplicaWithAuth(t, "c", nats, "green", strict) + "," + startReplicaWithAuth(t, "d", nats, "green", strict)
		o := runSmoke(t, "-target", targets, "-color", "green", "-jwt-secret-file", keyFile, "-timeout", "20s")
		if o.code != 1 || len(lines(o.stdout, "FAIL join ")) != 2 || !strings.Contains(o.stdout, "401") {
			t.Fatalf("without -jwt-audience: exit %d, want 1 with both joins failing on 401:\n%s", o.code, o.stdout)
		}
		if o := runSmoke(t, "-target", targets, "-color", "green", "-jwt-secret-file", keyFile, "-jwt-audience", "roomcast", "-jwt-issuer", "ops"); o.code != 0 {
			t.Fatalf("exit %d:\n%s%s", o.code, o.stdout, o.stderr)
		}
	})
}

func TestAReplicaStillStartingIsWaitedFor(t *testing.T) {
	// The replica's NATS server is not up yet, so it answers /readyz 503 not_ready; it
	// comes up while roomcast-smoke is polling.
	natsPort := testenv.FreePort(t)
	addr := startReplica(t, "late", "nats://127.0.0.1:"+strconv.Itoa(natsPort), "green")
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before NATS is up: %d, want 503", resp.StatusCode)
	}
	args := []string{"-target", addr, "-color", "green"}
	done := start(args...)
	natstest.Start(t, natstest.Port(natsPort))
	o := wait(t, done, args...)
	if o.code != 0 {
		t.Fatalf("exit code %d, want 0; stdout:\n%s\nstderr:\n%s", o.code, o.stdout, o.stderr)
	}
	if l := wantOneLine(t, o.stdout, "ok   ready "+addr+" "); l != "" && !strings.Contains(l, "waited=") {
		t.Errorf("ready line %q does not say how long it waited", l)
	}
}

func TestFailedChecksExitOneAndNameTheCheck(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) (targets []string, failing []string)
		// args other than -target
		args []string
		// check is the one check that fails, on every replica in failing; checks
		// before it (and metrics) pass on the others, and later ones are skipped.
		check string
	}{
		{
			name: "wrong color",
			setup: func(t *testing.T) ([]string, []string) {
				nats := natstest.Start(t).ClientURL()
				a, b := startReplica(t, "a", nats, "green"), startReplica(t, "b", nats, "green")
				return []string{a, b}, []string{a, b}
			},
			args:  []string{"-color", "blue"},
			check: "ready",
		},
		{
			name: "one replica of three on another NATS server",
			setup: func(t *testing.T) ([]string, []string) {
				shared, other := natstest.Start(t).ClientURL(), natstest.Start(t).ClientURL()
				a, b := startReplica(t, "a", shared, "green"), startReplica(t, "b", shared, "green")
				c := startReplica(t, "c", other, "green")
				// a and b miss c's message, c misses theirs.
				return []string{a, b, c}, []string{a, b, c}
			},
			// The message check waits until the timeout for what never comes.
			args:  []string{"-color", "green", "-timeout", "8s"},
			check: "message",
		},
		{
			name: "nothing listens",
			setup: func(t *testing.T) ([]string, []string) {
				dead := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
				return []string{dead}, []string{dead}
			},
			args:  []string{"-color", "green", "-timeout", "2s"},
			check: "ready",
		},
		{
			name: "one replica of two down",
			setup: func(t *testing.T) ([]string, []string) {
				live := startReplica(t, "live", natstest.Start(t).ClientURL(), "green")
				dead := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
				return []string{live, dead}, []string{dead}
			},
			args:  []string{"-color", "green", "-timeout", "2s"},
			check: "ready",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			targets, failing := tt.setup(t)
			o := runSmoke(t, append([]string{"-target", strings.Join(targets, ",")}, tt.args...)...)
			if o.code != 1 {
				t.Fatalf("exit code %d, want 1; stdout:\n%s\nstderr:\n%s", o.code, o.stdout, o.stderr)
			}
			for _, addr := range failing {
				wantOneLine(t, o.stdout, "FAIL "+tt.check+" "+addr+": ")
			}
			for _, l := range lines(o.stdout, "FAIL ") {
				expected := isSummary(l) || strings.HasPrefix(l, "FAIL "+tt.check+" ")
				// A replica that fails readiness may fail /metrics too: the color is
				// wrong there as well, or nothing listens.
				for _, addr := range failing {
					expected = expected || (tt.check == "ready" && strings.HasPrefix(l, "FAIL metrics "+addr+": "))
				}
				if !expected {
					t.Errorf("unexpected failure %q; output:\n%s", l, o.stdout)
				}
			}
			switch tt.check {
			case "ready":
				wantOneLine(t, o.stdout, "skip join: ")
				wantOneLine(t, o.stdout, "skip message: ")
			case "message":
				for _, addr := range targets {
					wantOneLine(t, o.stdout, "ok   ready "+addr+" ")
					wantOneLine(t, o.stdout, "ok   join "+addr+" ")
				}
			}
			for _, addr := range targets {
				if !contains(failing, addr) {
					wantOneLine(t, o.stdout, "ok   "+tt.check+" "+addr+" ")
				}
			}
			if !strings.HasPrefix(lastLine(o.stdout), "FAIL ") || !isSummary(lastLine(o.stdout)) {
				t.Errorf("last line %q, want the FAIL summary", lastLine(o.stdout))
			}
			if !strings.Contains(o.stderr, "checks failed") {
				t.Errorf("stderr %q does not say checks failed", o.stderr)
			}
		})
	}
}

func TestADuplicateDeliveryFailsTheMessageCheck(t *testing.T) {
	// No real replica delivers twice, so this fake one does, and is otherwise correct.
	addr := startFakeReplica(t, "green", 2)
	o := runSmoke(t, "-target", addr, "-color", "green")
	if o.code != 1 {
		t.Fatalf("exit code %d, want 1; stdout:\n%s\nstderr:\n%s", o.code, o.stdout, o.stderr)
	}
	if l := wantOneLine(t, o.stdout, "FAIL message "+addr+": "); l != "" && !strings.Contains(l, "2 times") {
		t.Errorf("message line %q does not report the duplicate", l)
	}
	wantOneLine(t, o.stdout, "ok   ready "+addr+" ")
	wantOneLine(t, o.stdout, "ok   join "+addr+" ")
	wantOneLine(t, o.stdout, "ok   metrics "+addr+" ")

	// The same fake delivering once passes: the fake is faithful apart from the copies.
	addr = startFakeReplica(t, "green", 1)
	if o := runSmoke(t, "-target", addr, "-color", "green"); o.code != 0 {
		t.Fatalf("exit code %d against the faithful fake, want 0; stdout:\n%s", o.code, o.stdout)
	}
}

func TestBadArgumentsExitTwo(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in the one line on stderr
	}{
		{"no arguments", nil, "missing -target"},
		{"missing -target", []string{"-color", "green"}, "missing -target"},
		{"empty -target", []string{"-target", "", "-color", "green"}, "-target"},
		{"-target without a port", []string{"-target", "tasks.green_app", "-color", "green"}, `"tasks.green_app"`},
		{"-target with port 0", []string{"-target", "h:0", "-color", "green"}, `"h:0"`},
		{"-target with a port too big", []string{"-target", "h:65536", "-color", "green"}, `"h:65536"`},
		{"-target with a named port", []string{"-target", "h:http", "-color", "green"}, `"h:http"`},
		{"-target without a host", []string{"-target", ":8080", "-color", "green"}, `":8080"`},
		{"-target with an empty entry", []string{"-target", "a:1,,b:2", "-color", "green"}, "-target"},
		{"-target without a value", []string{"-color", "green", "-target"}, "-target"},
		{"missing -color", []string{"-target", "a:1"}, "missing -color"},
		{"empty -color", []string{"-target", "a:1", "-color", " "}, "missing -color"},
		{"-timeout not a duration", []string{"-target", "a:1", "-color", "green", "-timeout", "soon"}, `"soon"`},
		{"-timeout zero", []string{"-target", "a:1", "-color", "green", "-timeout", "0s"}, `"0s"`},
		{"-timeout negative", []string{"-target", "a:1", "-color", "green", "-timeout", "-5s"}, `"-5s"`},
		{"unknown flag", []string{"-target", "a:1", "-color", "green", "-retries", "3"}, "-retries"},
		{"positional argument", []string{"-target", "a:1", "-color", "green", "extra"}, `"extra"`},
		{"-jwt-secret-file missing", []string{"-target", "a:1", "-color", "green", "-jwt-secret-file", "/nonexistent/key"}, "-jwt-secret-file"},
		{"-jwt-secret-file short key", []string{"-target", "a:1", "-color", "green", "-jwt-secret-file", "-"}, "at least 32 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := runSmoke(t, tt.args...)
			if o.code != 2 {
				t.Fatalf("exit code %d, want 2; stdout:\n%s\nstderr:\n%s", o.code, o.stdout, o.stderr)
			}
			if o.stdout != "" {
				t.Errorf("stdout %q, want nothing: no check may run", o.stdout)
			}
			if n := strings.Count(o.stderr, "\n"); n != 1 || !strings.Contains(o.stderr, tt.want) {
				t.Errorf("stderr %q, want one line containing %q", o.stderr, tt.want)
			}
		})
	}
}

func TestHelpExitsZeroAndDescribesTheFlags(t *testing.T) {
	for _, arg := range []string{"-h", "-help"} {
		o := runSmoke(t, arg)
		if o.code != 0 {
			t.Errorf("%s: exit code %d, want 0", arg, o.code)
		}
		for _, want := range []string{"-target HOST:PORT[,HOST:PORT...]", "comma-separated", "-color COLOR", "-timeout", "default 60s", "Exit status"} {
			if !strings.Contains(o.stdout, want) {
				t.Errorf("%s: usage lacks %q:\n%s", arg, want, o.stdout)
			}
		}
	}
	if o := runSmoke(t, "-version"); o.code != 0 || !strings.HasPrefix(o.stdout, name+" ") {
		t.Errorf("-version: exit %d, printed %q", o.code, o.stdout)
	}
}

func lastLine(out string) string {
	ls := strings.Split(strings.TrimRight(out, "\n"), "\n")
	return ls[len(ls)-1]
}

func isSummary(l string) bool { return strings.Contains(l, " checks failed, ") }

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// startFakeReplica serves the replica surface the smoke test uses, of one replica on its
// own: /readyz, /metrics and a room that sends every message back copies times.
func startFakeReplica(t *testing.T, color string, copies int) string {
	t.Helper()
	header := httpapi.Identity{Color: color, Instance: "fake", Version: "v-fake"}.ResponseHeader()
	upgrader := gws.NewUpgrader(&echo{copies: copies}, &gws.ServerOption{ResponseHeader: header})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"status": "ready", "color": color, "instance": "fake", "version": "v-fake"})
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# TYPE roomcast_build_info gauge\nroomcast_build_info{color=%q,instance=\"fake\",version=\"v-fake\"} 1\n", color)
	})
	mux.HandleFunc("GET /ws/chat/{room}/", func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r)
		if err != nil {
			return
		}
		conn.Session().Store("room", r.PathValue("room"))
		go conn.ReadLoop()
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header()[k] = v
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// echo is the fake room: one member, who gets each message copies times.
type echo struct {
	gws.BuiltinEventHandler
	copies int
}

func (e *echo) OnMessage(socket *gws.Conn, message *gws.Message) {
	defer message.Close()
	var in struct{ Message string }
	if err := json.Unmarshal(message.Bytes(), &in); err != nil {
		return
	}
	room, _ := socket.Session().Load("room")
	out, _ := json.Marshal(map[string]any{"type": "message", "room": room, "message": in.Message, "ts": time.Now().UTC()})
	for range e.copies {
		_ = socket.WriteMessage(gws.OpcodeText, out)
	}
}
