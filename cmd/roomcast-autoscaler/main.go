// Command roomcast-autoscaler scales the active color's Swarm service from Prometheus
// metrics with the Kubernetes HPA rule. It runs as one task on a manager node of the
// edge stack; `roomcast-autoscaler healthcheck` probes a running one for a Docker
// HEALTHCHECK in an image without a shell.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"roomcast/pkg/envconfig"
	"roomcast/pkg/fleet/autoscale"
	"roomcast/pkg/fleet/autoscale/promquery"
	"roomcast/pkg/fleet/swarm"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	err := run(context.Background(), os.Args[1:], envconfig.Environ(), os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitCode is 0 for success and -h, 2 for usage and configuration errors, else 1.
func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	var ee *envconfig.Error
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee), errors.As(err, &ue):
		fmt.Fprintln(stderr, "roomcast-autoscaler:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "roomcast-autoscaler:", err)
		return 1
	}
}

func run(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(ctx, args[1:], env, stderr)
	}
	fs := flag.NewFlagSet("roomcast-autoscaler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stdout) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q (configuration comes from the environment; see -h)", fs.Arg(0))}
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	log.Info("starting roomcast-autoscaler", "version", version, "config", envconfig.LogValue(cfg))

	docker, err := swarm.New(cfg.DockerHost)
	if err != nil {
		return err
	}
	defer docker.Close()
	prom, err := promquery.New(cfg.PrometheusURL)
	if err != nil {
		return err
	}
	defer prom.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	scaler, err := autoscale.New(cfg.autoscale(), autoscale.Deps{
		Services:   docker,
		Querier:    prom,
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return err
	}

	// Bind before anything runs, so a taken port is an exit at start.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Addr, err)
	}
	started := time.Now()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		last := scaler.LastTick()
		since := last
		if since.IsZero() {
			since = started
		}
		body := map[string]string{"status": "ok", "version": version}
		if !last.IsZero() {
			body["last_tick"] = last.UTC().Format(time.RFC3339Nano)
		}
		status := http.StatusOK
		if time.Since(since) > cfg.staleAfter() {
			status, body["status"] = http.StatusServiceUnavailable, "stuck"
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	log.Info("listening", "addr", ln.Addr().String())

	// Lifecycle, stopped in reverse of the start: the loop first (SIGTERM, SIGINT or
	// the caller's ctx ends it; a tick under way is cancelled, which never scales
	// half-way: a scale is one API call), then the HTTP server, then the clients
	// (deferred above).
	runCtx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "error", err.Error())
		}
	})
	err = scaler.Run(runCtx)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	wg.Wait()
	return err
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// healthcheck probes this host's autoscaler at the port of AUTOSCALER_ADDR, for a
// HEALTHCHECK in an image without a shell: exit 0 when /healthz answers 200.
func healthcheck(ctx context.Context, args []string, env map[string]string, stderr io.Writer) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("healthcheck takes no arguments, got %q", args[0])}
	}
	addr := env["AUTOSCALER_ADDR"]
	if addr == "" {
		addr = ":8081"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return envconfig.Invalid(env, "AUTOSCALER_ADDR", "want host:port or :port")
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("healthcheck %s: status %d %s", url, resp.StatusCode, body)
	}
	fmt.Fprintln(stderr, "healthy")
	return nil
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: roomcast-autoscaler [-h]
       roomcast-autoscaler healthcheck

roomcast-autoscaler scales the active color's Swarm service from Prometheus metrics.
Every AUTOSCALER_INTERVAL it reads the active color from the label roomcast.active of
AUTOSCALER_EDGE_SERVICE through the Docker Engine API (1.41 and newer, negotiated),
reads the replica count of that color's AUTOSCALER_APP_SERVICE, queries Prometheus for
the color's load (AUTOSCALER_QUERY) and applies the Kubernetes HPA rule:

  desired = ceil(current × load_per_replica / target)

unchanged while load_per_replica is within ±AUTOSCALER_TOLERANCE of the target, and
clamped to [AUTOSCALER_MIN_REPLICAS, AUTOSCALER_MAX_REPLICAS]. Scale-up is at once, at
most max(double, +4) replicas a step; scale-down goes no lower than the highest
recommendation of the last AUTOSCALER_SCALE_DOWN_WINDOW, one replica a step. A new
target (start, a color change, the end of a release) is watched a whole window before
it may scale down. A service at 0 replicas is left alone.

While the nginx service carries roomcast.promoting=true (set by "just promote" for the
length of a release) it does nothing. Docker or Prometheus errors, timeouts, an empty
result, NaN, a negative value or data older than AUTOSCALER_MAX_DATA_AGE keep the
current count: logged, counted in roomcast_autoscaler_errors_total{kind} and retried
next tick; it never scales on missing data. Every decision is logged with its inputs.

AUTOSCALER_ADDR serves /metrics (roomcast_autoscaler_desired_replicas,
roomcast_autoscaler_scale_events_total{direction},
roomcast_autoscaler_errors_total{kind}, ...) and /healthz (503 when no tick has ended
for two intervals plus six timeouts). "roomcast-autoscaler healthcheck" probes it on
127.0.0.1 and exits 0 or 1. SIGTERM or SIGINT stops it.

Configuration (environment variables):
`)
	envconfig.Usage(w, config{})
}
