package stack_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/fleet/autoscale/promquery"
	"roomcast/pkg/fleet/swarm"
	"roomcast/pkg/testenv"
	"roomcast/pkg/wsclient"
)

// The test's own Prometheus: Debian's binary in a scratch image (no image can be pulled here), with a
// scrape config like monitoring/prometheus/prometheus.yml's (replicas found through
// tasks.<color>_app, labelled by color) but scraping every second, so that the
// autoscaler's real query path (Prometheus API -> PromQL over scraped replicas) is
// exercised within a short test. It also scrapes the autoscaler, so the test can read
// its metrics.
const (
	testPrometheus      = "autoscalertest_prometheus"
	testPrometheusImage = "roomcast/autoscalertest-prometheus:local"
	testPrometheusConf  = `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  # One job per color, so that a color that does not resolve yet does not slow the other.
  - job_name: roomcast-blue
    dns_sd_configs: [{names: [tasks.blue_app], type: A, port: 8080, refresh_interval: 1s}]
    relabel_configs: [{target_label: color, replacement: blue}]
  - job_name: roomcast-green
    dns_sd_configs: [{names: [tasks.green_app], type: A, port: 8080, refresh_interval: 1s}]
    relabel_configs: [{target_label: color, replacement: green}]
  - job_name: autoscaler
    dns_sd_configs: [{names: [tasks.edge_autoscaler], type: A, port: 8081, refresh_interval: 1s}]
`
)

// TestAutoscalerOnARealSwarm deploys the edge stack with roomcast-autoscaler (20
// connections per replica, a tick every 2s, a 20s window) and proves, through nginx:
// Prometheus missing at first changes nothing; 100 connections grow the active color
// from 2 to 5 replicas in one step; during `just promote` (more load arriving
// meanwhile) it does not act, and the release deploys the idle color at the scaled 5;
// after the release it follows the new color (8 for 160 connections); closing every
// connection brings it back to the minimum of 2 one replica a step, only after the
// window.
func TestAutoscalerOnARealSwarm(t *testing.T) {
	requireSwarm(t)
	prometheusBin := testenv.Program(t, "prometheus") // Debian's, for the test's own Prometheus
	testenv.Program(t, "ldd")
	began := time.Now()
	promPort := testenv.FreePort(t)
	env := newSwarmEnv(t,
		"TAG=as1",
		"AUTOSCALER_TARGET=20",
		"AUTOSCALER_MIN_REPLICAS=2",
		"AUTOSCALER_MAX_REPLICAS=10",
		"AUTOSCALER_INTERVAL=2s",
		"AUTOSCALER_SCALE_DOWN_WINDOW=20s",
		"AUTOSCALER_PROMETHEUS_URL=http://"+testPrometheus+":9090",
	)
	env.vars = append(env.vars, standinVars(t, env)...)
	mustSh(t, env, 5*time.Minute, "just", "build", "as1")
	buildTestPrometheus(t, env, prometheusBin)
	t.Logf("images ready after %.0fs", time.Since(began).Seconds())

	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		host = "unix:///var/run/docker.sock"
	}
	docker, err := swarm.New(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = docker.Close() })
	watch := watchReplicas(t, docker, "blue_app", "green_app")

	// --- deploy: the autoscaler starts before any Prometheus exists -------------------
	mustSh(t, env, 5*time.Minute, "just", "deploy")
	expectEdgeColor(t, env, "blue")
	waitServiceReplicas(t, "edge_autoscaler", 1, 90*time.Second)
	pollFor(t, 30*time.Second, "Prometheus errors logged", func() error {
		for _, l := range autoscalerLog(t) {
			if l["kind"] == "prometheus_api" && l["current"] == 2.0 && l["desired"] == 2.0 {
				return nil
			}
		}
		return fmt.Errorf("no prometheus_api error kept at 2")
	})
	if n := watch.last("blue_app"); n != 2 {
		t.Fatalf("blue_app at %d without any Prometheus", n)
	}

	startTestPrometheus(t, env, promPort)
	prom, err := promquery.New(fmt.Sprintf("http://127.0.0.1:%d", promPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prom.Close)
	pollFor(t, 60*time.Second, "a decision on data from Prometheus", func() error {
		for _, l := range autoscalerLog(t) {
			if l["msg"] == "decision" && l["reason"] == "at_min" && l["load"] == 0.0 {
				return nil
			}
		}
		return fmt.Errorf("no at_min decision on a load of 0 yet")
	})
	t.Logf("autoscaler deciding on live data after %.0fs", time.Since(began).Seconds())

	// --- 100 connections: blue grows to 5 at once ---------------------------------------
	clients := holdConnections(t, env, 100)
	loaded := time.Now()
	pollFor(t, 60*time.Second, "blue_app at 5", func() error {
		if n := watch.last("blue_app"); n != 5 {
			return fmt.Errorf("blue_app at %d", n)
		}
		return nil
	})
	t.Logf("blue_app at 5 replicas %.1fs after 100 connections (%s)", time.Since(loaded).Seconds(), clients.colors())
	watch.expectOnly(t, "blue_app", loaded, time.Now(), 2, 5) // one step: never 3 or 4
	if v := promValue(t, prom, `sum(roomcast_connections_active{color="blue"})`); v != 100 {
		t.Errorf("Prometheus counts %v connections on blue, want 100", v)
	}
	waitServiceReplicas(t, "blue_app", 5, 90*time.Second)
	steady := time.Now()
	time.Sleep(6 * time.Second) // three ticks: within tolerance, nothing changes
	watch.expectOnly(t, "blue_app", steady, time.Now(), 5)

	// --- a release: paused, and the idle color gets the scaled count ------------------
	type result struct {
		out string
		err error
	}
	promoted := make(chan result, 1)
	promoteDone := make(chan struct{})
	go func() {
		defer close(promoteDone)
		out, err := sh(t, env, 4*time.Minute, "just", "promote", "as1")
		promoted <- result{out, err}
	}()
	t.Cleanup(func() { <-promoteDone }) // it logs to t: the test must outlive it
	pollFor(t, 30*time.Second, "roomcast.promoting=true on nginx", func() error {
		if label(t, "roomcast.promoting") != "true" {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	pausedFrom := time.Now()
	more := holdConnections(t, env, 60) // 160 would want 8 replicas at once, were it not paused
	var rel result
	select {
	case rel = <-promoted:
	case <-time.After(4 * time.Minute):
		t.Fatal("promote did not return")
	}
	pausedUntil := time.Now()
	if rel.err != nil {
		t.Fatalf("promote: %v", rel.err)
	}
	if label(t, "roomcast.promoting") != "" || label(t, "roomcast.active") != "green" {
		t.Fatalf("after promote: promoting=%q active=%q", label(t, "roomcast.promoting"), label(t, "roomcast.active"))
	}
	// The pause ends when the release clears its label, its last update of edge_nginx,
	// a moment before `just promote` has returned: a scale in between is not during it.
	if cleared := serviceUpdatedAt(t, "edge_nginx"); cleared.After(pausedFrom) && cleared.Before(pausedUntil) {
		pausedUntil = cleared
	}
	t.Logf("release took %.0fs", pausedUntil.Sub(pausedFrom).Seconds())
	watch.expectOnly(t, "blue_app", pausedFrom, pausedUntil, 5, 0) // drained by the release, never scaled
	watch.expectOnly(t, "green_app", pausedFrom, pausedUntil, 0, 5)
	if first := watch.firstNonZero("green_app", pausedFrom); first != 5 {
		t.Errorf("green deployed at %d replicas, want blue's scaled 5", first)
	}
	logs := autoscalerLog(t)
	pausedTicks := 0
	for _, l := range logs {
		at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"]))
		if l["msg"] == "scaled" && at.After(pausedFrom) && at.Before(pausedUntil) {
			t.Errorf("the autoscaler scaled during the release: %v", l)
		}
		if l["msg"] == "decision" && l["reason"] == "paused" && at.After(pausedFrom) && at.Before(pausedUntil) {
			pausedTicks++
		}
	}
	// A tick every 2s; slow Docker calls under load may stretch some.
	if want := int(pausedUntil.Sub(pausedFrom)/(4*time.Second)) - 1; pausedTicks < want {
		t.Errorf("%d paused decisions logged during a %.0fs release, want at least %d", pausedTicks, pausedUntil.Sub(pausedFrom).Seconds(), want)
	}

	// After the release it follows green: 160 connections want 8.
	pollFor(t, 60*time.Second, "green_app at 8", func() error {
		if n := watch.last("green_app"); n != 8 {
			return fmt.Errorf("green_app at %d (%s)", n, clientColors(clients, more))
		}
		return nil
	})
	t.Logf("green_app at 8 replicas %.1fs after the release", time.Since(pausedUntil).Seconds())
	watch.expectOnly(t, "green_app", pausedUntil, time.Now(), 5, 8)
	if n := watch.last("blue_app"); n != 0 {
		t.Fatalf("the idle color was scaled to %d", n)
	}

	// --- every connection closed: back to the minimum after the window ---------------
	clients.close()
	more.close()
	closed := time.Now()
	pollFor(t, 90*time.Second, "green_app at 2", func() error {
		if n := watch.last("green_app"); n != 2 {
			return fmt.Errorf("green_app at %d", n)
		}
		return nil
	})
	firstDown := watch.firstChange("green_app", closed)
	t.Logf("green_app left 8 %.1fs after the connections closed, at 2 after %.1fs",
		firstDown.Sub(closed).Seconds(), time.Since(closed).Seconds())
	if firstDown.Sub(closed) < 16*time.Second {
		t.Errorf("scale-down began %.1fs after the load went, within the 20s window", firstDown.Sub(closed).Seconds())
	}
	if got := watch.sequence("green_app", closed); fmt.Sprint(got) != "[8 7 6 5 4 3 2]" {
		t.Errorf("green_app went %v after the close, want one replica a step", got)
	}
	if v := promValue(t, prom, `roomcast_autoscaler_errors_total{kind="prometheus_api"}`); v < 1 {
		t.Errorf("prometheus_api errors %v: the unreachable Prometheus at start was not counted", v)
	}
	if v := promValue(t, prom, `roomcast_autoscaler_scale_events_total{direction="up"}`); v != 2 {
		t.Errorf("scale-up events %v, want 2 (blue 2->5, green 5->8)", v)
	}
	fmt.Printf("=== autoscaler on a real Swarm: blue 2->5 for 100 connections, paused during a %.0fs release, green 5->8 for 160, back to 2 %.0fs after closing (window 20s); %.0fs in all\n",
		pausedUntil.Sub(pausedFrom).Seconds(), time.Since(closed).Seconds(), time.Since(began).Seconds())
}

// buildTestPrometheus builds testPrometheusImage from the prometheus binary bin
// (Debian's, linked to libc only), the libraries ldd lists for it, and
// testPrometheusConf.
func buildTestPrometheus(t *testing.T, env swarmEnv, bin string) {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	copyIntoImage(t, bin, filepath.Join(root, "bin/prometheus"), 0o755)
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", bin, err)
	}
	for _, lib := range regexp.MustCompile(`(/\S+)`).FindAllString(string(out), -1) {
		real, err := filepath.EvalSymlinks(lib)
		if err != nil {
			t.Fatal(err)
		}
		copyIntoImage(t, real, filepath.Join(root, lib), 0o755)
	}
	writeIntoImage(t, filepath.Join(root, "etc/prometheus/prometheus.yml"), testPrometheusConf, 0o644)
	writeIntoImage(t, filepath.Join(root, "prometheus/.keep"), "", 0o644)
	writeIntoImage(t, filepath.Join(dir, "Dockerfile"), `FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/bin/prometheus", "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=:9090"]
`, 0o644)
	e := env
	e.vars = append(append([]string{}, env.vars...), "DOCKER_BUILDKIT=0")
	mustSh(t, e, 2*time.Minute, "docker", "build", "-q", "-t", testPrometheusImage, dir)
}

// startTestPrometheus runs it as a service on the autoscaler's network (dnsrr: no VIP
// here), published on 127.0.0.1:port for the test (through roomcast: the autoscaler's
// network is internal); removed before the teardown.
func startTestPrometheus(t *testing.T, env swarmEnv, port int) {
	t.Helper()
	_, _ = sh(t, env, time.Minute, "docker", "service", "rm", testPrometheus)
	t.Cleanup(func() {
		_, _ = sh(t, env, time.Minute, "docker", "service", "rm", testPrometheus)
		waitGone(t, env, "label=com.docker.swarm.service.name="+testPrometheus)
	})
	mustSh(t, env, 2*time.Minute, "timeout", "100", "docker", "service", "create", "--detach=false", "--no-resolve-image",
		"--name", testPrometheus, "--network", "roomcast", "--network", "roomcast-autoscale", "--endpoint-mode", "dnsrr",
		"--publish", fmt.Sprintf("mode=host,target=9090,published=%d", port), testPrometheusImage)
}

func copyIntoImage(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeIntoImage(t, to, string(b), mode)
}

func writeIntoImage(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func promValue(t *testing.T, prom *promquery.Client, expr string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := prom.Query(ctx, expr, time.Now())
	if err != nil {
		t.Errorf("querying the test's Prometheus for %s: %v", expr, err)
		return -1
	}
	return s.Value
}

// autoscalerLog is the autoscaler's JSON log lines so far.
func autoscalerLog(t *testing.T) []map[string]any {
	t.Helper()
	// The autoscaler logs to stderr, which docker service logs passes on as its own.
	out, err := exec.Command("docker", "service", "logs", "--raw", "--no-task-ids", "edge_autoscaler").CombinedOutput()
	if err != nil {
		t.Logf("docker service logs edge_autoscaler: %v", err)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			lines = append(lines, m)
		}
	}
	return lines
}

// logAutoscaler puts the autoscaler's log in the test's, less the steady decisions.
func logAutoscaler(t *testing.T) {
	t.Helper()
	for _, l := range autoscalerLog(t) {
		if l["msg"] != "decision" || (l["reason"] != "at_min" && l["reason"] != "within_tolerance" && l["reason"] != "paused") {
			t.Logf("autoscaler: %v", l)
		}
	}
}

// pollFor polls check every 250ms until it returns nil or d passes; when it fails
// the test, the autoscaler's log is shown too.
func pollFor(t *testing.T, d time.Duration, what string, check func() error) {
	t.Helper()
	passed := false
	defer func() {
		if !passed {
			logAutoscaler(t)
		}
	}()
	clitest.Poll(t, d, 250*time.Millisecond, what, check)
	passed = true
}

// --- replica counts, sampled through the Engine API -----------------------------------

type replicaSample struct {
	at time.Time
	n  int // -1: no such service
}

type replicaWatch struct {
	mu      sync.Mutex
	samples map[string][]replicaSample
}

// watchReplicas samples the replica count of services every 200ms until the test ends.
func watchReplicas(t *testing.T, docker *swarm.Client, services ...string) *replicaWatch {
	w := &replicaWatch{samples: map[string][]replicaSample{}}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, s := range services {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				n, err := docker.ServiceReplicas(ctx, s)
				cancel()
				v := int(n)
				if err != nil {
					v = -1
				}
				w.mu.Lock()
				if prev := w.samples[s]; len(prev) == 0 || prev[len(prev)-1].n != v {
					w.samples[s] = append(w.samples[s], replicaSample{time.Now(), v})
				}
				w.mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		w.mu.Lock()
		defer w.mu.Unlock()
		for s, ss := range w.samples {
			var b strings.Builder
			for _, x := range ss {
				fmt.Fprintf(&b, " %s=%d", x.at.Format("15:04:05.0"), x.n)
			}
			t.Logf("replicas of %s:%s", s, b.String())
		}
	})
	return w
}

// last is the latest count seen (-1 for none).
func (w *replicaWatch) last(service string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	ss := w.samples[service]
	if len(ss) == 0 {
		return -1
	}
	return ss[len(ss)-1].n
}

// valuesIn is every count service had in [from, to]: the one it had at from, and every
// change up to to.
func (w *replicaWatch) valuesIn(service string, from, to time.Time) []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []int
	for i, s := range w.samples[service] {
		if s.at.After(to) {
			break
		}
		next := i+1 < len(w.samples[service]) && !w.samples[service][i+1].at.After(from)
		if !next {
			out = append(out, s.n)
		}
	}
	return out
}

// expectOnly fails unless every count of service in [from, to] is one of allowed
// (-1, a service not there yet, counts as 0).
func (w *replicaWatch) expectOnly(t *testing.T, service string, from, to time.Time, allowed ...int) {
	t.Helper()
	for _, n := range w.valuesIn(service, from, to) {
		ok := false
		for _, a := range allowed {
			if n == a || n == -1 && a == 0 {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%s had %d replicas between %s and %s; only %v expected (all: %v)", service, n,
				from.Format("15:04:05.0"), to.Format("15:04:05.0"), allowed, w.valuesIn(service, from, to))
		}
	}
}

func (w *replicaWatch) firstNonZero(service string, from time.Time) int {
	for _, n := range w.valuesIn(service, from, time.Now()) {
		if n > 0 {
			return n
		}
	}
	return 0
}

// firstChange is when service's count first changed after from.
func (w *replicaWatch) firstChange(service string, from time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.samples[service] {
		if s.at.After(from) {
			return s.at
		}
	}
	return time.Time{}
}

// sequence is the counts of service from from on, the one at from included.
func (w *replicaWatch) sequence(service string, from time.Time) []int {
	return w.valuesIn(service, from, time.Now())
}

// --- connections held through nginx, reconnecting when closed -----------------------

type heldConnections struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu    sync.Mutex
	color []string // color of each client's current connection, "" while reconnecting
}

// holdConnections opens n WebSockets through nginx (10 rooms) and keeps each open,
// reconnecting through nginx when the server closes it (as a drain does).
func holdConnections(t *testing.T, env swarmEnv, n int) *heldConnections {
	t.Helper()
	h := &heldConnections{stop: make(chan struct{}), color: make([]string, n)}
	ready := make(chan error, n)
	opts := env.dialOptions(t)
	for i := range n {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			first := true
			for attempt := 0; ; attempt++ {
				select {
				case <-h.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, resp, err := wsclient.Dial(ctx, env.wsURL(fmt.Sprintf("autoscale%d", i%10)), opts)
				cancel()
				if err != nil {
					if first && attempt >= 20 {
						ready <- err
						return
					}
					select {
					case <-h.stop:
						return
					case <-time.After(200 * time.Millisecond):
					}
					continue
				}
				h.mu.Lock()
				h.color[i] = resp.Header.Get("X-Roomcast-Color")
				h.mu.Unlock()
				if first {
					first = false
					ready <- nil
				}
				select {
				case <-h.stop:
					c.Close()
					return
				case <-c.Done():
					h.mu.Lock()
					h.color[i] = ""
					h.mu.Unlock()
				}
			}
		}()
	}
	t.Cleanup(h.close)
	deadline := time.After(time.Minute)
	for range n {
		select {
		case err := <-ready:
			if err != nil {
				h.close()
				t.Fatalf("connecting through nginx: %v", err)
			}
		case <-deadline:
			h.close()
			t.Fatal("connections through nginx not open within a minute")
		}
	}
	return h
}

func (h *heldConnections) close() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	h.wg.Wait()
}

// colors counts the clients by the color of their connection.
func (h *heldConnections) colors() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := map[string]int{}
	for _, c := range h.color {
		m[c]++
	}
	return fmt.Sprint(m)
}

func clientColors(hs ...*heldConnections) string {
	var parts []string
	for _, h := range hs {
		parts = append(parts, h.colors())
	}
	return strings.Join(parts, " + ")
}

func TestEdgeStackRunsTheAutoscaler(t *testing.T) {
	out, err := stackConfig(t, "edge.yml", "ACTIVE_COLOR=blue", "EDGE_TAG=v3", "ROOMCAST_IMAGE=registry.example/rc")
	if err != nil {
		t.Fatalf("edge.yml: %v\n%s", err, out)
	}
	section := regexp.MustCompile(`(?ms)^  autoscaler:\n(.*?)^  \S`).FindStringSubmatch(out)
	if section == nil {
		t.Fatalf("no autoscaler service in the rendered edge.yml:\n%s", out)
	}
	svc := section[1]
	for _, want := range []string{
		"image: registry.example/rc:v3", "- /usr/local/bin/roomcast-autoscaler", "replicas: 1", "node.role == manager",
		"condition: on-failure", "order: stop-first", "target: /var/run/docker.sock", "- healthcheck",
		"PROMETHEUS_URL: http://prometheus:9090", "DOCKER_HOST: unix:///var/run/docker.sock",
		"AUTOSCALER_EDGE_SERVICE: edge_nginx", "AUTOSCALER_APP_SERVICE: '{color}_app'",
		`AUTOSCALER_QUERY: sum(roomcast_connections_active{color="{color}"})`,
		`AUTOSCALER_TARGET: "5000"`, `AUTOSCALER_MIN_REPLICAS: "2"`, `AUTOSCALER_MAX_REPLICAS: "20"`,
		`AUTOSCALER_TOLERANCE: "0.1"`, "AUTOSCALER_INTERVAL: 15s", "AUTOSCALER_SCALE_DOWN_WINDOW: 5m",
		`AUTOSCALER_DRY_RUN: "false"`, "AUTOSCALER_ADDR: :8081", "autoscale: null",
	} {
		if !strings.Contains(svc, want) {
			t.Errorf("rendered autoscaler service lacks %q:\n%s", want, svc)
		}
	}
	if strings.Contains(svc, "read_only: true") {
		t.Error("the autoscaler's Docker socket is read-only: it cannot scale")
	}
	out, err = stackConfig(t, "edge.yml", "ACTIVE_COLOR=blue", "AUTOSCALER_TARGET=20", "AUTOSCALER_INTERVAL=2s",
		"AUTOSCALER_SCALE_DOWN_WINDOW=20s", "AUTOSCALER_MIN_REPLICAS=3", "AUTOSCALER_MAX_REPLICAS=9",
		"AUTOSCALER_TOLERANCE=0.2", "AUTOSCALER_DRY_RUN=true", "AUTOSCALER_PROMETHEUS_URL=http://edge_prometheus:9090")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`AUTOSCALER_TARGET: "20"`, "AUTOSCALER_INTERVAL: 2s", "AUTOSCALER_SCALE_DOWN_WINDOW: 20s",
		`AUTOSCALER_MIN_REPLICAS: "3"`, `AUTOSCALER_MAX_REPLICAS: "9"`, `AUTOSCALER_TOLERANCE: "0.2"`,
		`AUTOSCALER_DRY_RUN: "true"`, "PROMETHEUS_URL: http://edge_prometheus:9090"} {
		if !strings.Contains(out, want) {
			t.Errorf("edge.yml does not pass %q through", want)
		}
	}
}

// serviceUpdatedAt is when Swarm last updated the service's spec.
func serviceUpdatedAt(t *testing.T, service string) time.Time {
	t.Helper()
	out, err := exec.Command("docker", "service", "inspect", service, "--format", "{{json .UpdatedAt}}").Output()
	if err != nil {
		t.Fatalf("inspecting %s: %v", service, err)
	}
	var at time.Time
	if err := json.Unmarshal(out, &at); err != nil {
		t.Fatalf("the UpdatedAt of %s, %q: %v", service, out, err)
	}
	return at
}
