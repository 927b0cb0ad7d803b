package autoscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm"
)

// Error kinds of roomcast_autoscaler_errors_total. Each one keeps the current count.
const (
	KindDockerAPI       = "docker_api"        // reading a service failed (daemon down, timeout, 5xx)
	KindServiceNotFound = "service_not_found" // the nginx or the app service does not exist
	KindNotReplicated   = "not_replicated"    // the app service is global: no count to set
	KindLabelMissing    = "label_missing"     // the nginx service has no roomcast.active
	KindBadLabel        = "bad_label"         // roomcast.active is not a color
	KindPrometheusAPI   = "prometheus_api"    // a query failed (unreachable, timeout, error answer)
	KindNoData          = "no_data"           // a query returned nothing
	KindBadData         = "bad_data"          // not one finite number of 0 or more
	KindStaleData       = "stale_data"        // the newest sample is older than MaxDataAge
	KindScale           = "scale"             // the scale request itself failed
)

// Kinds lists every error kind, for metrics exported from start.
var Kinds = []string{KindDockerAPI, KindServiceNotFound, KindNotReplicated, KindLabelMissing,
	KindBadLabel, KindPrometheusAPI, KindNoData, KindBadData, KindStaleData, KindScale}

// ErrNoData is what a Querier returns for a query whose result is empty.
var ErrNoData = errors.New("query returned no data")

// ErrBadResult is what a Querier returns for a result that is not one number (several
// series, a range, a string).
var ErrBadResult = errors.New("query result is not one number")

// Services reads and scales Swarm services (implemented by *swarm.Client).
type Services interface {
	// ServiceLabels returns the service's labels; swarm.ErrServiceNotFound when it
	// does not exist.
	ServiceLabels(ctx context.Context, name string) (map[string]string, error)
	// ServiceReplicas returns the desired replica count; swarm.ErrServiceNotFound or
	// swarm.ErrNotReplicated.
	ServiceReplicas(ctx context.Context, name string) (uint64, error)
	// ScaleService sets the desired replica count.
	ScaleService(ctx context.Context, name string, replicas uint64) error
}

// Sample is the value of an instant query and the time of that value.
type Sample struct {
	Value float64
	Time  time.Time
	// Warnings are what Prometheus warned about (e.g. a partial answer).
	Warnings []string
}

// Querier evaluates PromQL instant queries (implemented by package promquery).
type Querier interface {
	// Query evaluates expr at time at and returns its single value: ErrNoData for an
	// empty result, ErrBadResult for one that is not one number, another error when
	// Prometheus could not be asked or refused.
	Query(ctx context.Context, expr string, at time.Time) (Sample, error)
}

// Config is what the autoscaler does.
type Config struct {
	// EdgeService is the nginx service carrying bluegreen.LabelActive and bluegreen.LabelPromoting.
	EdgeService string
	// AppService is the app service of a color, with bluegreen.ColorPlaceholder.
	AppService string
	// Query is the PromQL of the color's load (the sum over its replicas), with
	// bluegreen.ColorPlaceholder.
	Query string
	// AgeQuery, when set, is PromQL giving the age in seconds of the color's newest
	// raw sample, with bluegreen.ColorPlaceholder; above MaxDataAge the data is stale.
	AgeQuery string
	// MaxDataAge is the oldest data acted on: the age query's answer, and how far the
	// load sample's own time may lag the evaluation time.
	MaxDataAge time.Duration
	// Policy is the HPA rule's parameters.
	Policy Policy
	// Interval is the loop period.
	Interval time.Duration
	// Timeout bounds each Docker call and each Prometheus query.
	Timeout time.Duration
	// DryRun decides and logs, and never scales.
	DryRun bool
}

// Deps are the autoscaler's collaborators; Now and Registerer have defaults.
type Deps struct {
	Services   Services
	Querier    Querier
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Autoscaler is the loop. Create it with New.
type Autoscaler struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	// Loop state, owned by the goroutine running Run or Tick.
	color   string // color the window belongs to; "" before the first good tick
	resume  bool   // a pause ended: start a new window
	history []Recommendation

	mu       sync.Mutex
	lastTick time.Time

	desiredGauge prometheus.Gauge
	currentGauge prometheus.Gauge
	loadGauge    prometheus.Gauge
	pausedGauge  prometheus.Gauge
	tickGauge    prometheus.Gauge
	scaleEvents  *prometheus.CounterVec
	errorsTotal  *prometheus.CounterVec
	decisions    *prometheus.CounterVec
}

// New checks cfg and returns an Autoscaler; nothing runs until Run or Tick.
func New(cfg Config, deps Deps) (*Autoscaler, error) {
	switch {
	case cfg.EdgeService == "":
		return nil, errors.New("autoscale: no nginx service name")
	case !strings.Contains(cfg.AppService, bluegreen.ColorPlaceholder):
		return nil, fmt.Errorf("autoscale: app service pattern %q lacks %s", cfg.AppService, bluegreen.ColorPlaceholder)
	case cfg.Query == "":
		return nil, errors.New("autoscale: no load query")
	case cfg.Interval <= 0 || cfg.Timeout <= 0:
		return nil, errors.New("autoscale: interval and timeout must be positive")
	case cfg.AgeQuery != "" && cfg.MaxDataAge <= 0:
		return nil, errors.New("autoscale: an age query needs a positive MaxDataAge")
	case deps.Services == nil || deps.Querier == nil || deps.Logger == nil:
		return nil, errors.New("autoscale: Services, Querier and Logger are required")
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("autoscale: %w", err)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.NewRegistry()
	}
	f := promauto.With(deps.Registerer)
	a := &Autoscaler{
		cfg:  cfg,
		deps: deps,
		log:  deps.Logger,
		desiredGauge: f.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_autoscaler_desired_replicas",
			Help: "Replica count the last decision wanted for the active color (the current count when it kept it).",
		}),
		currentGauge: f.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_autoscaler_current_replicas",
			Help: "Replica count of the active color's service at the last decision.",
		}),
		loadGauge: f.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_autoscaler_load",
			Help: "Load of the active color at the last decision (the value of the load query).",
		}),
		pausedGauge: f.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_autoscaler_paused",
			Help: "1 while the nginx service carries roomcast.promoting=true (a release is under way).",
		}),
		tickGauge: f.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_autoscaler_last_tick_timestamp_seconds",
			Help: "When the last tick ended (Unix time), whatever it decided.",
		}),
		scaleEvents: f.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_autoscaler_scale_events_total",
			Help: "Replica count changes made, by direction (up or down).",
		}, []string{"direction"}),
		errorsTotal: f.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_autoscaler_errors_total",
			Help: "Ticks that kept the current count because of an error or unusable data, by kind.",
		}, []string{"kind"}),
		decisions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_autoscaler_decisions_total",
			Help: "Decisions by reason.",
		}, []string{"reason"}),
	}
	for _, d := range []string{"up", "down"} {
		a.scaleEvents.WithLabelValues(d)
	}
	for _, k := range Kinds {
		a.errorsTotal.WithLabelValues(k)
	}
	for _, r := range Reasons {
		a.decisions.WithLabelValues(string(r))
	}
	return a, nil
}

// Run ticks at once and then every Interval until ctx is done, and returns nil. A tick
// that outlasts the interval delays the next one; ticks never overlap.
func (a *Autoscaler) Run(ctx context.Context) error {
	a.log.Info("autoscaler running", "interval", a.cfg.Interval.String(), "dry_run", a.cfg.DryRun)
	ticker := time.NewTicker(a.cfg.Interval)
	defer ticker.Stop()
	for {
		a.Tick(ctx)
		select {
		case <-ctx.Done():
			a.log.Info("autoscaler stopped")
			return nil
		case <-ticker.C:
		}
	}
}

// LastTick is when the last tick ended; the zero time before the first.
func (a *Autoscaler) LastTick() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastTick
}

// Outcome is what one tick did.
type Outcome struct {
	Color   string // active color, when it was read
	Service string // its app service
	Reason  Reason
	// Decision is set when Decide ran.
	Decision *Decision
	// Scaled is set when the replica count was changed.
	Scaled bool
	// Kind and Err are set for ReasonError.
	Kind string
	Err  error
}

// Tick runs one step: read the labels, pause during a release, read the count, query
// the load, decide, and scale when the decision changes the count (re-reading the
// labels first, so that a release that began meanwhile is left alone).
func (a *Autoscaler) Tick(ctx context.Context) Outcome {
	o := a.tick(ctx)
	if ctx.Err() != nil && o.Reason == ReasonError {
		return o // shutdown, not a decision
	}
	now := a.deps.Now()
	a.mu.Lock()
	a.lastTick = now
	a.mu.Unlock()
	a.tickGauge.Set(float64(now.UnixNano()) / 1e9)
	a.decisions.WithLabelValues(string(o.Reason)).Inc()
	return o
}

func (a *Autoscaler) tick(ctx context.Context) Outcome {
	color, paused, kind, err := a.readLabels(ctx)
	if err != nil {
		return a.fail(ctx, Outcome{}, kind, err, -1)
	}
	o := Outcome{Color: color, Service: bluegreen.ForColor(a.cfg.AppService, color)}
	if paused {
		return a.pause(o)
	}
	a.pausedGauge.Set(0)

	current, kind, err := a.replicas(ctx, o.Service)
	if err != nil {
		return a.fail(ctx, o, kind, err, -1)
	}
	now := a.deps.Now()
	if a.color != color || a.resume {
		// A new target (first tick, color change, end of a release): its window starts
		// with its current count, so nothing scales down within a window of it.
		if a.color != color {
			a.log.Info("following the active color", "color", color, "service", o.Service, "previous", a.color, "current", current)
		}
		a.color, a.resume, a.history = color, false, Seed(now, current)
	}

	load, kind, err := a.load(ctx, color, now)
	if err != nil {
		return a.fail(ctx, o, kind, err, current)
	}
	d := Decide(a.cfg.Policy, a.history, now, current, load)
	a.history = d.History
	o.Decision, o.Reason = &d, d.Reason
	a.currentGauge.Set(float64(current))
	a.loadGauge.Set(load)
	a.desiredGauge.Set(float64(d.Desired))
	a.log.Info("decision", "color", color, "service", o.Service, "reason", string(d.Reason),
		"load", load, "load_per_replica", round(d.LoadPerReplica), "target", a.cfg.Policy.Target,
		"ratio", round(d.Ratio), "current", current, "recommendation", d.Recommendation,
		"stabilized", d.Stabilized, "desired", d.Desired, "step_limited", d.StepLimited, "dry_run", a.cfg.DryRun)
	if d.Desired == current || a.cfg.DryRun {
		return o
	}

	// Look again right before acting: a release may have begun during this tick.
	color2, paused, kind, err := a.readLabels(ctx)
	switch {
	case err != nil:
		return a.fail(ctx, o, kind, err, current)
	case paused:
		return a.pause(o)
	case color2 != color:
		a.log.Info("active color changed during the tick; not scaling", "color", color, "now", color2)
		return o
	}
	sctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	err = a.deps.Services.ScaleService(sctx, o.Service, uint64(d.Desired))
	cancel()
	if err != nil {
		return a.fail(ctx, o, KindScale, err, current)
	}
	direction := "up"
	if d.Desired < current {
		direction = "down"
	}
	a.scaleEvents.WithLabelValues(direction).Inc()
	a.currentGauge.Set(float64(d.Desired))
	a.log.Info("scaled", "service", o.Service, "from", current, "to", d.Desired, "direction", direction, "reason", string(d.Reason))
	o.Scaled = true
	return o
}

func (a *Autoscaler) pause(o Outcome) Outcome {
	a.pausedGauge.Set(1)
	if !a.resume {
		a.log.Info("release under way: paused", "label", bluegreen.LabelPromoting+"=true", "service", a.cfg.EdgeService)
	}
	a.resume = true
	o.Reason = ReasonPaused
	msg := "decision"
	if o.Decision != nil {
		msg = "not scaled" // the decision was logged already; the release began since
	}
	a.log.Info(msg, "color", o.Color, "service", o.Service, "reason", string(ReasonPaused))
	return o
}

// fail counts and logs an error tick; current is -1 when it is not known. A tick cut
// short because ctx ended (shutdown) is not an error of Docker or Prometheus.
func (a *Autoscaler) fail(ctx context.Context, o Outcome, kind string, err error, current int) Outcome {
	o.Reason, o.Kind, o.Err = ReasonError, kind, err
	if ctx.Err() != nil {
		a.log.Debug("tick cut short", "kind", kind, "error", err.Error())
		return o
	}
	a.errorsTotal.WithLabelValues(kind).Inc()
	attrs := []any{"reason", string(ReasonError), "kind", kind, "error", err.Error()}
	if o.Color != "" {
		attrs = append(attrs, "color", o.Color, "service", o.Service)
	}
	if current >= 0 {
		attrs = append(attrs, "current", current, "desired", current)
		a.currentGauge.Set(float64(current))
		a.desiredGauge.Set(float64(current))
	}
	msg := "decision"
	if o.Decision != nil {
		msg = "not scaled" // the decision itself was logged already
	}
	a.log.Warn(msg, append(attrs, "action", "keeping the current count; retrying next tick")...)
	return o
}

func (a *Autoscaler) readLabels(ctx context.Context) (color string, paused bool, kind string, err error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	labels, err := a.deps.Services.ServiceLabels(ctx, a.cfg.EdgeService)
	switch {
	case errors.Is(err, swarm.ErrServiceNotFound):
		return "", false, KindServiceNotFound, err
	case err != nil:
		return "", false, KindDockerAPI, err
	}
	color, ok := labels[bluegreen.LabelActive]
	paused = labels[bluegreen.LabelPromoting] == "true"
	switch {
	case !ok:
		return "", paused, KindLabelMissing, fmt.Errorf("service %s has no label %s", a.cfg.EdgeService, bluegreen.LabelActive)
	case !bluegreen.ValidColor(color):
		return "", paused, KindBadLabel, fmt.Errorf("label %s=%q of service %s is not one of %v", bluegreen.LabelActive, color, a.cfg.EdgeService, bluegreen.Colors)
	}
	return color, paused, "", nil
}

func (a *Autoscaler) replicas(ctx context.Context, service string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	n, err := a.deps.Services.ServiceReplicas(ctx, service)
	switch {
	case errors.Is(err, swarm.ErrServiceNotFound):
		return 0, KindServiceNotFound, err
	case errors.Is(err, swarm.ErrNotReplicated):
		return 0, KindNotReplicated, err
	case err != nil:
		return 0, KindDockerAPI, err
	case n > math.MaxInt32:
		return 0, KindDockerAPI, fmt.Errorf("service %s has %d replicas", service, n)
	}
	return int(n), "", nil
}

// load queries the color's load at now and checks that it is fresh.
func (a *Autoscaler) load(ctx context.Context, color string, now time.Time) (float64, string, error) {
	q := bluegreen.ForColor(a.cfg.Query, color)
	s, kind, err := a.query(ctx, q, now)
	if err != nil {
		return 0, kind, err
	}
	if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) || s.Value < 0 {
		return 0, KindBadData, fmt.Errorf("load query %q returned %v, want a finite number of 0 or more", q, s.Value)
	}
	if a.cfg.MaxDataAge > 0 && !s.Time.IsZero() && now.Sub(s.Time) > a.cfg.MaxDataAge {
		return 0, KindStaleData, fmt.Errorf("load query %q answered for %s, %s before the time asked", q,
			s.Time.UTC().Format(time.RFC3339), now.Sub(s.Time).Round(time.Millisecond))
	}
	if a.cfg.AgeQuery != "" {
		aq := bluegreen.ForColor(a.cfg.AgeQuery, color)
		age, kind, err := a.query(ctx, aq, now)
		if err != nil {
			return 0, kind, err
		}
		if math.IsNaN(age.Value) || math.IsInf(age.Value, 0) {
			return 0, KindBadData, fmt.Errorf("age query %q returned %v", aq, age.Value)
		}
		if d := time.Duration(age.Value * float64(time.Second)); d > a.cfg.MaxDataAge {
			return 0, KindStaleData, fmt.Errorf("newest sample of %s is %s old (age query %q), more than %s",
				color, d.Round(time.Millisecond), aq, a.cfg.MaxDataAge)
		}
	}
	return s.Value, "", nil
}

func (a *Autoscaler) query(ctx context.Context, q string, now time.Time) (Sample, string, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	s, err := a.deps.Querier.Query(ctx, q, now)
	switch {
	case errors.Is(err, ErrNoData):
		return s, KindNoData, err
	case errors.Is(err, ErrBadResult):
		return s, KindBadData, err
	case err != nil:
		return s, KindPrometheusAPI, err
	}
	if len(s.Warnings) > 0 {
		a.log.Debug("prometheus warnings", "query", q, "warnings", s.Warnings)
	}
	return s, "", nil
}

// round keeps log lines readable.
func round(f float64) float64 { return math.Round(f*1000) / 1000 }
