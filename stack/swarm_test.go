package stack_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"roomcast/pkg/auth"
	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/testenv"
	"roomcast/pkg/wsclient"
)

// swarmEnv is what the recipes see: local stand-ins for the third-party images, a
// host-mode port (no routing mesh on this kernel) and short bounded waits.
type swarmEnv struct {
	port int
	// host is where nginx's port is published: 127.0.0.1 on one node, a node's address in
	// the lab (stack/lab).
	host string
	vars []string
	// key is the app's HS256 key (JWT_SECRET_FILE of the recipes): auth is on in the
	// stacks, so every client through nginx carries a token signed with it.
	key []byte
	// audience and issuer are the aud and iss the stacks check (JWT_AUDIENCE and
	// JWT_ISSUER of the recipes), written into every token.
	audience, issuer string
}

// newSwarmEnv is the environment of a test that deploys the stacks: nginx and Grafana
// on free host-mode ports, short bounded waits, a JWT key of its own, and teardown of all
// it deployed once the test ends. vars come last, so they can override these.
func newSwarmEnv(t *testing.T, vars ...string) swarmEnv {
	t.Helper()
	env := swarmEnv{port: testenv.FreePort(t), host: "127.0.0.1"}
	env.vars = append([]string{
		fmt.Sprintf("HTTP_PORT=%d", env.port),
		"HTTP_PUBLISH_MODE=host",
		"EDGE_ENDPOINT_MODE=dnsrr",
		fmt.Sprintf("GRAFANA_PORT=%d", testenv.FreePort(t)),
		"GRAFANA_PUBLISH_MODE=host",
		"GRAFANA_ENDPOINT_MODE=dnsrr",
		"DOCKER_SOCKET=" + dockerSocket(),
		"REPLICAS=2",
		"HEALTH_TIMEOUT=90",
		"FLIP_TIMEOUT=30",
		"SMOKE_TIMEOUT=30s",
	}, vars...)
	withJWTKey(t, &env)
	withGrafanaPassword(t, &env)
	withNATSPasswords(t, &env)
	t.Cleanup(func() { teardown(t, env) })
	return env
}

// withJWTKey gives env a fresh key in a file of its own, so the recipes never make the
// repository's default .secrets/jwt-secret; teardown removes the Swarm secret made of it.
// The audience and issuer are not roomcast-release's defaults: one it failed to pass on
// to the stack deploy or the smoke job would fail the test.
func withJWTKey(t *testing.T, env *swarmEnv) {
	t.Helper()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	env.key = []byte(base64.StdEncoding.EncodeToString(b[:]))
	file := filepath.Join(t.TempDir(), "jwt-secret")
	if err := os.WriteFile(file, append(env.key, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	env.audience, env.issuer = "roomcast-stack-test", "stack-test"
	env.vars = append(env.vars, "JWT_SECRET_FILE="+file, "JWT_AUDIENCE="+env.audience, "JWT_ISSUER="+env.issuer)
}

// token is a token for every room, signed with env's key, for the stacks' audience and
// issuer.
func (e swarmEnv) token(t *testing.T) string {
	t.Helper()
	return e.mint(t, e.key, e.audience, e.issuer)
}

// mint is a token for every room with these key, aud and iss.
func (e swarmEnv) mint(t *testing.T, key []byte, audience, issuer string) string {
	t.Helper()
	tok, err := auth.Mint(key, auth.Claims{Subject: "stack-test", Expires: time.Now().Add(time.Hour), Rooms: []string{"*"},
		Audience: audience, Issuer: issuer})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dialOptions are the options of a client through nginx: with a token.
func (e swarmEnv) dialOptions(t *testing.T) wsclient.Options {
	return wsclient.Options{Header: http.Header{"Authorization": {"Bearer " + e.token(t)}}}
}

func (e swarmEnv) edgeURL(path string) string {
	return fmt.Sprintf("http://%s:%d%s", e.host, e.port, path)
}
func (e swarmEnv) wsURL(room string) string {
	return fmt.Sprintf("ws://%s:%d/ws/chat/%s/", e.host, e.port, room)
}

func requireSwarm(t *testing.T) {
	t.Helper()
	docker := testenv.Program(t, "docker")
	testenv.Program(t, "just")
	testenv.Program(t, "curl")
	out, err := exec.Command(docker, "info", "--format", "{{.Swarm.LocalNodeState}}").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "active" {
		testenv.Unavailable(t, "needs a Docker engine in swarm mode at DOCKER_HOST=%q (start one with .ci/dockerd start): %s %v",
			os.Getenv("DOCKER_HOST"), bytes.TrimSpace(out), err)
	}
	stacks, err := exec.Command(docker, "stack", "ls", "--format", "{{.Name}}").Output()
	if err != nil {
		t.Fatalf("listing stacks: %v", err)
	}
	for _, stack := range strings.Fields(string(stacks)) {
		if stack == "edge" || stack == "blue" || stack == "green" {
			t.Fatalf("a stack %q already runs on this swarm; the test will not touch it", stack)
		}
	}
}

// sh runs a command from the repository root with env added, bounded by timeout.
func sh(t *testing.T, env swarmEnv, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), env.vars...)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("$ %s %s (%.1fs)\n%s", name, strings.Join(args, " "), time.Since(start).Seconds(), out)
	return string(out), err
}

func mustSh(t *testing.T, env swarmEnv, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := sh(t, env, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out
}

func dockerSocket() string {
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		return strings.TrimPrefix(h, "unix://")
	}
	return "/var/run/docker.sock"
}

// teardown removes what the test deployed, app stacks first (their tasks hold the network),
// then edge once their containers are gone, then the volume.
func teardown(t *testing.T, env swarmEnv) {
	_, _ = sh(t, env, time.Minute, "docker", "stack", "rm", "blue", "green")
	waitGone(t, env, "label=com.docker.stack.namespace=blue")
	waitGone(t, env, "label=com.docker.stack.namespace=green")
	_, _ = sh(t, env, time.Minute, "docker", "stack", "rm", "edge")
	waitGone(t, env, "label=com.docker.stack.namespace=edge")
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if out, _ := exec.Command("docker", "network", "ls", "-q", "--filter", "name=^roomcast$").Output(); len(bytes.TrimSpace(out)) == 0 {
			break
		}
		time.Sleep(time.Second)
	}
	out, _ := exec.Command("docker", "volume", "ls", "-q", "--filter", "label=com.docker.stack.namespace=edge").Output()
	if vols := strings.Fields(string(out)); len(vols) > 0 {
		_, _ = sh(t, env, time.Minute, "docker", append([]string{"volume", "rm", "-f"}, vols...)...)
	}
	// Alertmanager's rendered configuration, one secret per version the test deployed.
	if out, _ := exec.Command("docker", "secret", "ls", "-q", "--filter", "label=roomcast.alertmanager=true").Output(); len(bytes.TrimSpace(out)) > 0 {
		_, _ = sh(t, env, time.Minute, "docker", append([]string{"secret", "rm"}, strings.Fields(string(out))...)...)
	}
	if len(env.key) > 0 { // the recipes name the secret after the key file's content
		sum := sha256.Sum256(append(append([]byte{}, env.key...), '\n'))
		_, _ = sh(t, env, time.Minute, "docker", "secret", "rm", "roomcast_jwt_"+hex.EncodeToString(sum[:])[:12])
	}
}

// standinVars builds local stand-ins for every third-party image of the edge stack (no
// registry is reachable) and returns the variables that point the stack at them.
func standinVars(t *testing.T, env swarmEnv) []string {
	t.Helper()
	out := mustSh(t, env, 5*time.Minute, "stack/images/build-standins")
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "NATS_IMAGE=") {
			line = l
		}
	}
	vars := regexp.MustCompile(`\b[A-Z][A-Z0-9_]*=\S+`).FindAllString(line, -1)
	if len(vars) == 0 {
		t.Fatalf("build-standins printed no image names: %s", out)
	}
	return vars
}

func waitGone(t *testing.T, env swarmEnv, filter string) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("docker", "ps", "-aq", "--filter", filter).Output()
		if len(bytes.TrimSpace(out)) == 0 {
			return
		}
		time.Sleep(time.Second)
	}
	t.Logf("containers matching %s still present after 2 minutes", filter)
}

// edgeColor is the color nginx answers /healthz with (public; /readyz is not), or ""
// when the request fails.
func edgeColor(env swarmEnv) (string, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(env.edgeURL("/healthz"))
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return resp.Header.Get("X-Roomcast-Color"), fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Roomcast-Color"), nil
}

func expectEdgeColor(t *testing.T, env swarmEnv, want string) {
	t.Helper()
	for i := range 5 {
		color, err := edgeColor(env)
		if err != nil || color != want {
			t.Fatalf("request %d through nginx: color %q, %v; want %q", i, color, err, want)
		}
	}
}

func label(t *testing.T, key string) string {
	t.Helper()
	out, err := exec.Command("docker", "service", "inspect", "edge_nginx", "--format",
		fmt.Sprintf(`{{ index .Spec.Labels %q }}`, key)).Output()
	if err != nil {
		t.Fatalf("reading label %s: %v", key, err)
	}
	return strings.TrimSpace(strings.ReplaceAll(string(out), "<no value>", ""))
}

func TestBlueGreenReleaseOnARealSwarm(t *testing.T) {
	requireSwarm(t)
	env := newSwarmEnv(t, "TAG=t1", "HEALTH_TIMEOUT=45")

	env.vars = append(env.vars, standinVars(t, env)...)
	mustSh(t, env, 5*time.Minute, "just", "build", "t1")
	mustSh(t, env, 5*time.Minute, "just", "build", "t2")
	// Broken releases, built on a good image: one runs but never gets healthy (it
	// listens where its healthcheck does not look), one is healthy and ready but cannot
	// carry a message (every message is over its limit).
	buildFrom(t, env, "roomcast/roomcast:t-unhealthy",
		"FROM roomcast/roomcast:t1\nENV ROOMCAST_ADDR=127.0.0.2:8080")
	buildFrom(t, env, "roomcast/roomcast:t-nosmoke",
		"FROM roomcast/roomcast:t1\nENV ROOMCAST_MAX_MESSAGE_BYTES=1")

	t.Run("deploy", func(t *testing.T) {
		mustSh(t, env, 5*time.Minute, "just", "deploy")
		if out := mustSh(t, env, time.Minute, "just", "status"); !strings.Contains(out, "active: blue") ||
			!regexp.MustCompile(`blue\s+active\s+tag=t1\s+replicas=2/2`).MatchString(out) {
			t.Fatalf("status after deploy:\n%s", out)
		}
		expectEdgeColor(t, env, "blue")
		chatThroughNginx(t, env)
		refusedWithoutAValidToken(t, env)
	})
	if t.Failed() {
		return
	}

	t.Run("nothing that publishes a port reaches the Docker API", func(t *testing.T) {
		inspectPublishedTasks(t, env)
		internalPathsAreNotPublished(t, env)
		// The release tool's check of every local nginx task still works.
		out := mustSh(t, env, time.Minute, "sh", "-c", "docker exec $(docker ps -q --filter label=com.docker.swarm.service.name=edge_nginx | head -1) /usr/local/bin/roomcast-edge status -color blue")
		if !strings.Contains(out, `"color":"blue"`) {
			t.Fatalf("roomcast-edge status in the nginx task: %s", out)
		}
	})

	t.Run("promote under load", func(t *testing.T) { promoteUnderLoad(t, env, "t2") })
	if t.Failed() {
		return
	}

	for _, broken := range []struct{ tag, why string }{
		{"t-unhealthy", "did not become healthy"},
		{"t-nosmoke", "smoke test"},
	} {
		t.Run("promote of a broken tag "+broken.tag, func(t *testing.T) {
			out, err := sh(t, env, 5*time.Minute, "just", "promote", broken.tag)
			if err == nil {
				t.Fatalf("promote %s succeeded", broken.tag)
			}
			if !strings.Contains(out, broken.why) {
				t.Errorf("promote %s output does not say why (%q)", broken.tag, broken.why)
			}
			if a, p := label(t, "roomcast.active"), label(t, "roomcast.previous"); a != "green" || p != "blue" {
				t.Fatalf("labels changed by a failed promote: active=%q previous=%q", a, p)
			}
			expectEdgeColor(t, env, "green")
			// The idle color is put back as it was: the previous release, scaled to 0.
			if out := mustSh(t, env, time.Minute, "just", "status"); !regexp.MustCompile(`blue\s+idle\s+tag=t1\s+replicas=0/0`).MatchString(out) {
				t.Errorf("blue not put back after the failed promote:\n%s", out)
			}
		})
	}

	t.Run("a concurrent promote is refused with the holder's name", func(t *testing.T) {
		first := startRelease(t, env, "promote", "t2")
		first.waitFor(t, "deploying blue", 2*time.Minute)
		out, err := sh(t, env, 2*time.Minute, "just", "promote", "t2")
		holder := fmt.Sprintf("pid %d (promote t2)", first.cmd.Process.Pid)
		if err == nil || !strings.Contains(out, "release lock is held by") || !strings.Contains(out, holder) {
			t.Errorf("a second promote while one runs: %v, want a refusal naming %q:\n%s", err, holder, out)
		}
		// The first one is left to finish its interrupt in the next check.
		t.Run("an interrupt before the flip restores the idle color", func(t *testing.T) {
			if err := first.cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			out, err := first.wait(t, 3*time.Minute)
			if err == nil || !strings.Contains(out, "interrupted") || !strings.Contains(out, "putting blue back as it was") {
				t.Fatalf("promote interrupted before the flip: %v\n%s", err, out)
			}
			if a, p, l, pr := label(t, "roomcast.active"), label(t, "roomcast.previous"), label(t, "roomcast.lock"), label(t, "roomcast.promoting"); a != "green" || p != "blue" || l != "" || pr != "" {
				t.Fatalf("labels after the interrupt: active=%q previous=%q lock=%q promoting=%q", a, p, l, pr)
			}
			expectEdgeColor(t, env, "green")
			if out := mustSh(t, env, time.Minute, "just", "status"); !regexp.MustCompile(`blue\s+idle\s+tag=t1\s+replicas=0/0`).MatchString(out) {
				t.Errorf("blue not put back after the interrupt:\n%s", out)
			}
		})
	})

	t.Run("rollback", func(t *testing.T) {
		mustSh(t, env, 5*time.Minute, "just", "rollback")
		expectEdgeColor(t, env, "blue")
		if out := mustSh(t, env, time.Minute, "just", "status"); !regexp.MustCompile(`blue\s+active\s+tag=t1\s+replicas=2/2`).MatchString(out) ||
			!regexp.MustCompile(`green\s+idle\s+tag=t2\s+replicas=0/0`).MatchString(out) {
			t.Fatalf("status after rollback:\n%s", out)
		}
	})

	t.Run("a restarted nginx task keeps the active color", func(t *testing.T) {
		mustSh(t, env, 3*time.Minute, "timeout", "150", "docker", "service", "update", "--force", "--no-resolve-image", "--detach=false", "edge_nginx")
		clitest.Poll(t, time.Minute, 200*time.Millisecond, "blue after the nginx restart", func() error {
			if color, err := edgeColor(env); err != nil || color != "blue" {
				return fmt.Errorf("color %q, %v", color, err)
			}
			return nil
		})
		expectEdgeColor(t, env, "blue")
	})

	t.Run("a later deploy never undoes a release", func(t *testing.T) {
		mustSh(t, env, 5*time.Minute, "just", "deploy")
		expectEdgeColor(t, env, "blue")
		if a := label(t, "roomcast.active"); a != "blue" {
			t.Fatalf("deploy changed the active color to %q", a)
		}
	})
}

// promoteUnderLoad runs `just promote tag` from blue to green under 200 chatting clients
// and a probe through nginx, and checks that nothing failed, nothing was lost or
// duplicated and every client resumed on green. It returns how long the promote took.
func promoteUnderLoad(t *testing.T, env swarmEnv, tag string) time.Duration {
	load := startLoad(t, env, 200)
	probe := startProbe(t, env)
	start := time.Now()
	out, err := sh(t, env, 5*time.Minute, "just", "promote", tag)
	took := time.Since(start)
	probeReport := probe.stop()
	if err != nil {
		t.Fatalf("promote %s: %v", tag, err)
	}
	expectEdgeColor(t, env, "green")
	if label(t, "roomcast.active") != "green" || label(t, "roomcast.previous") != "blue" {
		t.Fatalf("labels after promote: active=%q previous=%q", label(t, "roomcast.active"), label(t, "roomcast.previous"))
	}
	if label(t, "roomcast.promoting") != "" {
		t.Errorf("roomcast.promoting still set after the release")
	}
	t.Logf("probe through nginx during the release: %s", probeReport)
	if probeReport.failures > 0 {
		t.Errorf("%d of %d requests/upgrades through nginx failed during the release: %v",
			probeReport.failures, probeReport.total, probeReport.firstFailures)
	}
	report := load.stopAfterAllOn(t, "green", 60*time.Second)
	t.Logf("load during the release: %s\n%s", report, report.summary)
	if report.onBlue != 200 {
		t.Errorf("%d of 200 clients started on blue", report.onBlue)
	}
	if report.closed1012 < report.onBlue {
		t.Errorf("only %d of the %d clients on blue were closed with 1012 (others: %v)", report.closed1012, report.onBlue, report.otherCloses)
	}
	if report.endOnGreen != 200 {
		t.Errorf("%d of 200 clients ended on green", report.endOnGreen)
	}
	fmt.Printf("=== blue/green release under load: %d messages sent, %d lost during the release (deliveries, per message and member; %d messages sent into a closing connection reached no one), %d duplicated\n",
		report.sent, report.lost, report.unconfirmed, report.duplicated)
	rt := report.reconnectTime
	fmt.Printf("=== reconnect time, close to 101: p50 %.0fms p90 %.0fms p95 %.0fms p99 %.0fms max %.0fms over %d reconnects (%d resumed with since)\n",
		rt.P50MS, rt.P90MS, rt.P95MS, rt.P99MS, rt.MaxMS, report.reconnects, report.resumed)
	// With history, every client resumes where it left off: nothing lost, nothing twice.
	if report.lost != 0 || report.duplicated != 0 || report.unconfirmed != 0 {
		t.Errorf("the release lost %d deliveries (%d messages unconfirmed) and duplicated %d; want none",
			report.lost, report.unconfirmed, report.duplicated)
	}
	if report.resumed < int64(report.closed1012) {
		t.Errorf("only %d of %d reconnects resumed with since", report.resumed, report.closed1012)
	}
	if !strings.Contains(out, "promoted") {
		t.Errorf("promote output lacks the final line:\n%s", out)
	}
	return took
}

// release is a roomcast-release process the test started (not through just, so a
// signal reaches it alone).
type release struct {
	cmd  *exec.Cmd
	out  *testenv.SyncBuffer
	done chan error
}

// startRelease builds cmd/roomcast-release and starts it with args in env.
func startRelease(t *testing.T, env swarmEnv, args ...string) *release {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "roomcast-release")
	mustSh(t, env, 2*time.Minute, "go", "build", "-o", bin, "./cmd/roomcast-release")
	r := &release{out: &testenv.SyncBuffer{}, done: make(chan error, 1)}
	r.cmd = exec.Command(bin, args...)
	r.cmd.Dir = ".."
	r.cmd.Env = append(os.Environ(), env.vars...)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-r.done:
			r.done <- err
		default:
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// waitFor waits until the release printed want.
func (r *release) waitFor(t *testing.T, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(r.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("roomcast-release did not print %q within %s:\n%s", want, within, r.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wait waits until the release ends and returns its output and error.
func (r *release) wait(t *testing.T, within time.Duration) (string, error) {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		t.Logf("$ roomcast-release %s\n%s", strings.Join(r.cmd.Args[1:], " "), r.out)
		return r.out.String(), err
	case <-time.After(within):
		t.Fatalf("roomcast-release did not end within %s:\n%s", within, r.out)
		return "", nil
	}
}

func buildFrom(t *testing.T, env swarmEnv, tag, dockerfile string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := env
	e.vars = append(append([]string{}, env.vars...), "DOCKER_BUILDKIT=0")
	mustSh(t, e, 2*time.Minute, "docker", "build", "-q", "-t", tag, dir)
}

func chatThroughNginx(t *testing.T, env swarmEnv) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, resp, err := wsclient.Dial(ctx, env.wsURL("hello"), env.dialOptions(t))
	if err != nil {
		t.Fatalf("WebSocket through nginx: %v", err)
	}
	defer a.Close()
	if c := resp.Header.Get("X-Roomcast-Color"); c != "blue" {
		t.Errorf("101 through nginx says color %q", c)
	}
	b, _, err := wsclient.Dial(ctx, env.wsURL("hello"), env.dialOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.Send("through nginx"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wsclient.Client{a, b} {
		f, err := c.Next(ctx)
		if err != nil || f.Message != "through nginx" {
			t.Fatalf("got %s, %v", f.Raw, err)
		}
	}
}

// refusedWithoutAValidToken shows auth is on in the stacks: an upgrade through nginx
// without a token, with one signed by another key, or with one signed by this key for
// another audience or issuer (another deployment sharing the key), is answered 401
// before the upgrade.
func refusedWithoutAValidToken(t *testing.T, env swarmEnv) {
	t.Helper()
	bearer := func(token string) wsclient.Options {
		return wsclient.Options{Header: http.Header{"Authorization": {"Bearer " + token}}}
	}
	for name, opts := range map[string]wsclient.Options{
		"no token":                   {},
		"a token of another key":     bearer(env.mint(t, []byte("not the key of this deployment, 32+ bytes"), env.audience, env.issuer)),
		"a token of another aud":     bearer(env.mint(t, env.key, "another-deployment", env.issuer)),
		"a token of another iss":     bearer(env.mint(t, env.key, env.audience, "another-issuer")),
		"a token without aud or iss": bearer(env.mint(t, env.key, "", "")),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, resp, err := wsclient.Dial(ctx, env.wsURL("hello"), opts)
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("%s: the upgrade through nginx succeeded; auth is off in the stack", name)
			continue
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %v (response %v), want 401", name, err, resp)
		}
	}
}

// --- load: roomcast-loadgen's release scenario through nginx ------------------------------

// load is the release scenario of pkg/load/loadgen (the client of k6/release.js): rooms of 10
// clients chatting at 2 msg/s each; a client closed by the drain reconnects with backoff
// and full jitter and resumes with ?since=<seq>&epoch=<epoch>.
type load struct {
	session *loadgen.Session
	n       int
}

func startLoad(t *testing.T, env swarmEnv, n int) *load {
	t.Helper()
	return startLoadIn(t, env, 20, n/20)
}

// startLoadIn is startLoad with rooms rooms of members clients each.
func startLoadIn(t *testing.T, env swarmEnv, rooms, members int) *load {
	t.Helper()
	cfg := loadgen.DefaultConfig(loadgen.Release)
	cfg.URLs = []string{fmt.Sprintf("ws://%s:%d", env.host, env.port)}
	cfg.Rooms, cfg.Members = rooms, members
	cfg.Token = env.token(t)
	cfg.Duration = 10 * time.Minute // stopped by stopAfterAllOn long before
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := loadgen.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("connecting the load clients: %v", err)
	}
	l := &load{session: s, n: cfg.Rooms * cfg.Members}
	t.Cleanup(func() { _, _ = s.Stop() })
	return l
}

// testWriter sends the load generator's warnings to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("loadgen: %s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

type loadReport struct {
	onBlue, closed1012, endOnGreen int
	otherCloses                    map[uint16]int
	sent, lost, duplicated         int64
	expected                       int64 // deliveries due: each message to each member
	members                        int64 // of a room
	// refused messages were answered with an unavailable error frame (the replica had
	// lost its NATS connection): the sender knows, and none of its deliveries happen.
	refused int64
	// unconfirmed messages reached no member: sent into a closing connection.
	unconfirmed int64
	// untold deliveries are lost at members the server never told of a gap
	// (history_truncated, history_unavailable), of messages another member received.
	untold int64
	// unanswered messages reached no member, their sender neither refused nor cut off:
	// lost, and nobody told.
	unanswered    int64
	reconnects    int64
	resumed       int64
	reconnectTime loadgen.Latency
	summary       string // the load generator's own summary
	clients       []loadgen.Client
}

func (r loadReport) String() string {
	return fmt.Sprintf("%d started on blue, %d closed with 1012, %d ended on green, other closes %v, %d sent, %d deliveries lost (%d messages unconfirmed, %d untold, %d messages unanswered), %d duplicated, %d reconnects (%d resumed), reconnect time %s",
		r.onBlue, r.closed1012, r.endOnGreen, r.otherCloses, r.sent, r.lost, r.unconfirmed, r.untold, r.unanswered, r.duplicated, r.reconnects, r.resumed, r.reconnectTime)
}

// stopAfterAllOn waits (bounded) until every client is connected to color, then stops
// the load (which waits for the deliveries still due) and reports.
func (l *load) stopAfterAllOn(t *testing.T, color string, within time.Duration) loadReport {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) && l.session.Connected()[color] != l.n {
		time.Sleep(200 * time.Millisecond)
	}
	rep, err := l.session.Stop()
	if err != nil {
		t.Errorf("stopping the load: %v", err)
	}
	if rep == nil {
		t.Fatal("the load generator returned no report")
	}
	var text strings.Builder
	_ = rep.WriteText(&text)
	r := loadReport{
		otherCloses: map[uint16]int{}, reconnects: rep.Reconnect.Reconnects, resumed: rep.Reconnect.Resumed,
		reconnectTime: rep.Reconnect.ReconnectTime, unconfirmed: rep.Reconnect.Unconfirmed, untold: rep.Reconnect.LostUntold,
		unanswered: rep.Reconnect.Unanswered,
		summary:    text.String(), refused: rep.ErrorFrames["unavailable"], members: int64(rep.Members),
		clients: rep.Reconnect.Clients,
	}
	for _, s := range rep.Steps {
		r.sent, r.lost, r.duplicated = r.sent+s.Sent, r.lost+s.Lost, r.duplicated+s.Duplicated
		r.expected += s.Expected
	}
	for _, c := range rep.Reconnect.Clients {
		if len(c.Connections) == 0 {
			continue
		}
		if c.Connections[0].Color == "blue" {
			r.onBlue++
		}
		// The last connection is the one the load generator closed at the end (code 0),
		// unless the server closed it and no reconnect had opened since.
		if last := c.Connections[len(c.Connections)-1]; last.CloseCode == 0 && last.Color == color {
			r.endOnGreen++
		}
		for _, conn := range c.Connections {
			switch conn.CloseCode {
			case 0:
			case 1012:
				r.closed1012++
			default:
				r.otherCloses[conn.CloseCode]++
			}
		}
	}
	return r
}

// --- probe: plain requests and fresh upgrades through nginx, all along -------------------

type probe struct {
	env  swarmEnv
	stop func() probeReport
}

type probeReport struct {
	total, failures int
	colors          map[string]int
	firstFailures   []string
	// firstFailed and lastFailed are when the first and the last failure were seen.
	firstFailed, lastFailed time.Time
}

func (r probeReport) String() string {
	return fmt.Sprintf("%d requests and upgrades, %d failed, answered by %v", r.total, r.failures, r.colors)
}

func startProbe(t *testing.T, env swarmEnv) *probe {
	p := &probe{env: env}
	opts := env.dialOptions(t)
	done := make(chan struct{})
	var mu sync.Mutex
	r := probeReport{colors: map[string]int{}}
	record := func(what, color string, err error) {
		mu.Lock()
		defer mu.Unlock()
		r.total++
		if err != nil {
			r.failures++
			if r.firstFailed.IsZero() {
				r.firstFailed = time.Now()
			}
			r.lastFailed = time.Now()
			if len(r.firstFailures) < 5 {
				r.firstFailures = append(r.firstFailures, fmt.Sprintf("%s at %s: %v", what, time.Now().Format("15:04:05.000"), err))
			}
			return
		}
		r.colors[color]++
	}
	var wg sync.WaitGroup
	// every calls fn every period, at most n times, until the stop.
	every := func(period time.Duration, n int, fn func()) {
		wg.Go(func() {
			for range n {
				select {
				case <-done:
					return
				case <-time.After(period):
				}
				fn()
			}
		})
	}
	every(20*time.Millisecond, 100000, func() { // a request every 20ms, bounded by the stop
		color, err := edgeColor(env)
		record("GET /healthz", color, err)
	})
	every(100*time.Millisecond, 20000, func() { // a fresh WebSocket upgrade every 100ms
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, resp, err := wsclient.Dial(ctx, env.wsURL("probe"), opts)
		cancel()
		color := ""
		if err == nil {
			color = resp.Header.Get("X-Roomcast-Color")
			c.Close()
		}
		record("upgrade", color, err)
	})
	p.stop = func() probeReport {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return r
	}
	return p
}
