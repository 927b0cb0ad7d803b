// Package edge keeps nginx routing to the active color. It reads the color from the
// nginx service's label roomcast.active (through Services: the edge Controller's HTTP
// API by a ControllerClient, so that the internet-facing task holds no Docker API, or
// package swarm directly), checks that the color's app service resolves in DNS, renders the nginx
// config from a template, has nginx test it, and starts nginx or reloads it in place.
// It then follows the label: Docker events wake it at once, a poll catches what the
// event stream missed, and the stream is reopened with backoff when it fails.
//
// It owns the nginx master process (a child, through Process) and the rendered config
// file. What it refuses (a color that does not resolve, a label value that is not a
// color, a config nginx rejects, Docker API errors) leaves the running config alone;
// it is logged, counted in roomcast_edge_errors_total{kind} and retried on the next
// event or poll. At start it waits, bounded, for the labelled color to resolve rather
// than route to a dead color, and it never falls back to an older color: the label
// is the only source of truth, and the default color is used only when the label is
// absent at start.
//
// It also owns the order of a stop, for the operator's load balancer: the health check
// /edgez (a file in Params.HealthDir that nginx serves) fails at once, nginx serves on
// for Config.DrainDelay, then stops accepting, and the WebSockets still open after
// Config.StopTimeout are closed rather than held for worker_shutdown_timeout.
//
// The Controller is the one component that holds the Docker API: it follows the same
// labels with the same events, poll and resync, and serves only the release labels,
// read-only, with a long poll that wakes the nginx tasks at once on a flip.
//
// Concurrency: Run drives everything from one goroutine (plus one that reads events);
// Abort and Applied may be called from any goroutine.
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm"
)

// Error kinds of roomcast_edge_errors_total.
const (
	KindDockerAPI       = "docker_api"        // reading the service failed
	KindController      = "controller"        // reading the edge controller failed
	KindServiceNotFound = "service_not_found" // the nginx service does not exist
	KindLabelMissing    = "label_missing"     // the label disappeared after start
	KindBadLabel        = "bad_label"         // the label is not a color
	KindUnresolved      = "unresolved"        // the color's app service does not resolve
	KindRender          = "render"            // the template could not be rendered or written
	KindConfigTest      = "config_test"       // nginx -t rejected the config
	KindReload          = "reload"            // nginx was not seen running the new config
	KindEventStream     = "event_stream"      // the Docker event stream failed or ended
)

var kinds = []string{KindDockerAPI, KindController, KindServiceNotFound, KindLabelMissing, KindBadLabel,
	KindUnresolved, KindRender, KindConfigTest, KindReload, KindEventStream}

// Services reads the nginx service (implemented by *swarm.Client, and by
// *ControllerClient without Docker).
type Services interface {
	// ServiceLabels returns the service's labels; swarm.ErrServiceNotFound when it
	// does not exist.
	ServiceLabels(ctx context.Context, name string) (map[string]string, error)
	// WatchService streams the service's events until ctx is done or the stream
	// fails; then the events channel is closed and errs yields why.
	WatchService(ctx context.Context, name string) (<-chan swarm.ServiceEvent, <-chan error)
}

// Process is the nginx master (implemented by *Nginx).
type Process interface {
	Test(ctx context.Context, path string) error
	Start() error
	Reload() error
	Signal(os.Signal) error
	Done() <-chan struct{}
	Err() error
}

// Config is what the edge does; Params holds the template values that do not change
// with the color (Color, Backend and AppliedAt are filled in by the edge).
type Config struct {
	// Service is the nginx service whose bluegreen.LabelActive is followed.
	Service string
	// DefaultColor is used when the label is absent at start (and only then).
	DefaultColor string
	// AppService is the app service name of a color, with bluegreen.ColorPlaceholder.
	AppService string
	// PollInterval is how often the label is read besides events.
	PollInterval time.Duration
	// StartTimeout bounds the wait at start for a label naming a color that resolves;
	// Run fails after it.
	StartTimeout time.Duration
	// ReloadTimeout bounds the wait for nginx to report a new config after a start or
	// reload (default 10s).
	ReloadTimeout time.Duration
	// DrainDelay is how long, once Run is told to stop, the load balancer's health
	// check (/edgez, Params.HealthDir) fails while nginx still serves everything else,
	// before nginx stops accepting: longer than the balancer takes to stop sending here.
	// 0 (no balancer) stops accepting at once.
	DrainDelay time.Duration
	// StopTimeout is how long, once nginx stopped accepting, the open connections are
	// given before nginx is stopped at once, which closes the WebSockets still open so
	// that their clients resume elsewhere now (default 1s). Reloads keep
	// Params.WorkerShutdownTimeout.
	StopTimeout time.Duration
	// ConfigPath is where the rendered config is written (its directory is created).
	ConfigPath string
	// Params are the template values (ResponseLogPort is the edge's own, see
	// CountResponses).
	Params Params
	// CountResponses has nginx send each response's status to a UDP port of 127.0.0.1
	// the edge picks, where it counts them (roomcast_edge_http_responses_total).
	CountResponses bool
}

// Deps are the edge's collaborators. Lookup, Probe, Now and Registerer have
// defaults; the others are required.
type Deps struct {
	Services   Services
	Nginx      Process
	Template   *Template
	Lookup     LookupFunc // default: DNSLookup(Params.Resolver)
	Probe      ProbeFunc  // default: HTTPProbe(Params.StatusPort)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Edge drives nginx for the active color. Create it with New.
type Edge struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	abortOnce sync.Once
	abort     chan struct{}

	mu      sync.Mutex
	applied Params // what nginx serves; zero before start

	errorsTotal *prometheus.CounterVec
	reloads     prometheus.Counter
	active      *prometheus.GaugeVec
	appliedTime prometheus.Gauge
	responses   *prometheus.CounterVec
}

const (
	apiTimeout    = 10 * time.Second
	lookupTimeout = 3 * time.Second
	probeEvery    = 50 * time.Millisecond
	streamMinWait = 500 * time.Millisecond
	streamMaxWait = 30 * time.Second
	startMinWait  = 250 * time.Millisecond
)

// New checks cfg and returns an Edge; nothing runs until Run.
func New(cfg Config, deps Deps) (*Edge, error) {
	switch {
	case cfg.Service == "":
		return nil, errors.New("edge: no nginx service name")
	case !bluegreen.ValidColor(cfg.DefaultColor):
		return nil, fmt.Errorf("edge: default color %q is not one of %v", cfg.DefaultColor, bluegreen.Colors)
	case !strings.Contains(cfg.AppService, bluegreen.ColorPlaceholder):
		return nil, fmt.Errorf("edge: app service pattern %q lacks %s", cfg.AppService, bluegreen.ColorPlaceholder)
	case cfg.PollInterval <= 0 || cfg.StartTimeout <= 0:
		return nil, errors.New("edge: poll interval and start timeout must be positive")
	case cfg.ConfigPath == "":
		return nil, errors.New("edge: no config path")
	case cfg.DrainDelay < 0 || cfg.StopTimeout < 0:
		return nil, errors.New("edge: drain delay and stop timeout must not be negative")
	case deps.Services == nil || deps.Nginx == nil || deps.Template == nil || deps.Logger == nil:
		return nil, errors.New("edge: Services, Nginx, Template and Logger are required")
	}
	if cfg.ReloadTimeout <= 0 {
		cfg.ReloadTimeout = 10 * time.Second
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = time.Second
	}
	// Check the static values now, with a stand-in color, rather than at the first flip.
	probe := cfg.Params
	probe.Color, probe.Backend, probe.AppliedAt = cfg.DefaultColor, bluegreen.ForColor(cfg.AppService, cfg.DefaultColor), time.Unix(0, 0)
	if err := probe.Validate(); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	if deps.Lookup == nil {
		deps.Lookup = DNSLookup(cfg.Params.Resolver)
	}
	if deps.Probe == nil {
		deps.Probe = HTTPProbe(cfg.Params.StatusPort)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.NewRegistry()
	}
	f := promauto.With(deps.Registerer)
	e := &Edge{
		cfg:   cfg,
		deps:  deps,
		log:   deps.Logger,
		abort: make(chan struct{}),
		errorsTotal: f.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_edge_errors_total",
			Help: "Label changes refused, Docker API, edge controller and event stream failures, by kind; the running config is kept.",
		}, []string{"kind"}),
		reloads: f.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_edge_reloads_total",
			Help: "In-place nginx reloads to a new color that nginx was seen serving.",
		}),
		active: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "roomcast_edge_active_color",
			Help: "1 for the color nginx routes to, 0 for the others.",
		}, []string{"color"}),
		appliedTime: f.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_edge_applied_timestamp_seconds",
			Help: "When the running nginx config was applied (Unix time).",
		}),
		responses: f.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_edge_http_responses_total",
			Help: "Responses of nginx's public listeners by status class (1xx to 5xx; a WebSocket counts when it ends, as 101), with ResponseLogPort set.",
		}, []string{"code"}),
	}
	for _, c := range responseClasses {
		e.responses.WithLabelValues(c)
	}
	for _, k := range kinds {
		e.errorsTotal.WithLabelValues(k)
	}
	for _, c := range bluegreen.Colors {
		e.active.WithLabelValues(c)
	}
	return e, nil
}

// Applied returns what nginx serves: color, backend and time; the zero Params before
// nginx started.
func (e *Edge) Applied() Params {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.applied
}

// Abort makes Run stop nginx at once (SIGTERM) instead of gracefully, also while a
// graceful stop is under way. Safe to call more than once.
func (e *Edge) Abort() { e.abortOnce.Do(func() { close(e.abort) }) }

// Run starts nginx for the active color and keeps it there until ctx is done, then
// drains and stops nginx (drain: the health check fails, DrainDelay, SIGQUIT,
// StopTimeout, SIGTERM; Abort makes it SIGTERM at once) and returns nil or an
// *ExitError with nginx's status. It returns an *ExitError at once if nginx exits on
// its own, and an error if no usable color appeared within StartTimeout or nginx
// could not start. ctx done before nginx started returns nil.
func (e *Edge) Run(ctx context.Context) error {
	e.cfg.Params.ResponseLogPort = 0
	if e.cfg.CountResponses {
		// Bound before nginx starts, so that its first responses are counted; closed
		// after nginx has stopped (deferred first, runs last).
		rc, err := listenResponses(e.responses)
		if err != nil {
			return err
		}
		defer rc.close()
		e.cfg.Params.ResponseLogPort = rc.port()
	}
	if err := e.start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	kicks := make(chan struct{}, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { e.watch(watchCtx, kicks) })
	// Stop order: the event watcher first, so nothing reconciles while nginx stops.
	defer wg.Wait()
	defer stopWatch()

	ticker := time.NewTicker(e.cfg.PollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			stopWatch()
			return e.drain()
		case <-e.abort:
			stopWatch()
			e.unready()
			return e.stop(syscall.SIGTERM)
		case <-e.deps.Nginx.Done():
			return e.exited(true)
		case <-kicks:
			e.reconcile(ctx)
		case <-ticker.C:
			e.reconcile(ctx)
		}
	}
}
