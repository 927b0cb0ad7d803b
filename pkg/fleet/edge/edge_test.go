package edge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/edge"
	"roomcast/pkg/fleet/edge/edgetest"
	"roomcast/pkg/fleet/swarm"
	"roomcast/pkg/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeServices is the nginx service in memory: labels, injected errors, and event
// streams the test can feed and cut.
type fakeServices struct {
	mu      sync.Mutex
	labels  map[string]string
	missing bool
	err     error
	reads   int
	watches int
	refuse  error // WatchService fails at once with it
	streams []chan swarm.ServiceEvent
	cuts    []chan error
}

func newFakeServices(labels map[string]string) *fakeServices {
	return &fakeServices{labels: labels}
}

func (f *fakeServices) ServiceLabels(ctx context.Context, name string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	switch {
	case f.err != nil:
		return nil, f.err
	case f.missing || name != "edge_nginx":
		return nil, fmt.Errorf("inspecting service %q: %w", name, swarm.ErrServiceNotFound)
	}
	out := map[string]string{}
	for k, v := range f.labels {
		out[k] = v
	}
	return out, nil
}

func (f *fakeServices) WatchService(ctx context.Context, name string) (<-chan swarm.ServiceEvent, <-chan error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watches++
	events := make(chan swarm.ServiceEvent)
	errs := make(chan error, 1)
	if f.refuse != nil {
		close(events)
		errs <- f.refuse
		return events, errs
	}
	feed := make(chan swarm.ServiceEvent)
	cut := make(chan error, 1)
	f.streams = append(f.streams, feed)
	f.cuts = append(f.cuts, cut)
	go func() {
		defer close(events)
		for {
			select {
			case <-ctx.Done():
				errs <- ctx.Err()
				return
			case err := <-cut:
				errs <- err
				return
			case ev := <-feed:
				select {
				case events <- ev:
				case <-ctx.Done():
					errs <- ctx.Err()
					return
				}
			}
		}
	}()
	return events, errs
}

// set changes the label; with event, open streams report it.
func (f *fakeServices) set(value string, event bool) {
	f.mu.Lock()
	if value == "" {
		delete(f.labels, bluegreen.LabelActive)
	} else {
		f.labels[bluegreen.LabelActive] = value
	}
	streams := append([]chan swarm.ServiceEvent(nil), f.streams...)
	f.mu.Unlock()
	if event {
		for _, s := range streams {
			select {
			case s <- swarm.ServiceEvent{Name: "edge_nginx", Action: "update"}:
			case <-time.After(time.Second): // a stream that ended
			}
		}
	}
}

func (f *fakeServices) setErr(err error, missing bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.missing = err, missing
}

// setRefuse makes every WatchService from now on fail at once with err (nil: open).
func (f *fakeServices) setRefuse(err error) {
	f.mu.Lock()
	f.refuse = err
	f.mu.Unlock()
}

// cut ends every open stream with err.
func (f *fakeServices) cut(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.cuts {
		select {
		case c <- err:
		default:
		}
	}
	f.streams, f.cuts = nil, nil
}

func (f *fakeServices) counts() (reads, watches int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads, f.watches
}

// fakeNginx "serves" the last config it started or reloaded: what the test template
// says in it.
type fakeNginx struct {
	config string

	mu         sync.Mutex
	started    bool
	serving    edge.Status
	reloads    int
	ignoreNext int // reloads that nginx silently does not apply
	signals    []os.Signal
	tests      int
	exitErr    error
	done       chan struct{}
	closeOnce  sync.Once
}

var statusRe = regexp.MustCompile(`color=(\S+) backend=(\S+) at=(\S+)`)

func readStatus(path string) (edge.Status, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return edge.Status{}, "", err
	}
	m := statusRe.FindStringSubmatch(string(b))
	if m == nil {
		return edge.Status{}, "", fmt.Errorf("no status in %q", b)
	}
	return edge.Status{Color: m[1], AppliedAt: m[3]}, m[2], nil
}

func (n *fakeNginx) Test(ctx context.Context, path string) error {
	n.mu.Lock()
	n.tests++
	n.mu.Unlock()
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if bytes.Contains(b, []byte("bogus")) {
		return errors.New("nginx -t: unknown directive \"bogus\"")
	}
	return nil
}

func (n *fakeNginx) Start() error {
	st, _, err := readStatus(n.config)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.started, n.serving = true, st
	return nil
}

func (n *fakeNginx) Reload() error {
	st, _, err := readStatus(n.config)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reloads++
	if n.ignoreNext > 0 {
		n.ignoreNext--
		return nil
	}
	n.serving = st
	return nil
}

func (n *fakeNginx) Signal(sig os.Signal) error {
	n.mu.Lock()
	n.signals = append(n.signals, sig)
	n.mu.Unlock()
	if sig == syscall.SIGTERM {
		n.exit(nil)
	}
	return nil
}

func (n *fakeNginx) exit(err error) {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.exitErr = err
		n.mu.Unlock()
		close(n.done)
	})
}

func (n *fakeNginx) Done() <-chan struct{} { return n.done }

func (n *fakeNginx) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exitErr
}

func (n *fakeNginx) probe(ctx context.Context) (edge.Status, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.started {
		return edge.Status{}, errors.New("connection refused")
	}
	return n.serving, nil
}

func (n *fakeNginx) state() (started bool, serving edge.Status, reloads int, signals []os.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.started, n.serving, n.reloads, append([]os.Signal(nil), n.signals...)
}

type fakeDNS struct {
	mu    sync.Mutex
	names map[string]bool
}

func (d *fakeDNS) set(name string, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.names[name] = ok
}

func (d *fakeDNS) lookup(ctx context.Context, host string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.names[host] {
		return []string{"10.0.1.2"}, nil
	}
	return nil, fmt.Errorf("lookup %s: no such host", host)
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

const testTemplate = "color={{.Color}} backend={{.Backend}} at={{timestamp .AppliedAt}}\n" +
	"{{if eq .Color \"green\"}}{{.User}}{{end}}\n"

// harness is one Edge with fakes around it, running in its own goroutine.
type harness struct {
	t     *testing.T
	svc   *fakeServices
	nginx *fakeNginx
	dns   *fakeDNS
	reg   *prometheus.Registry
	logs  *testenv.SyncBuffer
	edge  *edge.Edge
	dir   string

	cancel context.CancelFunc
	result chan error
}

type options struct {
	labels       map[string]string
	resolvable   []string
	poll         time.Duration
	startTimeout time.Duration
	user         string // rendered for green only: "bogus" makes nginx -t fail for green
	drainDelay   time.Duration
	stopTimeout  time.Duration
}

func newHarness(t *testing.T, o options) *harness {
	t.Helper()
	if o.labels == nil {
		o.labels = map[string]string{bluegreen.LabelActive: "blue"}
	}
	if o.poll == 0 {
		o.poll = time.Hour
	}
	if o.startTimeout == 0 {
		o.startTimeout = time.Minute
	}
	dir := t.TempDir()
	h := &harness{
		t:    t,
		svc:  newFakeServices(o.labels),
		dns:  &fakeDNS{names: map[string]bool{}},
		reg:  prometheus.NewRegistry(),
		logs: &testenv.SyncBuffer{},
		dir:  dir,
	}
	for _, n := range o.resolvable {
		h.dns.set(n, true)
	}
	cfgPath := filepath.Join(dir, "run", "nginx.conf")
	h.nginx = &fakeNginx{config: cfgPath, done: make(chan struct{})}
	tmpl, err := edge.NewTemplate("test", testTemplate)
	if err != nil {
		t.Fatal(err)
	}
	e, err := edge.New(edge.Config{
		Service:      "edge_nginx",
		DefaultColor: "blue",
		AppService:   "{color}_app",
		PollInterval: o.poll,
		StartTimeout: o.startTimeout,
		DrainDelay:   o.drainDelay,
		StopTimeout:  o.stopTimeout,
		ConfigPath:   cfgPath,
		Params: edge.Params{
			BackendPort: 8080, ListenPort: 80, StatusPort: 8081, Resolver: "127.0.0.11", ResolverValid: 5 * time.Second,
			WorkerShutdownTimeout: 40 * time.Second, ConnectTimeout: 2 * time.Second, WSIdleTimeout: time.Minute, NextUpstreamTries: 3,
			PidPath: filepath.Join(dir, "run", "nginx.pid"), ErrorLog: "stderr", AccessLog: "off",
			TempDir: filepath.Join(dir, "run", "tmp"), User: o.user, HealthDir: filepath.Join(dir, "run", "health"),
		},
	}, edge.Deps{
		Services:   h.svc,
		Nginx:      h.nginx,
		Template:   tmpl,
		Lookup:     h.dns.lookup,
		Probe:      h.nginx.probe,
		Logger:     newLogger(h.logs),
		Registerer: h.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.edge = e
	return h
}

// run starts Run; stop (or the end of the bubble) must follow.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.result = make(chan error, 1)
	go func() { h.result <- h.edge.Run(ctx) }()
	// On a failed assertion, end Run so the bubble can finish.
	h.t.Cleanup(func() {
		cancel()
		h.nginx.exit(nil)
	})
}

// stop cancels Run, lets the fake nginx exit as a graceful stop would, and returns
// Run's result.
func (h *harness) stop(t *testing.T) error {
	t.Helper()
	h.cancel()
	synctest.Wait()
	h.nginx.exit(nil)
	select {
	case err := <-h.result:
		return err
	case <-time.After(time.Minute):
		t.Fatal("Run did not return")
		return nil
	}
}

// runningHarness is newHarness with Run started and settled.
func runningHarness(t *testing.T, o options) *harness {
	t.Helper()
	h := newHarness(t, o)
	h.run()
	synctest.Wait()
	return h
}

// mustStop is stop, failing the test if Run returned an error.
func (h *harness) mustStop(t *testing.T) {
	t.Helper()
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) errorsOf(kind string) float64 {
	return testenv.Metric(h.t, h.reg, "roomcast_edge_errors_total", "kind", kind)
}

func (h *harness) serving() edge.Status {
	_, st, _, _ := h.nginx.state()
	return st
}

// renderedBackend is the backend in the config file on disk.
func (h *harness) renderedBackend(t *testing.T) string {
	t.Helper()
	_, backend, err := readStatus(h.nginx.config)
	if err != nil {
		t.Fatal(err)
	}
	return backend
}

func TestStartsOnTheLabelledColor(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"label green", map[string]string{bluegreen.LabelActive: "green", "roomcast.previous": "blue"}, "green"},
		{"label blue", map[string]string{bluegreen.LabelActive: "blue"}, "blue"},
		{"label absent: the default", map[string]string{}, "blue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := runningHarness(t, options{labels: tt.labels, resolvable: []string{"blue_app", "green_app"}})
				h.expectServing(t, tt.want, "after start")
				if got := h.edge.Applied(); got.Color != tt.want || got.Backend != tt.want+"_app" {
					t.Fatalf("applied %+v", got)
				}
				if v := testenv.Metric(t, h.reg, "roomcast_edge_active_color", "color", tt.want); v != 1 {
					t.Fatalf("active color gauge %v", v)
				}
				if err := h.stop(t); err != nil {
					t.Fatalf("Run: %v", err)
				}
				if _, _, _, sigs := h.nginx.state(); len(sigs) != 1 || sigs[0] != syscall.SIGQUIT {
					t.Fatalf("signals %v, want one SIGQUIT (graceful stop)", sigs)
				}
			})
		})
	}
}

func TestStartWaitsForTheLabelledColorNeverAnOlderOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A restarted task: the label says green, green does not resolve yet, blue does.
		h := newHarness(t, options{labels: map[string]string{bluegreen.LabelActive: "green"}, resolvable: []string{"blue_app"}, poll: 5 * time.Second})
		h.run()
		advance(20 * time.Second)
		if started, _, _, _ := h.nginx.state(); started {
			t.Fatalf("nginx started on %+v before green resolved", h.serving())
		}
		if n := h.errorsOf(edge.KindUnresolved); n < 3 {
			t.Fatalf("unresolved counted %v times in 20s of waiting, want retries", n)
		}
		h.dns.set("green_app", true)
		advance(5 * time.Second)
		h.expectServing(t, "green", "once green resolves")
		h.mustStop(t)
	})
}

func TestStartGivesUp(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness)
		kind  string
	}{
		{"color never resolves", func(h *harness) {}, edge.KindUnresolved},
		{"label is not a color", func(h *harness) { h.svc.set("purple", false) }, edge.KindBadLabel},
		{"nginx service missing", func(h *harness) { h.svc.setErr(nil, true) }, edge.KindServiceNotFound},
		{"Docker API down", func(h *harness) { h.svc.setErr(errors.New("connection refused"), false) }, edge.KindDockerAPI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, options{labels: map[string]string{bluegreen.LabelActive: "green"}, resolvable: []string{"blue_app"}, startTimeout: 30 * time.Second, poll: 5 * time.Second})
				tt.setup(h)
				began := time.Now()
				h.run()
				err := <-h.result
				if err == nil || !strings.Contains(err.Error(), "no usable color") {
					t.Fatalf("Run: %v, want it to give up", err)
				}
				if took := time.Since(began); took > 30*time.Second || took < 20*time.Second {
					t.Fatalf("gave up after %v, want about the 30s start timeout", took)
				}
				if started, _, _, _ := h.nginx.state(); started {
					t.Fatal("nginx started")
				}
				if h.errorsOf(tt.kind) < 3 {
					t.Fatalf("%s counted %v times, want retries", tt.kind, h.errorsOf(tt.kind))
				}
			})
		})
	}
}

func TestStartRetriesDockerErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, options{labels: map[string]string{bluegreen.LabelActive: "green"}, resolvable: []string{"blue_app", "green_app"}, poll: 5 * time.Second})
		h.svc.setErr(errors.New("Cannot connect to the Docker daemon"), false)
		h.run()
		time.Sleep(3 * time.Second)
		h.svc.setErr(nil, false)
		advance(5 * time.Second)
		h.expectServing(t, "green", "after the daemon came back")
		if h.errorsOf(edge.KindDockerAPI) < 2 {
			t.Fatalf("docker_api counted %v", h.errorsOf(edge.KindDockerAPI))
		}
		h.mustStop(t)
	})
}

func TestAnEventFlipsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, options{resolvable: []string{"blue_app", "green_app"}}) // poll: 1h
		h.run()
		advance(time.Second)
		first := h.serving()
		h.svc.set("green", true)
		advance(time.Second) // fake time; the reload waits on nothing real
		got := h.serving()
		if got.Color != "green" || got.AppliedAt == first.AppliedAt {
			t.Fatalf("after the event nginx serves %+v (first %+v)", got, first)
		}
		if h.renderedBackend(t) != "green_app" {
			t.Fatalf("rendered backend %q", h.renderedBackend(t))
		}
		if n := testenv.Metric(t, h.reg, "roomcast_edge_reloads_total"); n != 1 {
			t.Fatalf("reloads %v", n)
		}
		if !strings.Contains(h.logs.String(), `"msg":"nginx reloaded","from":"blue","to":"green"`) {
			t.Fatalf("no reload log:\n%s", h.logs)
		}
		// And back: every change is followed, not only the first.
		h.svc.set("blue", true)
		advance(time.Second)
		h.expectServing(t, "blue", "after flipping back")
		h.mustStop(t)
	})
}

func TestThePollCatchesAMissedEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := runningHarness(t, options{resolvable: []string{"blue_app", "green_app"}, poll: 5 * time.Second})
		h.svc.set("green", false)
		advance(4 * time.Second)
		h.expectServing(t, "blue", "before the poll")
		advance(2 * time.Second)
		h.expectServing(t, "green", "after a poll")
		h.mustStop(t)
	})
}

func TestRefusedChangesKeepTheRunningColorAndAreRetried(t *testing.T) {
	tests := []struct {
		name   string
		user   string         // "bogus" breaks the green config
		refuse func(*harness) // makes the change to green impossible
		mend   func(*harness) // makes it possible
		kind   string
	}{
		{"green does not resolve", "",
			func(h *harness) { h.svc.set("green", true) },
			func(h *harness) { h.dns.set("green_app", true) },
			edge.KindUnresolved},
		{"label is not a color", "",
			func(h *harness) { h.dns.set("green_app", true); h.svc.set("Green", true) },
			func(h *harness) { h.svc.set("green", true) },
			edge.KindBadLabel},
		{"label removed", "",
			func(h *harness) { h.dns.set("green_app", true); h.svc.set("", true) },
			func(h *harness) { h.svc.set("green", true) },
			edge.KindLabelMissing},
		{"nginx service gone", "",
			func(h *harness) { h.dns.set("green_app", true); h.svc.set("green", false); h.svc.setErr(nil, true) },
			func(h *harness) { h.svc.setErr(nil, false) },
			edge.KindServiceNotFound},
		{"Docker API errors", "",
			func(h *harness) {
				h.dns.set("green_app", true)
				h.svc.set("green", false)
				h.svc.setErr(errors.New("Error response from daemon: rpc error: code = Unavailable"), false)
			},
			func(h *harness) { h.svc.setErr(nil, false) },
			edge.KindDockerAPI},
		{"nginx -t rejects the green config", "bogus",
			func(h *harness) { h.dns.set("green_app", true); h.svc.set("green", true) },
			nil, // stays refused
			edge.KindConfigTest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := runningHarness(t, options{resolvable: []string{"blue_app"}, poll: 5 * time.Second, user: tt.user})
				before := h.serving()
				tt.refuse(h)
				advance(16 * time.Second) // three polls
				if got := h.serving(); got != before {
					t.Fatalf("nginx serves %+v, want the old %+v", got, before)
				}
				if h.renderedBackend(t) != "blue_app" {
					t.Fatalf("config on disk routes to %q", h.renderedBackend(t))
				}
				if _, _, reloads, _ := h.nginx.state(); reloads != 0 {
					t.Fatalf("%d reloads", reloads)
				}
				if n := h.errorsOf(tt.kind); n < 3 {
					t.Fatalf("%s counted %v times over three polls, want every retry counted\n%s", tt.kind, n, h.logs)
				}
				if !strings.Contains(h.logs.String(), `"kind":"`+tt.kind+`"`) {
					t.Fatalf("no log naming %s:\n%s", tt.kind, h.logs)
				}
				if tt.mend != nil {
					tt.mend(h)
					advance(6 * time.Second)
					h.expectServing(t, "green", "once mended")
				}
				h.mustStop(t)
			})
		})
	}
}

func TestAReloadNginxDidNotApplyIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, options{resolvable: []string{"blue_app", "green_app"}, poll: 5 * time.Second})
		h.nginx.ignoreNext = 1
		h.run()
		synctest.Wait()
		h.svc.set("green", true)
		advance(9 * time.Second) // within the 10s confirmation wait
		if got := h.edge.Applied().Color; got != "blue" {
			t.Fatalf("an unconfirmed reload counts as applied: %q", got)
		}
		advance(7 * time.Second) // the wait runs out; the next poll tries again
		if h.errorsOf(edge.KindReload) != 1 {
			t.Fatalf("reload errors %v", h.errorsOf(edge.KindReload))
		}
		// A second reload proves the first did not count as applied.
		if got, _, reloads, _ := h.nginx.state(); reloads != 2 || h.serving().Color != "green" || h.edge.Applied().Color != "green" {
			t.Fatalf("after the retry: %d reloads, nginx serves %q (started %v)", reloads, h.serving().Color, got)
		}
		h.mustStop(t)
	})
}

func TestTheEventStreamIsReopenedWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, options{resolvable: []string{"blue_app", "green_app"}}) // poll: 1h
		h.run()
		synctest.Wait()
		// The daemon goes away: the stream is cut and new ones fail at once.
		h.svc.setRefuse(errors.New("connection refused"))
		h.svc.cut(errors.New("unexpected EOF"))
		advance(10 * time.Second)
		_, watches := h.svc.counts()
		// 0.5+1+2+4 s of backoff fit in 10s: the first stream and about five attempts.
		if watches < 4 || watches > 7 {
			t.Fatalf("%d stream attempts in 10s, want backoff from 0.5s doubling", watches)
		}
		if n := h.errorsOf(edge.KindEventStream); n < 3 {
			t.Fatalf("event_stream counted %v", n)
		}
		// A change made while no stream is open is read when one opens again.
		h.svc.set("green", false)
		h.svc.setRefuse(nil)
		advance(20 * time.Second)
		h.expectServing(t, "green", "after the stream came back")
		h.mustStop(t)
	})
}

func TestStopAndExit(t *testing.T) {
	t.Run("drain: the health check fails, nginx stops accepting after the drain delay, open connections are closed after the stop timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := runningHarness(t, options{resolvable: []string{"blue_app"}, drainDelay: 10 * time.Second, stopTimeout: 2 * time.Second})
			health := filepath.Join(h.dir, "run", "health", edge.HealthFile)
			if _, err := os.Stat(health); err != nil {
				t.Fatalf("health file while serving: %v", err)
			}
			h.cancel()
			synctest.Wait()
			if _, err := os.Stat(health); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("health file once told to stop: %v, want none", err)
			}
			advance(10*time.Second - time.Millisecond)
			if _, _, _, sigs := h.nginx.state(); len(sigs) != 0 {
				t.Fatalf("signals %v within the drain delay, want none", sigs)
			}
			advance(time.Millisecond)
			if _, _, _, sigs := h.nginx.state(); len(sigs) != 1 || sigs[0] != syscall.SIGQUIT {
				t.Fatalf("signals %v after the drain delay, want SIGQUIT", sigs)
			}
			advance(2*time.Second - time.Millisecond)
			if _, _, _, sigs := h.nginx.state(); len(sigs) != 1 {
				t.Fatalf("signals %v within the stop timeout, want SIGQUIT alone", sigs)
			}
			advance(time.Millisecond)
			if err := <-h.result; err != nil {
				t.Fatal(err)
			}
			if _, _, _, sigs := h.nginx.state(); len(sigs) != 2 || sigs[1] != syscall.SIGTERM {
				t.Fatalf("signals %v, want SIGQUIT then SIGTERM", sigs)
			}
		})
	})
	t.Run("a second stop within the drain delay is at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := runningHarness(t, options{resolvable: []string{"blue_app"}, drainDelay: 10 * time.Second})
			h.cancel()
			advance(time.Second)
			h.edge.Abort()
			if err := <-h.result; err != nil {
				t.Fatal(err)
			}
			if _, _, _, sigs := h.nginx.state(); len(sigs) != 1 || sigs[0] != syscall.SIGTERM {
				t.Fatalf("signals %v, want SIGTERM alone", sigs)
			}
		})
	})
	t.Run("second stop is at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := runningHarness(t, options{resolvable: []string{"blue_app"}})
			h.cancel()
			synctest.Wait()
			h.edge.Abort()
			if err := <-h.result; err != nil {
				t.Fatal(err)
			}
			if _, _, _, sigs := h.nginx.state(); len(sigs) != 2 || sigs[0] != syscall.SIGQUIT || sigs[1] != syscall.SIGTERM {
				t.Fatalf("signals %v, want SIGQUIT then SIGTERM", sigs)
			}
		})
	})
	t.Run("nginx fails while stopping", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := runningHarness(t, options{resolvable: []string{"blue_app"}})
			h.cancel()
			synctest.Wait()
			h.nginx.exit(errors.New("exit status 1"))
			var xe *edge.ExitError
			if err := <-h.result; !errors.As(err, &xe) || xe.Code != 1 {
				t.Fatalf("Run: %v, want an ExitError with code 1", err)
			}
		})
	})
	t.Run("nginx exits on its own", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := runningHarness(t, options{resolvable: []string{"blue_app"}})
			h.nginx.exit(nil) // status 0, but nobody asked
			var xe *edge.ExitError
			if err := <-h.result; !errors.As(err, &xe) || xe.Code == 0 || !strings.Contains(err.Error(), "on its own") {
				t.Fatalf("Run: %v, want a non-zero ExitError", err)
			}
		})
	})
	t.Run("stopped before nginx started", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, options{resolvable: nil}) // blue never resolves
			h.run()
			time.Sleep(2 * time.Second)
			h.cancel()
			if err := <-h.result; err != nil {
				t.Fatalf("Run: %v", err)
			}
			if started, _, _, sigs := h.nginx.state(); started || len(sigs) != 0 {
				t.Fatal("nginx was started or signalled")
			}
		})
	})
}

func TestMetricsLint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, options{resolvable: []string{"blue_app"}})
		problems, err := testutil.GatherAndLint(h.reg)
		if err != nil || len(problems) > 0 {
			t.Fatalf("lint: %v %v", problems, err)
		}
		// Every kind is exported from the start, at 0.
		for _, k := range []string{edge.KindDockerAPI, edge.KindServiceNotFound, edge.KindLabelMissing, edge.KindBadLabel,
			edge.KindUnresolved, edge.KindRender, edge.KindConfigTest, edge.KindReload, edge.KindEventStream} {
			if _, ok := testenv.LookupMetric(t, h.reg, "roomcast_edge_errors_total", "kind", k); !ok {
				t.Errorf("kind %s not exported at start", k)
			}
		}
	})
}

func TestNewRefusesBadConfig(t *testing.T) {
	tmpl, err := edge.NewTemplate("t", testTemplate)
	if err != nil {
		t.Fatal(err)
	}
	good := func() (edge.Config, edge.Deps) {
		dir := t.TempDir()
		return edge.Config{
				Service: "edge_nginx", DefaultColor: "blue", AppService: "{color}_app", PollInterval: time.Second,
				StartTimeout: time.Second, ConfigPath: filepath.Join(dir, "nginx.conf"),
				Params: edge.Params{BackendPort: 8080, ListenPort: 80, StatusPort: 8081, Resolver: "127.0.0.11", ResolverValid: time.Second,
					WorkerShutdownTimeout: time.Second, ConnectTimeout: time.Second, WSIdleTimeout: time.Minute, PidPath: dir + "/p", ErrorLog: "stderr",
					AccessLog: "off", TempDir: dir},
			}, edge.Deps{Services: newFakeServices(nil), Nginx: &fakeNginx{done: make(chan struct{})}, Template: tmpl,
				Logger: newLogger(&testenv.SyncBuffer{})}
	}
	if _, err := edge.New(good()); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	for _, tt := range []struct {
		name   string
		change func(*edge.Config, *edge.Deps)
	}{
		{"no service", func(c *edge.Config, _ *edge.Deps) { c.Service = "" }},
		{"default color", func(c *edge.Config, _ *edge.Deps) { c.DefaultColor = "red" }},
		{"pattern without {color}", func(c *edge.Config, _ *edge.Deps) { c.AppService = "app" }},
		{"zero poll", func(c *edge.Config, _ *edge.Deps) { c.PollInterval = 0 }},
		{"bad template value", func(c *edge.Config, _ *edge.Deps) { c.Params.ListenPort = 0 }},
		{"no nginx", func(_ *edge.Config, d *edge.Deps) { d.Nginx = nil }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, d := good()
			tt.change(&c, &d)
			if _, err := edge.New(c, d); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestDNSLookupAsksTheGivenServer(t *testing.T) {
	dns := edgetest.NewDNS(t)
	dns.Set("green_app", "10.0.1.7", "10.0.1.8")
	lookup := edge.DNSLookup(dns.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	got, err := lookup(ctx, "green_app")
	if err != nil || len(got) != 2 || got[0] != "10.0.1.7" {
		t.Fatalf("green_app: %v, %v", got, err)
	}
	if _, err := lookup(ctx, "blue_app"); err == nil {
		t.Fatal("an unknown name resolved")
	}
	if got, err := lookup(ctx, "10.9.8.7"); err != nil || got[0] != "10.9.8.7" {
		t.Fatalf("an IP address: %v, %v", got, err)
	}
	if dns.Queries("green_app") == 0 || dns.Queries("blue_app") == 0 {
		t.Fatal("the server was not asked")
	}
	if n := dns.Queries("blue_app") + dns.Queries("green_app"); n > 2 {
		t.Fatalf("%d queries for two A look-ups", n)
	}
}

// expectServing fails the test unless nginx serves color; when says at which step.
func (h *harness) expectServing(t *testing.T, color, when string) {
	t.Helper()
	if got := h.serving().Color; got != color {
		t.Fatalf("%s: nginx serves %q, want %s", when, got, color)
	}
}

// advance lets d of the bubble's time pass, then waits until every goroutine of the
// bubble is blocked again.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}
