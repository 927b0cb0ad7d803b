// Package httpapi is a replica's HTTP surface: liveness, readiness, metrics, the chat
// page, and the WebSocket route handed to the gateway. Every response carries the
// replica's color and instance, so a proxy in front of several colors can be checked.
//
// A Server is started once and stopped once; its handlers are safe for concurrent use.
package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
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
}

func (r Readiness) state() (status, reason string) {
	if r.Draining() {
		return "draining", "the replica is shutting down"
	}
	if err := r.Broker(); err != nil {
		return "not_ready", err.Error()
	}
	return "ready", ""
}

// Config says where to listen and who this replica is: the HTTP section of the
// server's configuration.
type Config struct {
	Addr     string `env:"ROOMCAST_ADDR" envDefault:":8080" help:"listen address"`
	Identity Identity
}

// Validate checks the listen address; environ supplies the raw values for the error.
func (c Config) Validate(environ map[string]string) error {
	if !cli.ValidListenAddr(c.Addr) {
		return envconfig.Invalid(environ, "ROOMCAST_ADDR", "want host:port or :port")
	}
	return nil
}

// Server is the replica's HTTP server.
type Server struct {
	cfg   Config
	ready Readiness
	ws    http.Handler
	mux   *http.ServeMux
	srv   *http.Server
	ln    net.Listener
	log   *slog.Logger
}

//go:embed page/index.html
var chatPage []byte

// New builds the server. ws serves /ws/chat/...; gatherer is what /metrics exposes.
func New(cfg Config, ws http.Handler, ready Readiness, gatherer prometheus.Gatherer, log *slog.Logger, reg prometheus.Registerer) *Server {
	s := &Server{cfg: cfg, ready: ready, ws: ws, mux: http.NewServeMux(), log: log}
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
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: errorLog}))
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(chatPage)
	})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found", "path": r.URL.Path})
	})
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errorLog,
	}
	return s
}

// ServeHTTP routes a request; WebSocket paths bypass the mux, whose path cleaning would
// redirect /ws/chat// instead of refusing it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set(HeaderColor, s.cfg.Identity.Color)
	h.Set(HeaderInstance, s.cfg.Identity.Instance)
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

// Listen binds the address, so that a bad address fails at start and tests can use
// port 0 and ask Addr.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address; valid after Listen.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown; it returns nil after a Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving HTTP: %w", err)
	}
	return nil
}

// Shutdown stops accepting and waits for plain HTTP requests to finish. WebSocket
// connections are hijacked and not its business: the hub closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutting down HTTP server: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
