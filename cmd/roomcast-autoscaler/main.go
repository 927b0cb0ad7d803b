// Command roomcast-autoscaler scales the active color's Swarm service from Prometheus
// metrics with the Kubernetes HPA rule. It runs as one task on a manager node of the
// edge stack; `roomcast-autoscaler healthcheck` probes a running one for a Docker
// HEALTHCHECK in an image without a shell.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/fleet/autoscale"
	"roomcast/pkg/fleet/autoscale/promquery"
	"roomcast/pkg/fleet/swarm"
)

// name is the command's name in its messages.
const name = "roomcast-autoscaler"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	cli.Main(context.Background(), name, run)
}

func run(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	// Before any subcommand: each answers -version, none runs.
	if err := cli.AskedVersion(name, version, args, stdout); err != nil {
		return err
	}
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(ctx, args[1:], env, stderr)
	}
	cfg, log, err := cli.Setup(cli.Command{Name: name, Version: version, Usage: usage}, args, env, stdout, stderr, loadConfig)
	if err != nil {
		return err
	}

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

	reg := cli.NewRegistry()
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
	srv, err := cli.ListenMetrics(cfg.Addr, reg, log)
	if err != nil {
		return err
	}
	srv.Mux.Handle("GET /healthz", healthz(scaler, time.Now(), cfg.staleAfter()))
	log.Info("listening", "addr", srv.Addr().String())

	// The lifecycle. The loop ends first: the first SIGTERM or SIGINT, or the caller's
	// ctx, cancels it (a tick under way is cancelled, which never scales half-way: a
	// scale is one API call); a second signal has nothing slower left to cut. Then the
	// signal handler and the HTTP server stop; the clients close last (deferred above).
	return cli.Lifecycle(ctx, log, scaler.Run, nil, srv)
}

// healthz answers 200 while ticks end, 503 "stuck" when none has ended for staleAfter
// (counted from started before the first).
func healthz(scaler *autoscale.Autoscaler, started time.Time, staleAfter time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		last := scaler.LastTick()
		since := last
		if since.IsZero() {
			since = started
		}
		body := map[string]string{"status": "ok", "version": cli.Version(version)}
		if !last.IsZero() {
			body["last_tick"] = last.UTC().Format(time.RFC3339Nano)
		}
		status := http.StatusOK
		if time.Since(since) > staleAfter {
			status, body["status"] = http.StatusServiceUnavailable, "stuck"
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
}

// healthcheck probes this host's autoscaler at the port of AUTOSCALER_ADDR.
func healthcheck(ctx context.Context, args []string, env map[string]string, stderr io.Writer) error {
	return cli.Healthcheck(ctx, args, env, "AUTOSCALER_ADDR", ":8081", stderr)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: roomcast-autoscaler [-h] [-version]
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
