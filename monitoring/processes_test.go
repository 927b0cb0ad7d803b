package monitoring_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/edge"
	"roomcast/pkg/fleet/edge/edgetest"
	"roomcast/pkg/fleet/swarm"
	"roomcast/pkg/server/replica"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/testenv"
)

// startReplica starts a replica of color on a free port, on natsURL (empty: its own
// embedded NATS server; else one with JetStream), closed in t.Cleanup, and waits until
// its history stream is found, so that the stream's metrics are exported. Its queues are
// long: load tests send fast.
func startReplica(t *testing.T, color, natsURL string) *replica.Replica {
	t.Helper()
	r := replicatest.Start(t, replicatest.Color(color), replicatest.Instance(color+"_app.1.test"),
		replicatest.Version("v-monitoring-test"), replicatest.NATS(natsURL), replicatest.SendQueue(1024, 4<<20),
		replicatest.History(1000)).Replica
	deadline := time.Now().Add(30 * time.Second)
	for {
		if v, ok := testenv.LookupMetric(t, r.Registry(), "roomcast_history_available"); ok && v == 1 {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: history not available after 30s", color)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serveMetrics serves g's /metrics on a free port of 127.0.0.1 and returns host:port.
func serveMetrics(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// sampleNames fetches http://addr/metrics and returns the names of its samples (a
// histogram's _bucket, _sum and _count each).
func sampleNames(t *testing.T, addr string) map[string]bool {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics of %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics of %s: status %d", addr, resp.StatusCode)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading /metrics of %s: %v", addr, err)
	}
	return names
}

// --- the edge: pkg/fleet/edge with fakes of Docker, so that its metrics are real ----------------

// labelOnly is the nginx service as the edge reads it from Docker: the label
// roomcast.active, and an event stream with no event.
type labelOnly struct{ active string }

func (s labelOnly) ServiceLabels(context.Context, string) (map[string]string, error) {
	return map[string]string{bluegreen.LabelActive: s.active}, nil
}

func (labelOnly) WatchService(ctx context.Context, _ string) (<-chan swarm.ServiceEvent, <-chan error) {
	events := make(chan swarm.ServiceEvent)
	errs := make(chan error, 1)
	go func() {
		<-ctx.Done()
		close(events)
		errs <- nil
	}()
	return events, errs
}

// edgeConfig is the edge of the edge stack with every path in dir, nginx on listenPort
// and the app's color names resolved by dns to backendPort on 127.0.0.1.
func edgeConfig(dir string, listenPort, statusPort, backendPort int, resolver string) edge.Config {
	return edge.Config{
		Service:       "edge_nginx",
		DefaultColor:  "blue",
		AppService:    "{color}_app",
		PollInterval:  time.Second,
		StartTimeout:  20 * time.Second,
		ReloadTimeout: 10 * time.Second,
		ConfigPath:    filepath.Join(dir, "nginx.conf"),
		// As roomcast-edge runs it: nginx's responses counted by status class.
		CountResponses: true,
		Params: edge.Params{
			BackendPort:           backendPort,
			ListenPort:            listenPort,
			StatusPort:            statusPort,
			Resolver:              resolver,
			ResolverValid:         time.Second,
			WorkerShutdownTimeout: time.Second,
			ConnectTimeout:        time.Second,
			WSIdleTimeout:         time.Minute,
			NextUpstreamTries:     2,
			PidPath:               filepath.Join(dir, "nginx.pid"),
			ErrorLog:              "stderr",
			AccessLog:             "off",
			TempDir:               filepath.Join(dir, "tmp"),
		},
	}
}

// newEdge builds the edge (metrics registered, nothing running) on the repository's
// nginx template.
func newEdge(t *testing.T, cfg edge.Config, nginx edge.Process, reg prometheus.Registerer) *edge.Edge {
	t.Helper()
	tmpl, err := edge.ParseTemplate(nginxTemplate)
	if err != nil {
		t.Fatal(err)
	}
	e, err := edge.New(cfg, edge.Deps{
		Services:   labelOnly{active: "blue"},
		Nginx:      nginx,
		Template:   tmpl,
		Logger:     testenv.Logger(t).With("component", "edge"),
		Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// runningEdge is roomcast-edge's core with a real nginx, routing "blue" to 127.0.0.1:
// backendPort. It returns nginx's port and the address of the edge's /metrics.
func runningEdge(t *testing.T, nginxBin string, backendPort int) (nginxPort, statusPort int, metricsAddr string) {
	t.Helper()
	dns := edgetest.NewDNS(t)
	dns.Set("blue_app", "127.0.0.1")
	nginxPort, statusPort = testenv.FreePort(t), testenv.FreePort(t)
	cfg := edgeConfig(t.TempDir(), nginxPort, statusPort, backendPort, dns.Addr())
	var nginxOut testenv.SyncBuffer
	nginx := edge.NewNginx(nginxBin, cfg.ConfigPath, io.Discard, &nginxOut)
	reg := prometheus.NewRegistry()
	e := newEdge(t, cfg, nginx, reg)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel() // a graceful stop of nginx, bounded by its worker_shutdown_timeout
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("edge: %v\n%s", err, nginxOut.String())
			}
		case <-time.After(15 * time.Second):
			t.Errorf("edge did not stop nginx (pid %d) in 15s; killing it", nginx.Pid())
			if pid := nginx.Pid(); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for e.Applied().Color != "blue" {
		select {
		case err := <-done:
			t.Fatalf("edge ended before nginx served: %v\n%s", err, nginxOut.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not serving blue after 30s\n%s", nginxOut.String())
		}
	}
	return nginxPort, statusPort, serveMetrics(t, reg)
}

// --- outside programs, stopped by PID --------------------------------------------------

// program is an outside process started by start.
type program struct {
	name string
	cmd  *exec.Cmd
	out  *testenv.SyncBuffer
	done chan struct{}
}

// start runs bin with args, its output kept for failure messages, and stops it by PID
// in t.Cleanup (SIGTERM, then SIGKILL after 10s).
func start(t *testing.T, name, bin string, args ...string) *program {
	t.Helper()
	p := &program{name: name, out: &testenv.SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		pid := p.cmd.Process.Pid
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not stop on SIGTERM; killing it", name, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, tail(p.out.String(), 4000))
		}
	})
	return p
}

// waitHTTP polls url until it answers 200, for at most within.
func (p *program) waitHTTP(t *testing.T, url string, within time.Duration) {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(within)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v\n%s", p.name, p.cmd.ProcessState, tail(p.out.String(), 4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not answering 200 after %s: %v\n%s", p.name, url, within, err, tail(p.out.String(), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tail is the end of out, at most n bytes of it.
func tail(out string, n int) string {
	if len(out) > n {
		out = "..." + out[len(out)-n:]
	}
	return out
}
