// Package edge keeps nginx routing to the active color. It reads the color from the
// nginx service's label roomcast.active (through Services, which package swarm
// implements), checks that the color's app service resolves in DNS, renders the nginx
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
// Concurrency: Run drives everything from one goroutine (plus one that reads events);
// Abort and Applied may be called from any goroutine.
package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
	KindServiceNotFound = "service_not_found" // the nginx service does not exist
	KindLabelMissing    = "label_missing"     // the label disappeared after start
	KindBadLabel        = "bad_label"         // the label is not a color
	KindUnresolved      = "unresolved"        // the color's app service does not resolve
	KindRender          = "render"            // the template could not be rendered or written
	KindConfigTest      = "config_test"       // nginx -t rejected the config
	KindReload          = "reload"            // nginx was not seen running the new config
	KindEventStream     = "event_stream"      // the Docker event stream failed or ended
)

var kinds = []string{KindDockerAPI, KindServiceNotFound, KindLabelMissing, KindBadLabel,
	KindUnresolved, KindRender, KindConfigTest, KindReload, KindEventStream}

// Services reads the nginx service (implemented by *swarm.Client).
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

// LookupFunc returns the IPv4 addresses of host.
type LookupFunc func(ctx context.Context, host string) ([]string, error)

// ProbeFunc asks the running nginx which config it serves.
type ProbeFunc func(ctx context.Context) (Status, error)

// Status is the body of GET /.roomcast/edge.
type Status struct {
	Color     string `json:"color"`
	AppliedAt string `json:"applied_at"`
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
	// ConfigPath is where the rendered config is written (its directory is created).
	ConfigPath string
	// Params are the template values.
	Params Params
}

// Deps are the edge's collaborators. Lookup, Probe, Now and Registerer have
// defaults; the others are required.
type Deps struct {
	Services   Services
	Nginx      Process
	Template   *Template
	Lookup     LookupFunc // default: DNSLookup(Params.Resolver)
	Probe      ProbeFunc  // default: HTTPProbe(Params.ListenPort)
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
	case deps.Services == nil || deps.Nginx == nil || deps.Template == nil || deps.Logger == nil:
		return nil, errors.New("edge: Services, Nginx, Template and Logger are required")
	}
	if cfg.ReloadTimeout <= 0 {
		cfg.ReloadTimeout = 10 * time.Second
	}
	// Check the static values now, with a stand-in color, rather than at the first flip.
	probe := cfg.Params
	probe.Color, probe.Backend, probe.AppliedAt = cfg.DefaultColor, backendName(cfg.AppService, cfg.DefaultColor), time.Unix(0, 0)
	if err := probe.Validate(); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	if deps.Lookup == nil {
		deps.Lookup = DNSLookup(cfg.Params.Resolver)
	}
	if deps.Probe == nil {
		deps.Probe = HTTPProbe(cfg.Params.ListenPort)
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
			Help: "Label changes refused, Docker API and event stream failures, by kind; the running config is kept.",
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
	}
	for _, k := range kinds {
		e.errorsTotal.WithLabelValues(k)
	}
	for _, c := range bluegreen.Colors {
		e.active.WithLabelValues(c)
	}
	return e, nil
}

func backendName(pattern, color string) string {
	return strings.ReplaceAll(pattern, bluegreen.ColorPlaceholder, color)
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

// ExitError is how nginx ended when Run returns because it exited.
type ExitError struct {
	// Code is the exit status to pass on: nginx's, 128+signal when it was killed, and
	// at least 1 when nginx exited without being asked to.
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is Code: the status a command passes on (it makes an ExitError a
// cli.ExitCoder).
func (e *ExitError) ExitCode() int { return e.Code }

// Run starts nginx for the active color and keeps it there until ctx is done, then
// stops nginx gracefully (SIGQUIT; Abort makes it SIGTERM) and returns nil or an
// *ExitError with nginx's status. It returns an *ExitError at once if nginx exits on
// its own, and an error if no usable color appeared within StartTimeout or nginx
// could not start. ctx done before nginx started returns nil.
func (e *Edge) Run(ctx context.Context) error {
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
			return e.stop(syscall.SIGQUIT)
		case <-e.abort:
			stopWatch()
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

// start waits for a usable color, renders its config, tests it and starts nginx.
func (e *Edge) start(ctx context.Context) error {
	if err := e.prepareDirs(); err != nil {
		return err
	}
	color, err := e.waitForColor(ctx)
	if err != nil {
		return err
	}
	p := e.params(color)
	if err := e.deps.Template.RenderFile(e.cfg.ConfigPath, p); err != nil {
		return fmt.Errorf("rendering the first config: %w", err)
	}
	if err := e.deps.Nginx.Test(ctx, e.cfg.ConfigPath); err != nil {
		return fmt.Errorf("testing the first config: %w", err)
	}
	if err := e.deps.Nginx.Start(); err != nil {
		return err
	}
	e.log.Info("nginx started", "color", p.Color, "backend", p.Backend, "applied_at", timestamp(p.AppliedAt))
	if err := e.confirm(ctx, p); err != nil {
		select {
		case <-e.deps.Nginx.Done():
			return e.exited(true)
		default:
		}
		e.log.Warn("nginx not seen serving its first config", "color", p.Color, "error", err.Error())
	}
	e.setApplied(p)
	return nil
}

func (e *Edge) prepareDirs() error {
	for _, dir := range []string{filepath.Dir(e.cfg.ConfigPath), e.cfg.Params.TempDir, filepath.Dir(e.cfg.Params.PidPath)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	return nil
}

// waitForColor reads the label until it names a color that resolves, for at most
// StartTimeout.
func (e *Edge) waitForColor(ctx context.Context) (string, error) {
	began := time.Now()
	delay := startMinWait
	for {
		color, kind, err := e.desired(ctx, true)
		if err == nil {
			if err = e.resolves(ctx, backendName(e.cfg.AppService, color)); err == nil {
				return color, nil
			}
			kind = KindUnresolved
		}
		waited := time.Since(began)
		e.count(kind, "waiting before starting nginx", err, "waited", waited.Round(time.Millisecond).String(), "timeout", e.cfg.StartTimeout.String())
		if waited+delay > e.cfg.StartTimeout {
			return "", fmt.Errorf("no usable color within %s, nginx not started: %w", e.cfg.StartTimeout, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, e.cfg.PollInterval)
	}
}

// desired reads the label. At start an absent label means the default color; later
// it is refused like a bad value.
func (e *Edge) desired(ctx context.Context, atStart bool) (color, kind string, err error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	labels, err := e.deps.Services.ServiceLabels(ctx, e.cfg.Service)
	switch {
	case errors.Is(err, swarm.ErrServiceNotFound):
		return "", KindServiceNotFound, err
	case err != nil:
		return "", KindDockerAPI, err
	}
	v, ok := labels[bluegreen.LabelActive]
	switch {
	case !ok && atStart:
		e.log.Info("label absent, using the default color", "service", e.cfg.Service, "label", bluegreen.LabelActive, "color", e.cfg.DefaultColor)
		return e.cfg.DefaultColor, "", nil
	case !ok:
		return "", KindLabelMissing, fmt.Errorf("service %s has no label %s", e.cfg.Service, bluegreen.LabelActive)
	case !bluegreen.ValidColor(v):
		return "", KindBadLabel, fmt.Errorf("label %s=%q is not one of %v", bluegreen.LabelActive, v, bluegreen.Colors)
	}
	return v, "", nil
}

func (e *Edge) resolves(ctx context.Context, host string) error {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	addrs, err := e.deps.Lookup(ctx, host)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("resolving %s: no address", host)
	}
	return nil
}

func (e *Edge) params(color string) Params {
	p := e.cfg.Params
	p.Color = color
	p.Backend = backendName(e.cfg.AppService, color)
	p.AppliedAt = e.deps.Now()
	return p
}

// reconcile moves nginx to the labelled color, or leaves it as it is and says why.
func (e *Edge) reconcile(ctx context.Context) {
	color, kind, err := e.desired(ctx, false)
	if err != nil {
		e.count(kind, "label not applied, keeping the current color", err)
		return
	}
	old := e.Applied()
	if color == old.Color {
		return
	}
	began := time.Now()
	fail := func(kind string, err error) {
		e.count(kind, "color change refused, keeping the current color", err, "wanted", color)
	}
	p := e.params(color)
	if err := e.resolves(ctx, p.Backend); err != nil {
		fail(KindUnresolved, err)
		return
	}
	next := e.cfg.ConfigPath + ".next"
	if err := e.deps.Template.RenderFile(next, p); err != nil {
		fail(KindRender, err)
		return
	}
	if err := e.deps.Nginx.Test(ctx, next); err != nil {
		_ = os.Remove(next)
		fail(KindConfigTest, err)
		return
	}
	if err := os.Rename(next, e.cfg.ConfigPath); err != nil {
		fail(KindRender, fmt.Errorf("installing the tested config: %w", err))
		return
	}
	if err := e.deps.Nginx.Reload(); err != nil {
		fail(KindReload, err)
		return
	}
	// Until nginx is seen serving it, the change counts as not made: the next event
	// or poll renders and reloads again.
	if err := e.confirm(ctx, p); err != nil {
		fail(KindReload, err)
		return
	}
	e.setApplied(p)
	e.reloads.Inc()
	e.log.Info("nginx reloaded", "from", old.Color, "to", p.Color, "backend", p.Backend,
		"applied_at", timestamp(p.AppliedAt), "took", time.Since(began).Round(time.Millisecond).String())
}

// confirm waits until nginx reports p, or ReloadTimeout passes, or nginx exits.
func (e *Edge) confirm(ctx context.Context, p Params) error {
	want := Status{Color: p.Color, AppliedAt: timestamp(p.AppliedAt)}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.ReloadTimeout)
	defer cancel()
	var last Status
	var lastErr error
	for {
		last, lastErr = e.deps.Probe(ctx)
		if lastErr == nil && last == want {
			return nil
		}
		select {
		case <-e.deps.Nginx.Done():
			return errors.New("nginx exited")
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("nginx not seen serving %s applied at %s within %s: %w", want.Color, want.AppliedAt, e.cfg.ReloadTimeout, lastErr)
			}
			return fmt.Errorf("nginx not seen serving %s applied at %s within %s: it reports %s applied at %s",
				want.Color, want.AppliedAt, e.cfg.ReloadTimeout, last.Color, last.AppliedAt)
		case <-time.After(probeEvery):
		}
	}
}

func (e *Edge) setApplied(p Params) {
	e.mu.Lock()
	e.applied = p
	e.mu.Unlock()
	for _, c := range bluegreen.Colors {
		v := 0.0
		if c == p.Color {
			v = 1
		}
		e.active.WithLabelValues(c).Set(v)
	}
	e.appliedTime.Set(float64(p.AppliedAt.UnixNano()) / 1e9)
}

func (e *Edge) count(kind, msg string, err error, attrs ...any) {
	e.errorsTotal.WithLabelValues(kind).Inc()
	attrs = append([]any{"kind", kind, "error", err.Error(), "service", e.cfg.Service, "color", e.Applied().Color}, attrs...)
	e.log.Warn(msg, attrs...)
}

// watch reads the service's events and kicks a reconcile for each, and after every
// (re)connection, since changes made while no stream was open were missed.
func (e *Edge) watch(ctx context.Context, kicks chan<- struct{}) {
	kick := func() {
		select {
		case kicks <- struct{}{}:
		default: // one pending reconcile reads the latest label anyway
		}
	}
	delay := streamMinWait
	for ctx.Err() == nil {
		opened := time.Now()
		events, errs := e.deps.Services.WatchService(ctx, e.cfg.Service)
		kick()
		for ev := range events {
			e.log.Debug("service event", "action", ev.Action, "service", ev.Name)
			kick()
		}
		err := <-errs
		if ctx.Err() != nil {
			return
		}
		if time.Since(opened) >= streamMaxWait {
			delay = streamMinWait
		}
		if err == nil {
			err = errors.New("event stream ended")
		}
		e.count(KindEventStream, "event stream lost, polling until it is back", err, "retry_in", delay.String())
		kick()
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, streamMaxWait)
	}
}

// stop signals nginx and waits for it to exit.
func (e *Edge) stop(sig syscall.Signal) error {
	e.log.Info("stopping nginx", "signal", sig.String(), "graceful", sig == syscall.SIGQUIT)
	if err := e.deps.Nginx.Signal(sig); err != nil {
		e.log.Warn("signalling nginx failed", "error", err.Error())
	}
	if sig == syscall.SIGQUIT {
		select {
		case <-e.deps.Nginx.Done():
			return e.exited(false)
		case <-e.abort:
			e.log.Info("stopping nginx at once", "signal", syscall.SIGTERM.String())
			if err := e.deps.Nginx.Signal(syscall.SIGTERM); err != nil {
				e.log.Warn("signalling nginx failed", "error", err.Error())
			}
		}
	}
	<-e.deps.Nginx.Done()
	return e.exited(false)
}

// exited turns nginx's exit into Run's result.
func (e *Edge) exited(unexpected bool) error {
	err := e.deps.Nginx.Err()
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	default:
		code = 1
	}
	if unexpected {
		e.log.Error("nginx exited on its own", "status", code)
		return &ExitError{Code: max(code, 1), Err: fmt.Errorf("nginx exited on its own (status %d)", code)}
	}
	e.log.Info("nginx stopped", "status", code)
	if code != 0 {
		return &ExitError{Code: code, Err: fmt.Errorf("nginx exited with status %d", code)}
	}
	return nil
}

// DNSLookup returns a LookupFunc asking the DNS server at server (address or
// address:port, port 53 by default) for A records, the way nginx's resolver will:
// the name is looked up as is, without the search domains of /etc/resolv.conf.
func DNSLookup(server string) LookupFunc {
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
	}
	r := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		},
	}
	return func(ctx context.Context, host string) ([]string, error) {
		if ip := net.ParseIP(host); ip != nil {
			return []string{ip.String()}, nil
		}
		ips, err := r.LookupIP(ctx, "ip4", strings.TrimSuffix(host, ".")+".")
		if err != nil {
			return nil, err
		}
		out := make([]string, len(ips))
		for i, ip := range ips {
			out[i] = ip.String()
		}
		return out, nil
	}
}

// HTTPProbe returns a ProbeFunc asking nginx on 127.0.0.1:port for /.roomcast/edge.
func HTTPProbe(port int) ProbeFunc {
	url := fmt.Sprintf("http://127.0.0.1:%d/.roomcast/edge", port)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return func(ctx context.Context) (Status, error) {
		var st Status
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return st, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return st, fmt.Errorf("probing %s: %w", url, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return st, fmt.Errorf("probing %s: status %d", url, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return st, fmt.Errorf("probing %s: %w", url, err)
		}
		return st, nil
	}
}
