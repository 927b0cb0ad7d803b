// Command roomcast-edge is the entrypoint of the nginx container of the edge stack.
// It reads the active color from the nginx service's label roomcast.active through
// the Docker Engine API, renders the nginx config for that color, starts nginx in the
// foreground as its child, and reloads it in place whenever the label changes (no
// task restart). `roomcast-edge status` asks the local nginx which color it serves.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"roomcast/pkg/fleet/bluegreen"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"roomcast/pkg/envconfig"
	"roomcast/pkg/fleet/edge"
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

// exitCode is 0 for success and -h, 2 for usage and configuration errors, nginx's
// status when nginx ended, else 1.
func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	var ee *envconfig.Error
	var xe *edge.ExitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee), errors.As(err, &ue):
		fmt.Fprintln(stderr, "roomcast-edge:", err)
		return 2
	case errors.As(err, &xe):
		fmt.Fprintln(stderr, "roomcast-edge:", err)
		return xe.Code
	default:
		fmt.Fprintln(stderr, "roomcast-edge:", err)
		return 1
	}
}

func run(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "status" {
		return status(ctx, args[1:], env, stdout, stderr)
	}
	fs := flag.NewFlagSet("roomcast-edge", flag.ContinueOnError)
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
	log.Info("starting roomcast-edge", "version", version, "config", envconfig.LogValue(cfg))

	tmpl, err := edge.ParseTemplate(cfg.Template)
	if err != nil {
		return err
	}
	docker, err := swarm.New(cfg.DockerHost)
	if err != nil {
		return err
	}
	defer docker.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	e, err := edge.New(edge.Config{
		Service:      cfg.Service,
		DefaultColor: cfg.DefaultColor,
		AppService:   cfg.AppService,
		PollInterval: cfg.PollInterval,
		StartTimeout: cfg.StartTimeout,
		ConfigPath:   cfg.Config,
		Params:       cfg.params(),
	}, edge.Deps{
		Services:   docker,
		Nginx:      edge.NewNginx(cfg.Nginx, cfg.Config, stdout, stderr),
		Template:   tmpl,
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return err
	}

	// Lifecycle, stopped in reverse: metrics server, signal handler, edge (which stops
	// its event watcher, then nginx).
	if cfg.MetricsAddr != "off" {
		ln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		srv := &http.Server{Handler: mux, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		log.Info("metrics listening", "addr", ln.Addr().String())
	}

	// The first SIGTERM, SIGINT or SIGQUIT stops nginx gracefully (SIGQUIT: workers
	// finish their connections, bounded by worker_shutdown_timeout); a second one
	// stops it at once (SIGTERM).
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case sig := <-sigs:
			log.Info("signal received, stopping nginx gracefully", "signal", sig.String())
			cancel()
		case <-runCtx.Done():
			return // the caller's ctx ended: Run stops nginx gracefully
		}
		select {
		case sig := <-sigs:
			log.Info("second signal, stopping nginx at once", "signal", sig.String())
			e.Abort()
		case <-finished:
		}
	}()
	return e.Run(runCtx)
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// status prints what the local nginx reports at /.roomcast/edge; with -color it also
// checks the color. For docker exec and healthchecks in an image without a shell.
func status(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("roomcast-edge status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	want := fs.String("color", "", "exit 1 unless nginx serves this color")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("status takes no arguments, got %q", fs.Arg(0))}
	}
	if *want != "" && !bluegreen.ValidColor(*want) {
		return usageError{fmt.Errorf("-color %q: want blue or green", *want)}
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	st, err := edge.HTTPProbe(cfg.ListenPort)(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "{\"color\":%q,\"applied_at\":%q}\n", st.Color, st.AppliedAt)
	if *want != "" && st.Color != *want {
		return fmt.Errorf("nginx serves %s, not %s", st.Color, *want)
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: roomcast-edge [-h]
       roomcast-edge status [-color blue|green]

roomcast-edge is the entrypoint of the edge's nginx container. It reads the active
color from the label roomcast.active of its own Swarm service (ROOMCAST_EDGE_SERVICE)
through the Docker Engine API (1.41 and newer, negotiated), waits until that color's
app service resolves in DNS, renders the nginx config template, checks it with
nginx -t and runs nginx in the foreground. When the label changes (Docker events,
with a poll as fallback) it re-renders, checks and reloads nginx in place. A label
value that is not blue or green, a color that does not resolve, a config nginx
rejects or a Docker API error keeps the running config; it is logged, counted in
roomcast_edge_errors_total{kind} and retried. The label absent at start means
ROOMCAST_EDGE_DEFAULT_COLOR; a restarted task reads the label, so it never falls
back to an older color.

SIGTERM, SIGINT or SIGQUIT stops nginx gracefully (SIGQUIT to nginx); a second signal
stops it at once. roomcast-edge exits with nginx's status, and non-zero when nginx
exits on its own or no usable color appears within ROOMCAST_EDGE_START_TIMEOUT.

"roomcast-edge status" prints {"color":...,"applied_at":...} from
http://127.0.0.1:$ROOMCAST_EDGE_LISTEN_PORT/.roomcast/edge and exits 0 (1 when nginx
does not answer, or does not serve the color given with -color).

Configuration (environment variables):
`)
	envconfig.Usage(w, config{})
}
