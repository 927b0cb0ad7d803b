package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsServer serves a registry's /metrics (and whatever else is added to Mux) on its
// own listener. Listen binds at once so that a busy port is an error at start-up.
type MetricsServer struct {
	// Mux is the server's handler; /metrics is already on it.
	Mux *http.ServeMux
	ln  net.Listener
	srv *http.Server
}

// NewRegistry returns a registry holding the Go runtime and process collectors, which
// a command's /metrics serves besides its own metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ListenMetrics binds addr and serves reg at GET /metrics once Serve is called.
func ListenMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (*MetricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return &MetricsServer{
		Mux: mux,
		ln:  ln,
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)},
	}, nil
}

// Addr is the bound address.
func (m *MetricsServer) Addr() net.Addr { return m.ln.Addr() }

// Serve serves until Close; it returns nil after Close.
func (m *MetricsServer) Serve() error {
	if err := m.srv.Serve(m.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving metrics: %w", err)
	}
	return nil
}

// Close stops the server and its connections at once (a scrape in flight is cut).
func (m *MetricsServer) Close() { _ = m.srv.Close() }

// Signals is a run.Group actor for the two-signal shutdown: the first SIGTERM or SIGINT
// (or any of sigs, when given) calls stop, a second calls abort. The signals are caught
// from the moment Signals returns, before anything is bound. The actor returns when
// ctx ends (with ctx's error) or when it is interrupted (nil); it never returns because
// of a signal, so that what stop began can finish.
func Signals(ctx context.Context, log *slog.Logger, stop, abort func(), sigs ...os.Signal) (execute func() error, interrupt func(error)) {
	if len(sigs) == 0 {
		sigs = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	}
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, sigs...)
	done := make(chan struct{})
	var once sync.Once
	execute = func() error {
		defer signal.Stop(ch)
		for n := 0; ; n++ {
			select {
			case sig := <-ch:
				if n == 0 {
					log.Info("signal received, stopping", "signal", sig.String())
					stop()
				} else {
					log.Info("second signal, stopping at once", "signal", sig.String())
					abort()
				}
			case <-ctx.Done():
				return ctx.Err()
			case <-done:
				return nil
			}
		}
	}
	interrupt = func(error) { once.Do(func() { close(done) }) }
	return execute, interrupt
}

// Lifecycle runs a long-running command's actors with oklog/run. main runs until its
// context ends: at the first SIGTERM or SIGINT (or any of sigs, when given) or when ctx
// ends; a second signal calls abort (nil: nothing is faster than the first). metrics,
// when not nil, serves until main returns. The first actor to return ends the others,
// and its result is what Lifecycle returns; only main watches ctx, so that when ctx
// ends that result is main's.
func Lifecycle(ctx context.Context, log *slog.Logger, main func(context.Context) error, abort func(), metrics *MetricsServer, sigs ...os.Signal) error {
	var g run.Group
	mainCtx, stop := context.WithCancel(ctx)
	defer stop()
	if abort == nil {
		abort = stop
	}
	g.Add(func() error { return main(mainCtx) }, func(error) { stop() })
	g.Add(Signals(context.WithoutCancel(ctx), log, stop, abort, sigs...))
	if metrics != nil {
		g.Add(metrics.Serve, func(error) { metrics.Close() })
	}
	return g.Run()
}
