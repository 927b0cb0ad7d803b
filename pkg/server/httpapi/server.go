// Package httpapi is a replica's HTTP surface: liveness, readiness, metrics, the chat
// page, and the WebSocket route handed to the gateway, on the public listener; the
// probes and metrics alone on an optional probe listener; Go's profiles alone on an
// optional profile listener; and the pacing of the public listener's accepts. Every
// response carries the replica's color and instance, so a proxy in front of several
// colors can be checked.
//
// A Server is started once and stopped once; its handlers are safe for concurrent use.
package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
)

// Identity is what a replica says about itself in headers, /readyz and metrics.
type Identity struct {
	Color string `env:"ROOMCAST_COLOR" envDefault:"local" help:"deployment color reported in headers, /readyz and metrics"`
	// Instance is the replica's name; the binary fills in the host name when it is empty.
	Instance string `env:"ROOMCAST_INSTANCE" defaultHelp:"hostname" help:"replica name"`
	// Version is the build's, set by the binary.
	Version string
}

// Header names carrying the Identity on every response.
const (
	HeaderColor    = "X-Roomcast-Color"
	HeaderInstance = "X-Roomcast-Instance"
)

// ResponseHeader returns the identity headers, for responses written outside net/http
// (the WebSocket 101).
func (id Identity) ResponseHeader() http.Header {
	h := http.Header{}
	h.Set(HeaderColor, id.Color)
	h.Set(HeaderInstance, id.Instance)
	return h
}

// Readiness tells whether the replica should receive new connections.
type Readiness struct {
	// Draining reports that shutdown has begun.
	Draining func() bool
	// Broker returns why messages cannot be sent now, or nil.
	Broker func() error
	// History returns why the replica's history is not usable yet, or nil; nil itself
	// when history is off.
	History func() error
}

func (r Readiness) state() (status, reason string) {
	if r.Draining() {
		return "draining", "the replica is shutting down"
	}
	if err := r.Broker(); err != nil {
		return "not_ready", err.Error()
	}
	if r.History != nil {
		if err := r.History(); err != nil {
			return "not_ready", err.Error()
		}
	}
	return "ready", ""
}

// Config says where to listen and who this replica is: the HTTP section of the
// server's configuration.
type Config struct {
	Addr string `env:"ROOMCAST_ADDR" envDefault:":8080" help:"listen address"`
	// ProbeAddr, when set, is a second listener serving only /healthz, /readyz and
	// /metrics, so that probes and scrapes never queue behind a storm of upgrades on the
	// public one. The public listener serves them too, either way.
	ProbeAddr string `env:"ROOMCAST_PROBE_ADDR" help:"listen address of a second listener serving only /healthz, /readyz and /metrics (empty: none; ROOMCAST_ADDR serves them either way)"`
	// PprofAddr, when set, is a listener serving only Go's profiles (net/http/pprof), the
	// embedded NATS server's work included. Off by default: a profile shows the code and
	// what it is doing, so it belongs on a port only operators reach.
	PprofAddr string `env:"ROOMCAST_PPROF_ADDR" help:"listen address of a listener serving only Go's profiles at /debug/pprof/ (empty: none; keep it off networks clients reach)"`
	// MaxHandshakes caps the connections of the public listener accepted but not yet
	// through their first request (see pacedListener).
	MaxHandshakes int `env:"ROOMCAST_MAX_HANDSHAKES" envDefault:"64" help:"connections accepted at once before their first request (upgrade) is through; more wait in the kernel's backlog (0: no limit)"`
	Identity      Identity
}

// Validate checks the listen addresses and the handshake cap; environ supplies the raw
// values for the error.
func (c Config) Validate(environ map[string]string) error {
	if !cli.ValidListenAddr(c.Addr) {
		return envconfig.Invalid(environ, "ROOMCAST_ADDR", "want host:port or :port")
	}
	if c.ProbeAddr != "" {
		if !cli.ValidListenAddr(c.ProbeAddr) {
			return envconfig.Invalid(environ, "ROOMCAST_PROBE_ADDR", "want host:port or :port, or empty for none")
		}
		_, port, _ := net.SplitHostPort(c.Addr)
		if _, probePort, _ := net.SplitHostPort(c.ProbeAddr); probePort == port && port != "0" {
			return envconfig.Invalid(environ, "ROOMCAST_PROBE_ADDR", "want a port other than ROOMCAST_ADDR's")
		}
	}
	if c.PprofAddr != "" {
		if !cli.ValidListenAddr(c.PprofAddr) {
			return envconfig.Invalid(environ, "ROOMCAST_PPROF_ADDR", "want host:port or :port, or empty for none")
		}
		_, port, _ := net.SplitHostPort(c.PprofAddr)
		for _, other := range []string{c.Addr, c.ProbeAddr} {
			if _, p, _ := net.SplitHostPort(other); p == port && port != "0" {
				return envconfig.Invalid(environ, "ROOMCAST_PPROF_ADDR", "want a port other than ROOMCAST_ADDR's and ROOMCAST_PROBE_ADDR's")
			}
		}
	}
	if c.MaxHandshakes < 0 {
		return envconfig.Invalid(environ, "ROOMCAST_MAX_HANDSHAKES", "want 0 (no limit) or more")
	}
	return nil
}

// Server is the replica's HTTP server.
type Server struct {
	cfg    Config
	ready  Readiness
	ws     http.Handler
	mux    *http.ServeMux
	srv    *http.Server
	ln     net.Listener
	paced  *pacedListener // nil without a handshake cap
	probes *sideServer    // nil without ProbeAddr
	pprof  *sideServer    // nil without PprofAddr
	log    *slog.Logger
}

//go:embed page/index.html
var chatPage []byte

// New builds the server. ws serves /ws/chat/...; gatherer is what /metrics exposes.
func New(cfg Config, ws http.Handler, ready Readiness, gatherer prometheus.Gatherer, log *slog.Logger, reg prometheus.Registerer) *Server {
	s := &Server{cfg: cfg, ready: ready, ws: ws, mux: http.NewServeMux(), log: log}
	if cfg.MaxHandshakes > 0 {
		s.paced = newPacedListener(cfg.MaxHandshakes, reg)
	}
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "roomcast_ready", Help: "1 when /readyz would answer 200.",
	}, func() float64 {
		if status, _ := ready.state(); status == "ready" {
			return 1
		}
		return 0
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "roomcast_draining", Help: "1 from the shutdown signal until the process exits.",
	}, func() float64 {
		if ready.Draining() {
			return 1
		}
		return 0
	})
	f.NewGauge(prometheus.GaugeOpts{
		Name: "roomcast_build_info", Help: "Always 1; labels say which build runs where.",
		ConstLabels: prometheus.Labels{"version": cfg.Identity.Version, "color": cfg.Identity.Color, "instance": cfg.Identity.Instance},
	}).Set(1)

	errorLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	metrics := promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: errorLog})
	s.probeRoutes(s.mux, metrics)
	if cfg.ProbeAddr != "" {
		s.probes = s.newProbeServer(metrics, errorLog)
	}
	if cfg.PprofAddr != "" {
		s.pprof = s.newProfileServer(errorLog)
	}
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(chatPage)
	})
	s.mux.HandleFunc("/", notFound)
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errorLog,
	}
	if s.paced != nil {
		s.srv.ConnState = s.paced.connState
	}
	return s
}

// probeRoutes registers liveness, readiness and metrics on mux: the public listener's
// and the probe listener's.
func (s *Server) probeRoutes(mux *http.ServeMux, metrics http.Handler) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", metrics)
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found", "path": r.URL.Path})
}

// setIdentity puts the replica's color and instance on a response.
func (s *Server) setIdentity(w http.ResponseWriter) {
	h := w.Header()
	h.Set(HeaderColor, s.cfg.Identity.Color)
	h.Set(HeaderInstance, s.cfg.Identity.Instance)
}

// ServeHTTP routes a request; WebSocket paths bypass the mux, whose path cleaning would
// redirect /ws/chat// instead of refusing it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.setIdentity(w)
	if r.URL.Path == "/ws/chat" || strings.HasPrefix(r.URL.Path, "/ws/chat/") {
		s.ws.ServeHTTP(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	status, reason := s.ready.state()
	body := map[string]string{
		"status":   status,
		"color":    s.cfg.Identity.Color,
		"instance": s.cfg.Identity.Instance,
		"version":  s.cfg.Identity.Version,
	}
	code := http.StatusOK
	if status != "ready" {
		code = http.StatusServiceUnavailable
		body["reason"] = reason
	}
	writeJSON(w, code, body)
}

// Listen binds the addresses, so that a bad address fails at start and tests can use
// port 0 and ask Addr, ProbeAddr and PprofAddr. On an error nothing stays bound.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.cfg.Addr, err)
	}
	bound := []io.Closer{ln}
	for _, side := range s.sides() {
		if err := side.listen(); err != nil {
			for _, c := range bound {
				_ = c.Close()
			}
			return err
		}
		bound = append(bound, side.ln)
	}
	s.ln = ln
	if s.paced != nil {
		s.paced.Listener = ln
		s.ln = s.paced
	}
	return nil
}

// sides are the listeners beside the public one that are configured.
func (s *Server) sides() []*sideServer {
	var sides []*sideServer
	for _, side := range []*sideServer{s.probes, s.pprof} {
		if side != nil {
			sides = append(sides, side)
		}
	}
	return sides
}

// Addr is the public listener's bound address; valid after Listen.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// ProbeAddr is the probe listener's bound address, nil without one; valid after Listen.
func (s *Server) ProbeAddr() net.Addr {
	if s.probes == nil {
		return nil
	}
	return s.probes.ln.Addr()
}

// PprofAddr is the profile listener's bound address, nil without one; valid after Listen.
func (s *Server) PprofAddr() net.Addr {
	if s.pprof == nil {
		return nil
	}
	return s.pprof.ln.Addr()
}

// Serve serves every listener until Shutdown; it returns nil after a Shutdown. If one
// listener fails, the others are closed: a replica nobody can probe is restarted
// rather than left serving.
func (s *Server) Serve() error {
	sides := s.sides()
	errs := make(chan error, len(sides))
	closeAll := func() {
		_ = s.srv.Close()
		for _, side := range sides {
			_ = side.srv.Close()
		}
	}
	for _, side := range sides {
		go func() {
			err := serveHTTP(side.srv, side.ln, side.what)
			if err != nil {
				closeAll()
			}
			errs <- err
		}()
	}
	err := serveHTTP(s.srv, s.ln, "public")
	if err != nil {
		closeAll()
	}
	for range sides {
		err = errors.Join(err, <-errs)
	}
	return err
}

func serveHTTP(srv *http.Server, ln net.Listener, which string) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving HTTP on the %s listener: %w", which, err)
	}
	return nil
}

// Shutdown stops accepting and waits for plain HTTP requests to finish, on the public
// and probe listeners. WebSocket connections are hijacked and not its business: the hub
// closes them. A profile being taken is cut short rather than waited for.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if s.probes != nil {
		err = errors.Join(err, s.probes.srv.Shutdown(ctx))
	}
	if s.pprof != nil {
		err = errors.Join(err, s.pprof.srv.Close())
	}
	if err != nil {
		return fmt.Errorf("shutting down HTTP server: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
