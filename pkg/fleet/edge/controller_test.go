package edge_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/edge"
	"roomcast/pkg/fleet/swarm"
	"roomcast/pkg/fleet/swarm/swarmtest"
	"roomcast/pkg/testenv"
)

// ctrlHarness is a Controller on fake services, its handler called in process (so
// that it runs in a synctest bubble).
type ctrlHarness struct {
	svc     *fakeServices
	ctrl    *edge.Controller
	handler http.Handler
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan struct{}
}

// newCtrl starts a Controller (poll 1h, long polls at most 30s) on svc; it stops in
// t.Cleanup.
func newCtrl(t *testing.T, svc *fakeServices) *ctrlHarness {
	t.Helper()
	h := &ctrlHarness{svc: svc, reg: prometheus.NewRegistry(), done: make(chan struct{})}
	var err error
	h.ctrl, err = edge.NewController(edge.ControllerConfig{Service: "edge_nginx", PollInterval: time.Hour, MaxWait: 30 * time.Second},
		svc, newLogger(io.Discard), h.reg)
	if err != nil {
		t.Fatal(err)
	}
	h.handler = h.ctrl.Handler()
	var ctx context.Context
	ctx, h.cancel = context.WithCancel(context.Background())
	go func() {
		defer close(h.done)
		if err := h.ctrl.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { h.cancel(); <-h.done })
	return h
}

// pending is a request being served in its own goroutine.
type pending struct {
	rec  *httptest.ResponseRecorder
	done atomic.Bool
}

func (h *ctrlHarness) start(target string) *pending {
	p := &pending{rec: httptest.NewRecorder()}
	req := httptest.NewRequest(http.MethodGet, target, nil)
	go func() {
		h.handler.ServeHTTP(p.rec, req)
		p.done.Store(true)
	}()
	return p
}

func (h *ctrlHarness) get(t *testing.T, target string) (int, edge.Desired) {
	t.Helper()
	p := h.start(target)
	synctest.Wait()
	if !p.done.Load() {
		t.Fatalf("GET %s did not answer at once", target)
	}
	return p.decode(t)
}

func (p *pending) decode(t *testing.T) (int, edge.Desired) {
	t.Helper()
	var d edge.Desired
	if p.rec.Code == http.StatusOK {
		if err := json.Unmarshal(p.rec.Body.Bytes(), &d); err != nil {
			t.Fatalf("decoding %q: %v", p.rec.Body, err)
		}
	}
	return p.rec.Code, d
}

func (h *ctrlHarness) errorsOf(t *testing.T, kind string) float64 {
	return testenv.Metric(t, h.reg, "roomcast_edge_controller_errors_total", "kind", kind)
}

func TestControllerServesOnlyTheReleaseLabels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newCtrl(t, newFakeServices(map[string]string{
			bluegreen.LabelActive: "blue", bluegreen.LabelPrevious: "green", bluegreen.LabelPromoting: "false",
			"roomcast.lock": "ci@host 2026-12-06", "com.docker.stack.namespace": "edge",
		}))
		synctest.Wait()
		code, d := h.get(t, edge.LabelsPath)
		want := map[string]string{bluegreen.LabelActive: "blue", bluegreen.LabelPrevious: "green", bluegreen.LabelPromoting: "false"}
		if code != http.StatusOK || !d.Found || d.Service != "edge_nginx" || !maps.Equal(d.Labels, want) || d.Version == 0 {
			t.Fatalf("got %d %+v, want 200 with %v", code, d, want)
		}
		p := h.start("/healthz")
		synctest.Wait()
		if p.rec.Code != http.StatusOK {
			t.Fatalf("/healthz: %d", p.rec.Code)
		}
	})
}

func TestControllerLongPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newCtrl(t, newFakeServices(map[string]string{bluegreen.LabelActive: "blue"}))
		synctest.Wait()
		_, first := h.get(t, edge.LabelsPath)

		// A change wakes a waiting poll at once.
		began := time.Now()
		p := h.start(edge.LabelsPath + "?after=" + strconv.FormatUint(first.Version, 10) + "&wait=20s")
		advance(time.Second)
		if p.done.Load() {
			t.Fatal("a poll on the current version answered before anything changed")
		}
		h.svc.set("green", true)
		synctest.Wait()
		if !p.done.Load() {
			t.Fatal("the flip did not wake the poll")
		}
		_, d := p.decode(t)
		if d.Labels[bluegreen.LabelActive] != "green" || d.Version == first.Version {
			t.Fatalf("woken with %+v, want green and a new version", d)
		}
		if took := time.Since(began); took != time.Second {
			t.Fatalf("answered after %s, want at the flip (1s)", took)
		}

		// Nothing changes: the poll answers the same version after its wait, and a
		// longer wait than MaxWait is cut to it.
		for _, tc := range []struct {
			wait string
			want time.Duration
		}{{"5s", 5 * time.Second}, {"10m", 30 * time.Second}, {"", 30 * time.Second}} {
			p := h.start(edge.LabelsPath + "?after=" + strconv.FormatUint(d.Version, 10) + "&wait=" + tc.wait)
			advance(tc.want - time.Millisecond)
			if p.done.Load() {
				t.Fatalf("wait=%q answered before %s", tc.wait, tc.want)
			}
			advance(time.Millisecond)
			if !p.done.Load() {
				t.Fatalf("wait=%q still waiting after %s", tc.wait, tc.want)
			}
			if _, same := p.decode(t); same.Version != d.Version || same.Labels[bluegreen.LabelActive] != "green" {
				t.Fatalf("wait=%q: %+v, want the same version %d", tc.wait, same, d.Version)
			}
		}

		// A poll on an old (or another controller's) version answers at once.
		if _, now := h.get(t, edge.LabelsPath+"?after="+strconv.FormatUint(first.Version, 10)); now.Version != d.Version {
			t.Fatalf("poll after an old version: %+v", now)
		}
	})
}

func TestControllerResyncsAfterTheEventStreamIsCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newCtrl(t, newFakeServices(map[string]string{bluegreen.LabelActive: "blue"}))
		synctest.Wait()
		_, first := h.get(t, edge.LabelsPath)
		p := h.start(edge.LabelsPath + "?after=" + strconv.FormatUint(first.Version, 10))
		// The flip happens while no stream is open: it is read when one opens again.
		h.svc.setRefuse(errors.New("connection refused"))
		h.svc.cut(errors.New("unexpected EOF"))
		h.svc.set("green", false)
		synctest.Wait()
		h.svc.setRefuse(nil)
		advance(5 * time.Second)
		if !p.done.Load() {
			t.Fatal("the waiting poll was not woken by the resync")
		}
		if _, d := p.decode(t); d.Labels[bluegreen.LabelActive] != "green" {
			t.Fatalf("after the resync: %+v", d)
		}
		if n := h.errorsOf(t, edge.KindEventStream); n < 1 {
			t.Fatalf("event_stream counted %v", n)
		}
	})
}

func TestControllerKeepsTheLastLabelsOnDockerErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newCtrl(t, newFakeServices(map[string]string{bluegreen.LabelActive: "blue"}))
		synctest.Wait()
		_, first := h.get(t, edge.LabelsPath)
		h.svc.setErr(errors.New("daemon unavailable"), false)
		h.svc.set("green", true)
		synctest.Wait()
		code, d := h.get(t, edge.LabelsPath)
		if code != http.StatusOK || d.Version != first.Version || d.Labels[bluegreen.LabelActive] != "blue" {
			t.Fatalf("during the Docker error: %d %+v, want the last labels", code, d)
		}
		if n := h.errorsOf(t, edge.KindDockerAPI); n != 1 {
			t.Fatalf("docker_api counted %v, want 1", n)
		}
		// The service removed: served as not found, with a new version.
		h.svc.setErr(nil, true)
		h.svc.set("green", true)
		synctest.Wait()
		if _, d := h.get(t, edge.LabelsPath); d.Found || len(d.Labels) != 0 || d.Version == first.Version {
			t.Fatalf("service gone: %+v", d)
		}
	})
}

func TestControllerRefusesBadRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFakeServices(map[string]string{bluegreen.LabelActive: "blue"})
		svc.setErr(errors.New("daemon unavailable"), false)
		h := newCtrl(t, svc)
		synctest.Wait()
		// Before the first read: nothing to serve, not healthy.
		for _, path := range []string{edge.LabelsPath, edge.LabelsPath + "?after=1", "/healthz"} {
			if code, _ := h.get(t, path); code != http.StatusServiceUnavailable {
				t.Fatalf("GET %s before the first read: %d, want 503", path, code)
			}
		}
		svc.setErr(nil, false)
		svc.set("blue", true)
		synctest.Wait()
		for _, tc := range []struct {
			method, target string
			want           int
		}{
			{http.MethodGet, edge.LabelsPath + "?after=x", http.StatusBadRequest},
			{http.MethodGet, edge.LabelsPath + "?after=1&wait=-1s", http.StatusBadRequest},
			{http.MethodGet, edge.LabelsPath + "?wait=soon", http.StatusBadRequest},
			{http.MethodPost, edge.LabelsPath, http.StatusMethodNotAllowed},
			{http.MethodPut, edge.LabelsPath, http.StatusMethodNotAllowed},
			{http.MethodDelete, edge.LabelsPath, http.StatusMethodNotAllowed},
			{http.MethodGet, "/v1/services", http.StatusNotFound},
		} {
			rec := httptest.NewRecorder()
			h.handler.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.target, nil))
			if rec.Code != tc.want {
				t.Errorf("%s %s: %d, want %d", tc.method, tc.target, rec.Code, tc.want)
			}
		}
	})
}

func TestControllerMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := edge.NewController(edge.ControllerConfig{Service: "edge_nginx", PollInterval: time.Second, MaxWait: time.Second},
		newFakeServices(nil), newLogger(io.Discard), reg); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
}

func TestNewControllerRefusesBadConfig(t *testing.T) {
	ok := edge.ControllerConfig{Service: "edge_nginx", PollInterval: time.Second, MaxWait: time.Second}
	for name, mod := range map[string]func(*edge.ControllerConfig){
		"no service":  func(c *edge.ControllerConfig) { c.Service = "" },
		"no poll":     func(c *edge.ControllerConfig) { c.PollInterval = 0 },
		"no max wait": func(c *edge.ControllerConfig) { c.MaxWait = 0 },
	} {
		cfg := ok
		mod(&cfg)
		if _, err := edge.NewController(cfg, newFakeServices(nil), newLogger(io.Discard), nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestEdgeThroughTheControllerOnTheEngineAPI runs the whole chain over real HTTP: the
// fake Engine API, the Controller on a swarm.Client, and a ControllerClient watching
// it as an Edge does.
func TestEdgeThroughTheControllerOnTheEngineAPI(t *testing.T) {
	fake := swarmtest.NewServer(t)
	one := uint64(1)
	fake.SetService("edge_nginx", map[string]string{bluegreen.LabelActive: "blue"}, &one)
	docker, err := swarm.New(fake.Host())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = docker.Close() })
	reg := prometheus.NewRegistry()
	ctrl, err := edge.NewController(edge.ControllerConfig{Service: "edge_nginx", PollInterval: time.Hour, MaxWait: 5 * time.Second},
		docker, newLogger(io.Discard), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = ctrl.Run(ctx) })
	srv := httptest.NewServer(ctrl.Handler())
	t.Cleanup(func() { cancel(); srv.Close(); wg.Wait() })

	client, err := edge.NewControllerClient(srv.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	labelIs := func(want string) bool {
		labels, err := client.ServiceLabels(ctx, "edge_nginx")
		return err == nil && labels[bluegreen.LabelActive] == want
	}
	waitFor(t, 5*time.Second, "blue served", func() bool { return labelIs("blue") })

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events, errs := client.WatchService(watchCtx, "edge_nginx")
	next := func(what string) {
		t.Helper()
		select {
		case _, ok := <-events:
			if !ok {
				t.Fatalf("%s: stream ended: %v", what, <-errs)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no event within 5s", what)
		}
	}
	// A label flip reaches the watcher through the long poll.
	fake.SetLabel("edge_nginx", bluegreen.LabelActive, "green")
	next("flip to green")
	if !labelIs("green") {
		t.Fatal("event without the new label")
	}
	// The controller's event stream is cut and the flip happens unseen: its resync
	// reads it and the watcher hears of it.
	fake.RefuseStreams(true)
	fake.CutStreams()
	fake.SetLabelQuietly("edge_nginx", bluegreen.LabelActive, "blue")
	fake.RefuseStreams(false)
	next("flip back while the stream was cut")
	if !labelIs("blue") {
		t.Fatal("resync event without the new label")
	}
	if n := testenv.Metric(t, reg, "roomcast_edge_controller_errors_total", "kind", edge.KindEventStream); n < 1 {
		t.Fatalf("event_stream counted %v", n)
	}
	// The controller goes away: the watcher's stream ends with ErrController.
	srv.CloseClientConnections()
	srv.Close()
	select {
	case _, ok := <-events:
		if ok {
			t.Fatal("event after the controller closed")
		}
		if err := <-errs; !errors.Is(err, edge.ErrController) {
			t.Fatalf("stream ended with %v, want ErrController", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("stream not ended after the controller closed")
	}
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
