package main

import (
	"context"
	"fmt"
	"io"
	"syscall"
	"time"

	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/fleet/edge"
	"roomcast/pkg/fleet/swarm"
)

// controllerConfig is `roomcast-edge controller`'s environment.
type controllerConfig struct {
	DockerHost   string        `env:"DOCKER_HOST" envDefault:"unix:///var/run/docker.sock" help:"Docker Engine API (unix:// or tcp://); only the nginx service is read"`
	Service      string        `env:"ROOMCAST_EDGE_SERVICE" envDefault:"edge_nginx" help:"the nginx service whose release labels are served"`
	Addr         string        `env:"ROOMCAST_EDGE_CONTROLLER_ADDR" envDefault:":9190" help:"listen address of the labels API, /healthz and /metrics"`
	PollInterval time.Duration `env:"ROOMCAST_EDGE_POLL_INTERVAL" envDefault:"5s" help:"label read besides Docker events (fallback when the event stream fails)"`
	MaxWait      time.Duration `env:"ROOMCAST_EDGE_CONTROLLER_MAX_WAIT" envDefault:"30s" help:"longest a long poll (?after=VERSION) waits for a change"`
	Log          cli.Log
}

// Logging is the log section, for cli.Setup.
func (c controllerConfig) Logging() cli.Log { return c.Log }

func loadControllerConfig(environ map[string]string) (controllerConfig, error) {
	return cli.Load(environ, func(cfg *controllerConfig, bad cli.Bad) error {
		switch {
		case !cli.ValidDockerHost(cfg.DockerHost):
			return bad("DOCKER_HOST", "want unix:///path/to/docker.sock or tcp://host:port")
		case !cli.ValidServiceName(cfg.Service):
			return bad("ROOMCAST_EDGE_SERVICE", "want a service name of letters, digits, _ . -")
		case !cli.ValidListenAddr(cfg.Addr):
			return bad("ROOMCAST_EDGE_CONTROLLER_ADDR", "want host:port or :port")
		case cfg.PollInterval < 100*time.Millisecond:
			return bad("ROOMCAST_EDGE_POLL_INTERVAL", "want a duration of at least 100ms")
		case cfg.MaxWait < 100*time.Millisecond || cfg.MaxWait > 5*time.Minute:
			return bad("ROOMCAST_EDGE_CONTROLLER_MAX_WAIT", "want a duration from 100ms to 5m")
		}
		return nil
	})
}

// controller runs `roomcast-edge controller`: the one process of the edge that holds
// the Docker API.
func controller(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return cli.Healthcheck(ctx, args[1:], env, "ROOMCAST_EDGE_CONTROLLER_ADDR", ":9190", stderr)
	}
	cmd := cli.Command{Name: name + " controller", Version: version, Usage: controllerUsage}
	cfg, log, err := cli.Setup(cmd, args, env, stdout, stderr, loadControllerConfig)
	if err != nil {
		return err
	}
	docker, err := swarm.New(cfg.DockerHost)
	if err != nil {
		return err
	}
	defer docker.Close()

	reg := cli.NewRegistry()
	c, err := edge.NewController(edge.ControllerConfig{Service: cfg.Service, PollInterval: cfg.PollInterval, MaxWait: cfg.MaxWait}, docker, log, reg)
	if err != nil {
		return err
	}
	// One listener for the labels API and the metrics; bound first, so that a taken
	// port is an exit at start.
	srv, err := cli.ListenMetrics(cfg.Addr, reg, log)
	if err != nil {
		return err
	}
	srv.Mux.Handle("/", c.Handler())
	log.Info("edge controller listening", "addr", srv.Addr().String(), "service", cfg.Service)

	// The lifecycle: the first signal (or ctx) ends the label loop, then the server
	// closes (long polls are cut; the nginx tasks keep their config and retry); the
	// Docker client closes last (deferred above).
	return cli.Lifecycle(ctx, log, c.Run, nil, srv, syscall.SIGTERM, syscall.SIGINT)
}

func controllerUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: roomcast-edge controller [-h] [-version]
       roomcast-edge controller healthcheck

The edge controller is the only part of the edge that holds the Docker API. It
follows the release labels (roomcast.active, roomcast.previous, roomcast.promoting)
of the nginx service (ROOMCAST_EDGE_SERVICE) through Docker events, a poll and a
resync whenever the event stream is lost, and serves them read-only to the nginx
tasks (ROOMCAST_EDGE_CONTROLLER there):

  GET /v1/labels                     {"version":N,"service":...,"found":true,"labels":{...}}
  GET /v1/labels?after=N[&wait=20s]  the same, once the version differs from N
                                     (or after the wait, at most
                                     ROOMCAST_EDGE_CONTROLLER_MAX_WAIT)
  GET /healthz                       200 once the labels have been read
  GET /metrics                       Prometheus metrics

Nothing it serves changes anything. A Docker API error keeps the last labels read; it
is logged and counted in roomcast_edge_controller_errors_total{kind}.

"roomcast-edge controller healthcheck" asks /healthz (for a HEALTHCHECK).

Configuration (environment variables):
`)
	envconfig.Usage(w, controllerConfig{})
}
