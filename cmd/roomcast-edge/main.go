// Command roomcast-edge is the entrypoint of the nginx container of the edge stack.
// It reads the active color from the nginx service's label roomcast.active, served by
// `roomcast-edge controller` (the edge's only holder of the Docker Engine API, in its
// own service), renders the nginx config for that color, starts nginx in the
// foreground as its child, and reloads it in place whenever the label changes (no
// task restart). Without a controller it can read the Docker Engine API itself.
// `roomcast-edge status` asks the local nginx which color it serves.
package main

import (
	"context"
	"fmt"
	"io"
	"syscall"

	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/edge"
)

// name is the command's name in its messages.
const name = "roomcast-edge"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// nginx's exit status is passed on: *edge.ExitError is a cli.ExitCoder.
	cli.Main(context.Background(), name, run)
}

func run(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	// Before any subcommand: each answers -version, none runs.
	if err := cli.AskedVersion(name, version, args, stdout); err != nil {
		return err
	}
	if len(args) > 0 {
		switch args[0] {
		case "status":
			return status(ctx, args[1:], env, stdout, stderr)
		case "controller":
			return controller(ctx, args[1:], env, stdout, stderr)
		}
	}
	cfg, log, err := cli.Setup(cli.Command{Name: name, Version: version, Usage: usage}, args, env, stdout, stderr, loadConfig)
	if err != nil {
		return err
	}

	tmpl, err := edge.ParseTemplate(cfg.Template)
	if err != nil {
		return err
	}
	services, closeServices, err := cfg.services()
	if err != nil {
		return err
	}
	defer closeServices()

	reg := cli.NewRegistry()
	e, err := edge.New(cfg.edge(), edge.Deps{
		Services:   services,
		Nginx:      edge.NewNginx(cfg.Nginx, cfg.Config, edge.NewTokenRedactor(stdout), edge.NewTokenRedactor(stderr)),
		Template:   tmpl,
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return err
	}

	// Bound first, so that a taken port is an exit at start.
	var metrics *cli.MetricsServer
	if cfg.MetricsAddr != "off" {
		if metrics, err = cli.ListenMetrics(cfg.MetricsAddr, reg, log); err != nil {
			return err
		}
		log.Info("metrics listening", "addr", metrics.Addr().String())
	}

	// The lifecycle. The edge ends first: the first SIGTERM, SIGINT or SIGQUIT, or the
	// caller's ctx, drains nginx (/edgez fails, ROOMCAST_EDGE_DRAIN_DELAY, SIGQUIT to
	// nginx: it stops accepting and finishes its requests, ROOMCAST_EDGE_STOP_TIMEOUT,
	// then SIGTERM closes the WebSockets still open), a second signal stops it at once
	// (SIGTERM), and Run returns once nginx has exited, with nginx's status, which is
	// what run returns (a failing metrics server stops nginx gracefully too). Then the
	// signal handler and the metrics server stop; the controller's (or Docker's)
	// client closes last (deferred above).
	return cli.Lifecycle(ctx, log, e.Run, e.Abort, metrics, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
}

// status prints what the local nginx reports at /.roomcast/edge; with -color it also
// checks the color. For docker exec and healthchecks in an image without a shell.
func status(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet(name+" status", stdout, stderr, usage)
	want := fs.String("color", "", "exit 1 unless nginx serves this color")
	if err := cli.Parse(fs, args, version, stdout, false); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("status takes no arguments, got %q", fs.Arg(0))
	}
	if *want != "" && !bluegreen.ValidColor(*want) {
		return cli.Usagef("-color %q: want blue or green", *want)
	}
	// Only the status port matters here: status also runs where nothing says where
	// the labels come from (docker exec with another environment, tests).
	cfg, err := cli.Load(env, func(cfg *config, bad cli.Bad) error {
		if !validPort(cfg.StatusPort) {
			return bad("ROOMCAST_EDGE_STATUS_PORT", "want a port from 1 to 65535")
		}
		return nil
	})
	if err != nil {
		return err
	}
	st, err := edge.HTTPProbe(cfg.StatusPort)(ctx)
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
	fmt.Fprint(w, `Usage: roomcast-edge [-h] [-version]
       roomcast-edge status [-color blue|green]
       roomcast-edge controller [-h]

roomcast-edge is the entrypoint of the edge's nginx container. It reads the active
color from the label roomcast.active of its own Swarm service (ROOMCAST_EDGE_SERVICE)
from the edge controller at ROOMCAST_EDGE_CONTROLLER (roomcast-edge controller -h),
which alone holds the Docker API; or, with ROOMCAST_EDGE_CONTROLLER unset and
DOCKER_HOST set, through the Docker Engine API itself (1.41 and newer, negotiated;
one of the two must be set). It waits until that color's
app service resolves in DNS, renders the nginx config template, checks it with
nginx -t and runs nginx in the foreground. When the label changes (the controller's
long poll or Docker events, with a poll as fallback) it re-renders, checks and reloads nginx in place. A label
value that is not blue or green, a color that does not resolve, a config nginx
rejects or a controller or Docker API error keeps the running config; it is logged, counted in
roomcast_edge_errors_total{kind} and retried. The label absent at start means
ROOMCAST_EDGE_DEFAULT_COLOR; a restarted task reads the label, so it never falls
back to an older color.

SIGTERM, SIGINT or SIGQUIT drains the edge for the operator's load balancer: the
public /edgez (its health check: 200 while nginx serves here) answers 503 at once while
nginx serves everything else for ROOMCAST_EDGE_DRAIN_DELAY; then nginx stops accepting
(SIGQUIT), its requests get ROOMCAST_EDGE_STOP_TIMEOUT to finish, and the connections
still open (WebSockets) are closed (SIGTERM), so that their clients resume elsewhere
at once. A second signal stops nginx at once. roomcast-edge exits with nginx's status,
and non-zero when nginx exits on its own or no usable color appears within
ROOMCAST_EDGE_START_TIMEOUT.

"roomcast-edge status" prints {"color":...,"applied_at":...} from
http://127.0.0.1:$ROOMCAST_EDGE_STATUS_PORT/.roomcast/edge (nginx's status listener,
which answers that and stub_status; the listen port answers 404 for both) and exits 0 (1 when nginx
does not answer, or does not serve the color given with -color).

Configuration (environment variables):
`)
	envconfig.Usage(w, config{})
}
