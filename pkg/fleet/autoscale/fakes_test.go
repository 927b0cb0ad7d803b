package autoscale_test

// The loop with its real adapters (package swarm's Docker client, package promquery's
// Prometheus client) against the fakes of the Engine API (swarmtest) and of the
// Prometheus API (promtest), for the error paths: timeouts, 500s, missing services and
// labels, unusable answers.

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/fleet/autoscale"
	"roomcast/pkg/fleet/autoscale/promquery"
	"roomcast/pkg/fleet/autoscale/promtest"
	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm"
	"roomcast/pkg/fleet/swarm/swarmtest"
	"roomcast/pkg/testenv"
)

func ptr(n uint64) *uint64 { return &n }

// slowDocker sits in front of the fake Engine API; while hang is set, requests whose
// path matches it get no answer until the client gives up.
type slowDocker struct {
	srv  *httptest.Server
	hang atomic.Pointer[regexp.Regexp]
}

func newSlowDocker(t *testing.T, fake *swarmtest.Server) *slowDocker {
	t.Helper()
	target, err := url.Parse(strings.Replace(fake.Host(), "tcp://", "http://", 1))
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	s := &slowDocker{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if re := s.hang.Load(); re != nil && re.MatchString(r.URL.Path) {
			<-r.Context().Done()
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *slowDocker) host() string { return "tcp://" + s.srv.Listener.Addr().String() }

type world struct {
	t      *testing.T
	docker *swarmtest.Server
	slow   *slowDocker
	prom   *promtest.Server
	reg    *prometheus.Registry
	logs   *logBuffer
	scaler *autoscale.Autoscaler
	now    time.Time
}

// newWorld is edge_nginx (active blue) and blue_app at 2 on the fake Engine API, and a
// fake Prometheus answering 100 connections on blue, fresh.
func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, docker: swarmtest.NewServer(t), prom: promtest.NewServer(t), reg: prometheus.NewRegistry(), logs: &logBuffer{}, now: t0}
	w.docker.SetService("edge_nginx", map[string]string{bluegreen.LabelActive: "blue"}, ptr(1))
	w.docker.SetService("blue_app", map[string]string{"com.docker.stack.namespace": "blue"}, ptr(2))
	w.slow = newSlowDocker(t, w.docker)
	w.setLoad(promtest.Value(100, t0))
	w.setAge(promtest.Value(2, t0))

	docker, err := swarm.New(w.slow.host())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = docker.Close() })
	prom, err := promquery.New(w.prom.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prom.Close)
	w.scaler, err = autoscale.New(autoscale.Config{
		EdgeService: "edge_nginx",
		AppService:  "{color}_app",
		Query:       loadQuery,
		AgeQuery:    ageQuery,
		MaxDataAge:  time.Minute,
		Policy:      autoscale.Policy{Target: 20, Min: 2, Max: 20, Tolerance: 0.1, ScaleDownWindow: 20 * time.Second},
		Interval:    2 * time.Second,
		Timeout:     300 * time.Millisecond,
	}, autoscale.Deps{
		Services:   docker,
		Querier:    prom,
		Logger:     slog.New(slog.NewJSONHandler(w.logs, nil)),
		Registerer: w.reg,
		Now:        func() time.Time { return w.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) setLoad(r promtest.Response) { w.prom.Set(queryFor("blue"), r) }
func (w *world) setAge(r promtest.Response)  { w.prom.Set(ageFor("blue"), r) }

func (w *world) replicas() uint64 {
	n, _ := w.docker.Replicas("blue_app")
	return n
}

func (w *world) tick() autoscale.Outcome {
	o := w.scaler.Tick(context.Background())
	w.now = w.now.Add(2 * time.Second)
	return o
}

func TestAgainstFakesScalesThroughTheEngineAPI(t *testing.T) {
	w := newWorld(t)
	o := w.tick()
	if !o.Scaled || w.replicas() != 5 {
		t.Fatalf("outcome %+v, blue_app at %d; want it scaled to 5", o, w.replicas())
	}
	if l := w.docker.Labels("blue_app"); l["com.docker.stack.namespace"] != "blue" {
		t.Fatalf("scaling lost the service's labels: %v", l)
	}
	for _, r := range w.docker.Requests() {
		if !strings.HasSuffix(r, "/_ping") && !strings.Contains(r, "/v"+swarmtest.APIVersion+"/") {
			t.Errorf("request %q not on the negotiated API %s", r, swarmtest.APIVersion)
		}
	}
	var exprs []string
	for _, q := range w.prom.Queries() {
		exprs = append(exprs, q.Expr)
		if !q.Time.Equal(t0) {
			t.Errorf("query %q at %v, want the tick's time %v", q.Expr, q.Time, t0)
		}
	}
	if got, want := strings.Join(exprs, " | "), queryFor("blue")+" | "+ageFor("blue"); got != want {
		t.Fatalf("queries %q, want %q", got, want)
	}
	// Steady: nothing more to do.
	if o := w.tick(); o.Scaled || o.Reason != autoscale.ReasonWithinTolerance {
		t.Fatalf("second tick %+v", o)
	}
}

// hungTickBound bounds a tick against a server that never answers: far above the 300 ms
// timeout so that a loaded machine passes, far below "for ever", which is the bug it catches.
const hungTickBound = 20 * time.Second

func TestAgainstFakesErrorsKeepTheCount(t *testing.T) {
	tests := []struct {
		name     string
		breakIt  func(w *world)
		mend     func(w *world)
		kind     string
		maxTicks time.Duration // bound on one failing tick
	}{
		{"Docker 500 on the nginx service",
			func(w *world) { w.docker.Fail(`^/services/edge_nginx$`, 500, -1) },
			func(w *world) { w.docker.Fail(`^/services/edge_nginx$`, 0, 0) }, autoscale.KindDockerAPI, 0},
		{"Docker 500 on the app service",
			func(w *world) { w.docker.Fail(`^/services/blue_app$`, 500, -1) },
			func(w *world) { w.docker.Fail(`^/services/blue_app$`, 0, 0) }, autoscale.KindDockerAPI, 0},
		{"Docker times out",
			func(w *world) { w.slow.hang.Store(regexp.MustCompile(`/services/blue_app$`)) },
			func(w *world) { w.slow.hang.Store(nil) }, autoscale.KindDockerAPI, hungTickBound},
		{"Docker refuses the update",
			func(w *world) { w.docker.Fail(`/update$`, 500, -1) },
			func(w *world) { w.docker.Fail(`/update$`, 0, 0) }, autoscale.KindScale, 0},
		{"app service missing",
			func(w *world) { w.docker.RemoveService("blue_app") },
			func(w *world) { w.docker.SetService("blue_app", nil, ptr(2)) }, autoscale.KindServiceNotFound, 0},
		{"nginx service missing",
			func(w *world) { w.docker.RemoveService("edge_nginx") },
			func(w *world) {
				w.docker.SetService("edge_nginx", map[string]string{bluegreen.LabelActive: "blue"}, ptr(1))
			}, autoscale.KindServiceNotFound, 0},
		{"label missing",
			func(w *world) {
				w.docker.SetService("edge_nginx", map[string]string{"roomcast.previous": "green"}, ptr(1))
			},
			func(w *world) { w.docker.SetLabel("edge_nginx", bluegreen.LabelActive, "blue") }, autoscale.KindLabelMissing, 0},
		{"app service global",
			func(w *world) { w.docker.SetService("blue_app", nil, nil) },
			func(w *world) { w.docker.SetService("blue_app", nil, ptr(2)) }, autoscale.KindNotReplicated, 0},
		{"Prometheus 500",
			func(w *world) { w.setLoad(promtest.Raw(500, "text/plain", "internal error")) },
			func(w *world) { w.setLoad(promtest.Value(100, t0)) }, autoscale.KindPrometheusAPI, 0},
		{"Prometheus 503",
			func(w *world) { w.setLoad(promtest.Error(503, "unavailable", "not ready")) },
			func(w *world) { w.setLoad(promtest.Value(100, t0)) }, autoscale.KindPrometheusAPI, 0},
		{"Prometheus times out",
			func(w *world) { w.setLoad(promtest.Hang()) },
			func(w *world) { w.setLoad(promtest.Value(100, t0)) }, autoscale.KindPrometheusAPI, hungTickBound},
		{"bad PromQL",
			func(w *world) { w.setLoad(promtest.Error(400, "bad_data", "parse error")) },
			func(w *world) { w.setLoad(promtest.Value(100, t0)) }, autoscale.KindPrometheusAPI, 0},
		{"empty result",
			func(w *world) { w.setLoad(promtest.Empty()) },
			func(w *world) { w.setLoad(promtest.Value(100, t0)) }, autoscale.KindNoData, 0},
		{"NaN",
			func(w *world) { w.setLoad(promtest.Value(math.NaN(), t0)) },
			func(w *world) { w.setLoad(promtest.Value(100, t0)) }, autoscale.KindBadData, 0},
		{"several series",
			func(w *world) { w.setLoad(promtest.Values(t0, 50, 50)) },
			func(w *world) { w.setLoad(promtest.Value(100, t0)) }, autoscale.KindBadData, 0},
		{"sample from long before the tick",
			func(w *world) { w.setLoad(promtest.Value(100, t0.Add(-10*time.Minute))) },
			func(w *world) { w.setLoad(promtest.Value(100, t0)) }, autoscale.KindStaleData, 0},
		{"scrapes stopped five minutes ago",
			func(w *world) { w.setAge(promtest.Value(300, t0)) },
			func(w *world) { w.setAge(promtest.Value(2, t0)) }, autoscale.KindStaleData, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			// Samples are stamped t0; the ticks here run within seconds of it.
			tt.breakIt(w)
			for i := range 2 {
				began := time.Now()
				o := w.tick()
				if o.Reason != autoscale.ReasonError || o.Kind != tt.kind || o.Scaled {
					t.Fatalf("tick %d: %+v (%v), want kind %s", i, o, o.Err, tt.kind)
				}
				if tt.maxTicks > 0 && time.Since(began) > tt.maxTicks {
					t.Fatalf("a tick took %v", time.Since(began))
				}
			}
			if n := w.replicas(); n != 2 && tt.kind != autoscale.KindServiceNotFound && tt.kind != autoscale.KindNotReplicated {
				t.Fatalf("blue_app at %d after errors, want the 2 it had", n)
			}
			if v := testenv.Metric(t, w.reg, "roomcast_autoscaler_errors_total", "kind", tt.kind); v != 2 {
				t.Fatalf("errors_total{kind=%s} = %v, want 2", tt.kind, v)
			}
			if warns := w.logs.warnings(t, tt.kind); len(warns) != 2 {
				t.Fatalf("%d warnings of kind %s logged, want 2", len(warns), tt.kind)
			}
			tt.mend(w)
			w.now = t0.Add(4 * time.Second)
			if o := w.tick(); !o.Scaled || w.replicas() != 5 {
				t.Fatalf("after mending: %+v (%v), blue_app at %d; want 5", o, o.Err, w.replicas())
			}
		})
	}
}

func TestAgainstFakesPausedDuringARelease(t *testing.T) {
	w := newWorld(t)
	w.docker.SetLabel("edge_nginx", bluegreen.LabelPromoting, "true")
	for range 3 {
		if o := w.tick(); o.Reason != autoscale.ReasonPaused || o.Scaled {
			t.Fatalf("%+v", o)
		}
	}
	if n := len(w.prom.Queries()); n != 0 || w.replicas() != 2 {
		t.Fatalf("%d queries and blue_app at %d during a release", n, w.replicas())
	}
	if n := w.docker.Count("/update"); n != 0 {
		t.Fatalf("%d updates during a release", n)
	}
	// `just promote` clears the label with --label-rm.
	w.docker.SetService("edge_nginx", map[string]string{bluegreen.LabelActive: "blue"}, ptr(1))
	if o := w.tick(); !o.Scaled || w.replicas() != 5 {
		t.Fatalf("after the release: %+v", o)
	}
}

func TestAgainstFakesPrometheusUnreachable(t *testing.T) {
	w := newWorld(t)
	w.prom.Close()
	for range 2 {
		if o := w.tick(); o.Kind != autoscale.KindPrometheusAPI || !strings.Contains(o.Err.Error(), "connect") {
			t.Fatalf("%+v", o)
		}
	}
	if w.replicas() != 2 {
		t.Fatalf("blue_app at %d", w.replicas())
	}
}
