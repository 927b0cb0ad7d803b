package autoscale_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"roomcast/pkg/fleet/autoscale"
	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm"
	"roomcast/pkg/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	loadQuery = `sum(roomcast_connections_active{color="{color}"})`
	ageQuery  = `time() - max(timestamp(roomcast_connections_active{color="{color}"}))`
)

func queryFor(color string) string { return strings.ReplaceAll(loadQuery, "{color}", color) }
func ageFor(color string) string   { return strings.ReplaceAll(ageQuery, "{color}", color) }

// services is the Swarm in memory: the nginx service's labels, app replica counts,
// injected errors, and every scale request.
type services struct {
	mu       sync.Mutex
	labels   map[string]string
	replicas map[string]int // -1: a global service
	labelErr error
	readErr  error
	scaleErr error
	scales   []string // "service=n"
	onScale  func()
}

func newServices(active string) *services {
	return &services{labels: map[string]string{bluegreen.LabelActive: active}, replicas: map[string]int{"blue_app": 2, "green_app": 0}}
}

func (s *services) ServiceLabels(_ context.Context, name string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.labelErr != nil {
		return nil, s.labelErr
	}
	if name != "edge_nginx" || s.labels == nil {
		return nil, fmt.Errorf("inspecting service %q: %w", name, swarm.ErrServiceNotFound)
	}
	out := map[string]string{}
	for k, v := range s.labels {
		out[k] = v
	}
	return out, nil
}

func (s *services) ServiceReplicas(_ context.Context, name string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readErr != nil {
		return 0, s.readErr
	}
	n, ok := s.replicas[name]
	switch {
	case !ok:
		return 0, fmt.Errorf("inspecting service %q: %w", name, swarm.ErrServiceNotFound)
	case n < 0:
		return 0, fmt.Errorf("service %q: %w", name, swarm.ErrNotReplicated)
	}
	return uint64(n), nil
}

func (s *services) ScaleService(_ context.Context, name string, n uint64) error {
	s.mu.Lock()
	s.scales = append(s.scales, fmt.Sprintf("%s=%d", name, n))
	err, hook := s.scaleErr, s.onScale
	if err == nil {
		s.replicas[name] = int(n)
	}
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return err
}

func (s *services) setLabel(k, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == "" {
		delete(s.labels, k)
		return
	}
	s.labels[k] = v
}

func (s *services) count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replicas[name]
}

func (s *services) set(f func(s *services)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *services) scaleCalls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.scales...)
}

// querier is Prometheus in memory: the load of each color, answered at the time asked
// (fresh) unless the test says otherwise, and the age query answered with age.
type querier struct {
	mu      sync.Mutex
	load    map[string]float64
	err     error                                                     // every query fails with it
	answer  func(expr string, at time.Time) (autoscale.Sample, error) // overrides, when set
	age     float64
	queries []string
	onQuery func()
}

func newQuerier() *querier { return &querier{load: map[string]float64{}} }

func (q *querier) Query(_ context.Context, expr string, at time.Time) (autoscale.Sample, error) {
	q.mu.Lock()
	q.queries = append(q.queries, expr)
	hook := q.onQuery
	var s autoscale.Sample
	var err error
	switch {
	case q.answer != nil:
		s, err = q.answer(expr, at)
	case q.err != nil:
		err = q.err
	case strings.HasPrefix(expr, "time()"):
		s = autoscale.Sample{Value: q.age, Time: at}
	default:
		for color, v := range q.load {
			if expr == queryFor(color) {
				s = autoscale.Sample{Value: v, Time: at}
				break
			}
		}
		if s.Time.IsZero() {
			err = fmt.Errorf("query %q: %w", expr, autoscale.ErrNoData)
		}
	}
	q.mu.Unlock()
	if hook != nil {
		hook()
	}
	return s, err
}

func (q *querier) setLoad(color string, v float64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.load[color] = v
}

func (q *querier) set(f func(q *querier)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	f(q)
}

func (q *querier) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queries)
}

// logBuffer collects the JSON log lines written from the loop's goroutine.
type logBuffer struct{ testenv.SyncBuffer }

// lines returns the JSON log lines whose msg is msg.
func (b *logBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// warnings returns the WARN lines of kind.
func (b *logBuffer) warnings(t *testing.T, kind string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, msg := range []string{"decision", "not scaled"} {
		for _, m := range b.lines(t, msg) {
			if m["level"] == "WARN" && m["kind"] == kind {
				out = append(out, m)
			}
		}
	}
	return out
}

type harness struct {
	t      *testing.T
	svc    *services
	prom   *querier
	reg    *prometheus.Registry
	logs   *logBuffer
	scaler *autoscale.Autoscaler
	now    time.Time // the clock of Tick tests; Run tests use the bubble's
}

// options change the test configuration: 20 per replica, [2, 20], ±10%, a tick every
// 2s, a 20s window, the age query on.
type options struct {
	dryRun  bool
	noAge   bool
	window  time.Duration
	timeout time.Duration
	clock   bool // inject h.now (for Tick tests); otherwise time.Now (synctest's in a bubble)
}

func newHarness(t *testing.T, o options) *harness {
	t.Helper()
	h := &harness{t: t, svc: newServices("blue"), prom: newQuerier(), reg: prometheus.NewRegistry(), logs: &logBuffer{}, now: t0}
	if o.window == 0 {
		o.window = 20 * time.Second
	}
	if o.timeout == 0 {
		o.timeout = time.Second
	}
	cfg := autoscale.Config{
		EdgeService: "edge_nginx",
		AppService:  "{color}_app",
		Query:       loadQuery,
		AgeQuery:    ageQuery,
		MaxDataAge:  time.Minute,
		Policy:      autoscale.Policy{Target: 20, Min: 2, Max: 20, Tolerance: 0.1, ScaleDownWindow: o.window},
		Interval:    2 * time.Second,
		Timeout:     o.timeout,
		DryRun:      o.dryRun,
	}
	if o.noAge {
		cfg.AgeQuery = ""
	}
	deps := autoscale.Deps{
		Services:   h.svc,
		Querier:    h.prom,
		Logger:     slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: h.reg,
	}
	if o.clock {
		deps.Now = func() time.Time { return h.now }
	}
	var err error
	if h.scaler, err = autoscale.New(cfg, deps); err != nil {
		t.Fatal(err)
	}
	return h
}

// run starts Run in the bubble and stops it at the end of the test.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := h.scaler.Run(ctx); err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}()
	h.t.Cleanup(func() {
		cancel()
		<-done
	})
}

func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	return testenv.Metric(h.t, h.reg, name, labels...)
}

func (h *harness) errorsOf(kind string) float64 {
	return h.metric("roomcast_autoscaler_errors_total", "kind", kind)
}

// at sleeps in the bubble until d after the start (ticks at 0, 2s, 4s, ... run first).
func at(start time.Time, d time.Duration) {
	time.Sleep(time.Until(start.Add(d)))
	synctest.Wait()
}

func TestRunScalesUpAtOnceAndDownOnlyAfterTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, options{})
		h.prom.setLoad("blue", 100) // 100 connections, 20 per replica: 5
		start := time.Now()
		h.run()
		synctest.Wait()
		if n := h.svc.count("blue_app"); n != 5 {
			t.Fatalf("after the first tick blue_app has %d replicas, want 5 at once", n)
		}
		at(start, 9*time.Second) // ticks at 0..8s saw 100
		h.prom.setLoad("blue", 0)
		// The last recommendation of 5 was made at 8s: it holds until 28s.
		// (Checks are at odd seconds, between the ticks.)
		at(start, 27*time.Second)
		if n := h.svc.count("blue_app"); n != 5 {
			t.Fatalf("at 27s blue_app has %d replicas, want 5 (the window holds)", n)
		}
		at(start, 29*time.Second)
		if n := h.svc.count("blue_app"); n != 4 {
			t.Fatalf("at 29s blue_app has %d replicas, want 4 (one fewer a step)", n)
		}
		at(start, 41*time.Second)
		if got, want := strings.Join(h.svc.scaleCalls(), " "), "blue_app=5 blue_app=4 blue_app=3 blue_app=2"; got != want {
			t.Fatalf("scale calls %q, want %q", got, want)
		}
		if up, down := h.metric("roomcast_autoscaler_scale_events_total", "direction", "up"),
			h.metric("roomcast_autoscaler_scale_events_total", "direction", "down"); up != 1 || down != 3 {
			t.Fatalf("scale events up %v down %v, want 1 and 3", up, down)
		}
		if v := h.metric("roomcast_autoscaler_desired_replicas"); v != 2 {
			t.Fatalf("desired_replicas %v, want 2", v)
		}
		if v := h.metric("roomcast_autoscaler_decisions_total", "reason", "at_min"); v < 3 {
			t.Fatalf("at_min decisions %v", v)
		}
		// Every decision is logged with its inputs.
		decisions := h.logs.lines(t, "decision")
		if len(decisions) != 21 { // ticks at 0, 2, ..., 40s
			t.Fatalf("%d decisions logged in 40s of 2s ticks, want 21", len(decisions))
		}
		first := decisions[0]
		for k, want := range map[string]any{"color": "blue", "service": "blue_app", "load": 100.0, "current": 2.0,
			"desired": 5.0, "recommendation": 5.0, "reason": "scale_up", "target": 20.0, "load_per_replica": 50.0, "ratio": 2.5} {
			if first[k] != want {
				t.Errorf("first decision %s = %v, want %v (%v)", k, first[k], want, first)
			}
		}
		if n := len(h.logs.lines(t, "scaled")); n != 4 {
			t.Fatalf("%d scaled lines, want 4", n)
		}
	})
}

func TestPausedWhileAReleaseIsUnderWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, options{})
		h.svc.setLabel(bluegreen.LabelPromoting, "true")
		h.prom.setLoad("blue", 100)
		start := time.Now()
		h.run()
		at(start, 11*time.Second)
		if calls := h.svc.scaleCalls(); len(calls) != 0 {
			t.Fatalf("scaled during a release: %v", calls)
		}
		if n := h.prom.count(); n != 0 {
			t.Fatalf("%d Prometheus queries during a release, want none (it does nothing)", n)
		}
		if v := h.metric("roomcast_autoscaler_paused"); v != 1 {
			t.Fatalf("paused gauge %v", v)
		}
		if v := h.metric("roomcast_autoscaler_decisions_total", "reason", "paused"); v != 6 {
			t.Fatalf("%v paused decisions in 11s, want 6", v)
		}
		if n := len(h.logs.lines(t, "release under way: paused")); n != 1 {
			t.Fatalf("pause announced %d times, want once", n)
		}

		// The release flips to green (at blue's 2 replicas) and ends: green is followed.
		h.svc.set(func(s *services) { s.replicas["green_app"] = 2; s.labels[bluegreen.LabelActive] = "green" })
		h.prom.setLoad("green", 100)
		h.svc.setLabel(bluegreen.LabelPromoting, "")
		at(start, 13*time.Second)
		if got := strings.Join(h.svc.scaleCalls(), " "); got != "green_app=5" {
			t.Fatalf("scale calls after the release %q, want green_app=5", got)
		}
		if v := h.metric("roomcast_autoscaler_paused"); v != 0 {
			t.Fatalf("paused gauge %v after the release", v)
		}
	})
}

func TestAfterAReleaseTheScaledSizeIsKeptForAWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, options{})
		h.svc.set(func(s *services) { s.replicas["green_app"] = 5; s.labels[bluegreen.LabelActive] = "green" })
		h.svc.setLabel(bluegreen.LabelPromoting, "true")
		h.prom.setLoad("green", 0) // clients have not come back yet
		start := time.Now()
		h.run()
		at(start, 5*time.Second)
		h.svc.setLabel(bluegreen.LabelPromoting, "") // the release ends between ticks
		at(start, 25*time.Second)                    // resumed at 6s: its window holds 5 until 26s
		if calls := h.svc.scaleCalls(); len(calls) != 0 {
			t.Fatalf("scaled down within a window of the release: %v", calls)
		}
		at(start, 27*time.Second)
		if got := strings.Join(h.svc.scaleCalls(), " "); got != "green_app=4" {
			t.Fatalf("scale calls %q, want green_app=4 once the window passed", got)
		}
	})
}

func TestAReleaseThatBeginsDuringATickIsLeftAlone(t *testing.T) {
	{
		h := newHarness(t, options{noAge: true, clock: true})
		h.prom.setLoad("blue", 100)
		// `just promote` sets the label while the load query is under way.
		h.prom.set(func(q *querier) {
			q.onQuery = func() { h.svc.setLabel(bluegreen.LabelPromoting, "true") }
		})
		o := h.scaler.Tick(context.Background())
		if o.Reason != autoscale.ReasonPaused || o.Scaled || o.Decision == nil || o.Decision.Desired != 5 {
			t.Fatalf("outcome %+v, want a decision for 5 that was not carried out", o)
		}
		if calls := h.svc.scaleCalls(); len(calls) != 0 {
			t.Fatalf("scaled although a release began: %v", calls)
		}
		if n, m := len(h.logs.lines(t, "decision")), len(h.logs.lines(t, "not scaled")); n != 1 || m != 1 {
			t.Fatalf("%d decision and %d not-scaled lines, want one each", n, m)
		}
	}
}

func TestAColorChangeFollowsTheNewColorWithANewWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, options{})
		h.prom.setLoad("blue", 100)
		start := time.Now()
		h.run()
		at(start, time.Second)
		if n := h.svc.count("blue_app"); n != 5 {
			t.Fatalf("blue_app %d, want 5", n)
		}
		// Someone flips nginx by hand (no release label): green at 3, little load.
		h.svc.set(func(s *services) { s.replicas["green_app"] = 3; s.labels[bluegreen.LabelActive] = "green" })
		h.prom.setLoad("green", 10)
		at(start, 21*time.Second) // green followed from 2s: its window (seeded with 3) holds until 22s
		if got := strings.Join(h.svc.scaleCalls(), " "); got != "blue_app=5" {
			t.Fatalf("scale calls %q, want only blue_app=5", got)
		}
		at(start, 23*time.Second)
		if got := strings.Join(h.svc.scaleCalls(), " "); got != "blue_app=5 green_app=2" {
			t.Fatalf("scale calls %q, want green_app=2 after its window", got)
		}
		if n := h.svc.count("blue_app"); n != 5 {
			t.Fatalf("the old color was touched: blue_app %d", n)
		}
		if n := len(h.logs.lines(t, "following the active color")); n != 2 {
			t.Fatalf("color changes logged %d times, want 2 (blue, then green)", n)
		}
	})
}

func TestDryRunDecidesAndNeverScales(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, options{dryRun: true})
		h.prom.setLoad("blue", 100)
		start := time.Now()
		h.run()
		at(start, 5*time.Second)
		if calls := h.svc.scaleCalls(); len(calls) != 0 {
			t.Fatalf("dry run scaled: %v", calls)
		}
		if v := h.metric("roomcast_autoscaler_desired_replicas"); v != 5 {
			t.Fatalf("desired_replicas %v, want 5", v)
		}
		for _, d := range h.logs.lines(t, "decision") {
			if d["dry_run"] != true || d["desired"] != 5.0 || d["reason"] != "scale_up" {
				t.Fatalf("decision %v", d)
			}
		}
	})
}

func TestErrorsKeepTheCountAndAreRetried(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(h *harness)
		mend    func(h *harness)
		kind    string
	}{
		{"Docker unreachable",
			func(h *harness) {
				h.svc.set(func(s *services) { s.labelErr = errors.New("Cannot connect to the Docker daemon") })
			},
			func(h *harness) { h.svc.set(func(s *services) { s.labelErr = nil }) }, autoscale.KindDockerAPI},
		{"nginx service missing",
			func(h *harness) { h.svc.set(func(s *services) { s.labels = nil }) },
			func(h *harness) {
				h.svc.set(func(s *services) { s.labels = map[string]string{bluegreen.LabelActive: "blue"} })
			}, autoscale.KindServiceNotFound},
		{"label missing",
			func(h *harness) { h.svc.setLabel(bluegreen.LabelActive, "") },
			func(h *harness) { h.svc.setLabel(bluegreen.LabelActive, "blue") }, autoscale.KindLabelMissing},
		{"label not a color",
			func(h *harness) { h.svc.setLabel(bluegreen.LabelActive, "purple") },
			func(h *harness) { h.svc.setLabel(bluegreen.LabelActive, "blue") }, autoscale.KindBadLabel},
		{"app service missing",
			func(h *harness) { h.svc.set(func(s *services) { delete(s.replicas, "blue_app") }) },
			func(h *harness) { h.svc.set(func(s *services) { s.replicas["blue_app"] = 2 }) }, autoscale.KindServiceNotFound},
		{"app service global",
			func(h *harness) { h.svc.set(func(s *services) { s.replicas["blue_app"] = -1 }) },
			func(h *harness) { h.svc.set(func(s *services) { s.replicas["blue_app"] = 2 }) }, autoscale.KindNotReplicated},
		{"reading replicas fails",
			func(h *harness) { h.svc.set(func(s *services) { s.readErr = context.DeadlineExceeded }) },
			func(h *harness) { h.svc.set(func(s *services) { s.readErr = nil }) }, autoscale.KindDockerAPI},
		{"Prometheus unreachable",
			func(h *harness) { h.prom.set(func(q *querier) { q.err = errors.New("dial tcp: connection refused") }) },
			func(h *harness) { h.prom.set(func(q *querier) { q.err = nil }) }, autoscale.KindPrometheusAPI},
		{"empty result",
			func(h *harness) { h.prom.set(func(q *querier) { delete(q.load, "blue") }) },
			func(h *harness) { h.prom.setLoad("blue", 100) }, autoscale.KindNoData},
		{"several series",
			func(h *harness) {
				h.prom.set(func(q *querier) {
					q.answer = func(string, time.Time) (autoscale.Sample, error) { return autoscale.Sample{}, autoscale.ErrBadResult }
				})
			},
			func(h *harness) { h.prom.set(func(q *querier) { q.answer = nil }) }, autoscale.KindBadData},
		{"NaN", func(h *harness) { h.prom.setLoad("blue", math.NaN()) }, func(h *harness) { h.prom.setLoad("blue", 100) }, autoscale.KindBadData},
		{"+Inf", func(h *harness) { h.prom.setLoad("blue", math.Inf(1)) }, func(h *harness) { h.prom.setLoad("blue", 100) }, autoscale.KindBadData},
		{"negative", func(h *harness) { h.prom.setLoad("blue", -3) }, func(h *harness) { h.prom.setLoad("blue", 100) }, autoscale.KindBadData},
		{"sample older than the time asked",
			func(h *harness) {
				h.prom.set(func(q *querier) {
					q.answer = func(expr string, at time.Time) (autoscale.Sample, error) {
						return autoscale.Sample{Value: 100, Time: at.Add(-2 * time.Minute)}, nil
					}
				})
			},
			func(h *harness) { h.prom.set(func(q *querier) { q.answer = nil }) }, autoscale.KindStaleData},
		{"newest sample too old (scrapes stopped)",
			func(h *harness) { h.prom.set(func(q *querier) { q.age = 61 }) },
			func(h *harness) { h.prom.set(func(q *querier) { q.age = 3 }) }, autoscale.KindStaleData},
		{"age query returns nothing",
			func(h *harness) {
				h.prom.set(func(q *querier) {
					q.answer = func(expr string, at time.Time) (autoscale.Sample, error) {
						if strings.HasPrefix(expr, "time()") {
							return autoscale.Sample{}, autoscale.ErrNoData
						}
						return autoscale.Sample{Value: 100, Time: at}, nil
					}
				})
			},
			func(h *harness) { h.prom.set(func(q *querier) { q.answer = nil }) }, autoscale.KindNoData},
		{"scale refused",
			func(h *harness) { h.svc.set(func(s *services) { s.scaleErr = errors.New("update out of sequence") }) },
			func(h *harness) { h.svc.set(func(s *services) { s.scaleErr = nil }) }, autoscale.KindScale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, options{clock: true})
			h.prom.setLoad("blue", 100)
			tt.breakIt(h)
			for i := range 3 {
				o := h.scaler.Tick(context.Background())
				if o.Reason != autoscale.ReasonError || o.Kind != tt.kind || o.Err == nil || o.Scaled {
					t.Fatalf("tick %d: %+v, want an error of kind %s", i, o, tt.kind)
				}
				h.now = h.now.Add(2 * time.Second)
			}
			calls := h.svc.scaleCalls()
			switch {
			case tt.kind != autoscale.KindScale && len(calls) != 0:
				t.Fatalf("scaled on an error: %v", calls)
			case tt.kind == autoscale.KindScale && (len(calls) != 3 || h.svc.count("blue_app") != 2):
				t.Fatalf("scale calls %v, blue_app %d; want 3 refused tries and the 2 it had", calls, h.svc.count("blue_app"))
			}
			if v := h.errorsOf(tt.kind); v != 3 {
				t.Fatalf("errors_total{kind=%s} = %v, want 3", tt.kind, v)
			}
			if warns := h.logs.warnings(t, tt.kind); len(warns) != 3 || warns[0]["reason"] != "error" || warns[0]["error"] == "" {
				t.Fatalf("errors logged: %v", warns)
			}
			tt.mend(h)
			if o := h.scaler.Tick(context.Background()); !o.Scaled || h.svc.count("blue_app") != 5 {
				t.Fatalf("after mending: %+v, blue_app %d; want it scaled to 5", o, h.svc.count("blue_app"))
			}
		})
	}
}

func TestAServiceAtZeroIsLeftAlone(t *testing.T) {
	h := newHarness(t, options{clock: true})
	h.svc.set(func(s *services) { s.replicas["blue_app"] = 0 })
	h.prom.setLoad("blue", 500)
	if o := h.scaler.Tick(context.Background()); o.Reason != autoscale.ReasonZeroReplicas || o.Scaled {
		t.Fatalf("%+v", o)
	}
	if calls := h.svc.scaleCalls(); len(calls) != 0 {
		t.Fatalf("scaled a service at 0: %v", calls)
	}
}

func TestLastTick(t *testing.T) {
	h := newHarness(t, options{clock: true})
	if !h.scaler.LastTick().IsZero() {
		t.Fatal("LastTick before any tick")
	}
	h.prom.setLoad("blue", 40)
	h.scaler.Tick(context.Background())
	if got := h.scaler.LastTick(); !got.Equal(t0) {
		t.Fatalf("LastTick %v, want %v", got, t0)
	}
	if v := h.metric("roomcast_autoscaler_last_tick_timestamp_seconds"); v != float64(t0.Unix()) {
		t.Fatalf("last tick gauge %v", v)
	}
}

func TestMetricsAreExportedFromStartAndLintClean(t *testing.T) {
	h := newHarness(t, options{clock: true})
	for _, k := range autoscale.Kinds {
		if v := h.errorsOf(k); v != 0 {
			t.Fatalf("errors_total{kind=%s} = %v at start", k, v)
		}
	}
	for _, d := range []string{"up", "down"} {
		if v := h.metric("roomcast_autoscaler_scale_events_total", "direction", d); v != 0 {
			t.Fatalf("scale_events_total{direction=%s} = %v at start", d, v)
		}
	}
	h.metric("roomcast_autoscaler_desired_replicas")
	problems, err := testutil.GatherAndLint(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	good := autoscale.Config{EdgeService: "edge_nginx", AppService: "{color}_app", Query: loadQuery,
		Policy: autoscale.Policy{Target: 1, Min: 1, Max: 2}, Interval: time.Second, Timeout: time.Second}
	deps := autoscale.Deps{Services: newServices("blue"), Querier: newQuerier(), Logger: slog.New(slog.DiscardHandler)}
	if _, err := autoscale.New(good, deps); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(c *autoscale.Config, d *autoscale.Deps){
		"no edge service":      func(c *autoscale.Config, _ *autoscale.Deps) { c.EdgeService = "" },
		"app without {color}":  func(c *autoscale.Config, _ *autoscale.Deps) { c.AppService = "app" },
		"no query":             func(c *autoscale.Config, _ *autoscale.Deps) { c.Query = "" },
		"no interval":          func(c *autoscale.Config, _ *autoscale.Deps) { c.Interval = 0 },
		"age query no max age": func(c *autoscale.Config, _ *autoscale.Deps) { c.AgeQuery = ageQuery },
		"bad policy":           func(c *autoscale.Config, _ *autoscale.Deps) { c.Policy.Max = 0 },
		"no querier":           func(_ *autoscale.Config, d *autoscale.Deps) { d.Querier = nil },
	} {
		c, d := good, deps
		change(&c, &d)
		if _, err := autoscale.New(c, d); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestATickCutShortByShutdownIsNotAnError(t *testing.T) {
	h := newHarness(t, options{clock: true})
	ctx, cancel := context.WithCancel(context.Background())
	h.prom.set(func(q *querier) { q.onQuery = cancel; q.err = context.Canceled })
	if o := h.scaler.Tick(ctx); o.Reason != autoscale.ReasonError || o.Scaled {
		t.Fatalf("%+v", o)
	}
	if v := h.errorsOf(autoscale.KindPrometheusAPI); v != 0 {
		t.Fatalf("a query cancelled by shutdown counted as a Prometheus error (%v)", v)
	}
	if v := h.metric("roomcast_autoscaler_decisions_total", "reason", "error"); v != 0 {
		t.Fatalf("counted as a decision (%v)", v)
	}
}
