package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm"
)

// ReleaseLabels are the labels of the nginx service a Controller serves: the release
// state, and nothing else of the service.
var ReleaseLabels = []string{bluegreen.LabelActive, bluegreen.LabelPrevious, bluegreen.LabelPromoting}

// LabelsPath is the Controller's read-only endpoint of the desired state.
const LabelsPath = "/v1/labels"

// Desired is what a Controller serves at LabelsPath: the nginx service's release
// labels and a version that changes whenever they (or Found) change.
type Desired struct {
	Version uint64 `json:"version"`
	Service string `json:"service"`
	// Found is false when the service does not exist (Labels is then empty).
	Found  bool              `json:"found"`
	Labels map[string]string `json:"labels"`
}

// ControllerConfig is what a Controller follows and how long a long poll may wait.
type ControllerConfig struct {
	// Service is the nginx service whose ReleaseLabels are served.
	Service string
	// PollInterval is how often the labels are read besides events.
	PollInterval time.Duration
	// MaxWait bounds a long poll (?after=VERSION); a longer ?wait= is cut to it.
	MaxWait time.Duration
}

// Controller alone holds the Docker API: it follows the nginx service's labels
// (events, a poll, and a resync whenever the event stream is lost, as Edge does) and
// serves them read-only over HTTP to the nginx tasks, whose Edge reads them through a
// ControllerClient. A Docker API failure keeps the last labels read: the nginx tasks
// keep their config, as they did when they read Docker themselves.
//
// Concurrency: Run refreshes from one goroutine (plus one that reads events); the
// Handler serves any number of requests at once.
type Controller struct {
	cfg ControllerConfig
	svc Services
	log *slog.Logger

	mu      sync.Mutex
	desired *Desired      // nil before the first successful read
	changed chan struct{} // closed and replaced when desired changes

	errorsTotal *prometheus.CounterVec
	version     prometheus.Gauge
}

// Error kinds of roomcast_edge_controller_errors_total.
var controllerKinds = []string{KindDockerAPI, KindEventStream}

// NewController checks cfg and returns a Controller; nothing runs until Run. reg may
// be nil.
func NewController(cfg ControllerConfig, svc Services, log *slog.Logger, reg prometheus.Registerer) (*Controller, error) {
	switch {
	case cfg.Service == "":
		return nil, errors.New("edge controller: no nginx service name")
	case cfg.PollInterval <= 0 || cfg.MaxWait <= 0:
		return nil, errors.New("edge controller: poll interval and max wait must be positive")
	case svc == nil || log == nil:
		return nil, errors.New("edge controller: Services and Logger are required")
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	c := &Controller{
		cfg:     cfg,
		svc:     svc,
		log:     log,
		changed: make(chan struct{}),
		errorsTotal: f.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_edge_controller_errors_total",
			Help: "Docker API and event stream failures of the edge controller, by kind; the last labels read are kept.",
		}, []string{"kind"}),
		version: f.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_edge_controller_version",
			Help: "Version of the release labels served to the nginx tasks (changes with them).",
		}),
	}
	for _, k := range controllerKinds {
		c.errorsTotal.WithLabelValues(k)
	}
	return c, nil
}

// Run follows the service until ctx is done; it returns nil then.
func (c *Controller) Run(ctx context.Context) error {
	kicks := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		follow(ctx, c.svc, c.cfg.Service, c.log, kicks, func(err error, retryIn time.Duration) {
			c.count(KindEventStream, "event stream lost, polling until it is back", err, "retry_in", retryIn.String())
		})
	})
	ticker := time.NewTicker(c.cfg.PollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kicks:
		case <-ticker.C:
		}
		c.refresh(ctx)
	}
}

// refresh reads the labels and publishes them when they changed.
func (c *Controller) refresh(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, apiTimeout)
	labels, err := c.svc.ServiceLabels(rctx, c.cfg.Service)
	cancel()
	next := Desired{Service: c.cfg.Service, Labels: map[string]string{}}
	switch {
	case errors.Is(err, swarm.ErrServiceNotFound):
	case err != nil:
		if ctx.Err() == nil {
			c.count(KindDockerAPI, "labels not read, serving the last ones", err)
		}
		return
	default:
		next.Found = true
		for _, k := range ReleaseLabels {
			if v, ok := labels[k]; ok {
				next.Labels[k] = v
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.desired
	if prev != nil && prev.Found == next.Found && maps.Equal(prev.Labels, next.Labels) {
		return
	}
	// A version from the clock, so that a restarted controller does not repeat the
	// version a waiting nginx task already holds.
	next.Version = uint64(time.Now().UnixNano())
	if prev != nil && next.Version <= prev.Version {
		next.Version = prev.Version + 1
	}
	c.desired = &next
	close(c.changed)
	c.changed = make(chan struct{})
	c.version.Set(float64(next.Version))
	c.log.Info("release labels", "service", next.Service, "found", next.Found, "labels", next.Labels, "version", next.Version)
}

// current returns the desired state (nil before the first read) and a channel closed
// when it changes.
func (c *Controller) current() (*Desired, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.desired, c.changed
}

// Handler serves GET LabelsPath (with ?after=VERSION it waits, at most ?wait= or
// MaxWait, until the version differs from VERSION, then answers with whatever is
// current) and GET /healthz (200 once the labels have been read). Nothing changes
// anything.
func (c *Controller) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+LabelsPath, c.serveLabels)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if d, _ := c.current(); d == nil {
			http.Error(w, "labels not read yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

func (c *Controller) serveLabels(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	wait := c.cfg.MaxWait
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			http.Error(w, "wait: want a duration such as 20s", http.StatusBadRequest)
			return
		}
		wait = min(d, c.cfg.MaxWait)
	}
	d, changed := c.current()
	if s := q.Get("after"); s != "" && d != nil {
		after, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			http.Error(w, "after: want a version", http.StatusBadRequest)
			return
		}
		if after == d.Version {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-changed:
			case <-t.C:
			case <-r.Context().Done():
				return
			}
			d, _ = c.current()
		}
	}
	if d == nil {
		http.Error(w, "labels not read yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(d)
}

func (c *Controller) count(kind, msg string, err error, attrs ...any) {
	c.errorsTotal.WithLabelValues(kind).Inc()
	c.log.Warn(msg, append([]any{"kind", kind, "error", err.Error(), "service", c.cfg.Service}, attrs...)...)
}
