// Command roomcast-baseline is the floor of roomcast's benchmarks: a minimal broadcast
// server on gws that speaks roomcast's wire protocol, with no broker, no history, no
// send queues and no limits (package baseline). README's Performance section measures
// it with roomcast-loadgen beside roomcast. It is not a server to deploy.
package main

import (
	"context"
	"fmt"
	"io"

	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/load/baseline"
)

// name is the command's name in its messages.
const name = "roomcast-baseline"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// config is roomcast-baseline's environment: roomcast's own variable for the address,
// so that a benchmark starts the two the same way.
type config struct {
	Addr string `env:"ROOMCAST_ADDR" envDefault:":8080" help:"listen address (the WebSocket route /ws/chat/{room}/, /healthz, /readyz, /metrics)"`
	Log  cli.Log
}

// Logging is the log section, for cli.Setup.
func (c config) Logging() cli.Log { return c.Log }

func loadConfig(environ map[string]string) (config, error) {
	return cli.Load(environ, func(cfg *config, bad cli.Bad) error {
		if !cli.ValidListenAddr(cfg.Addr) {
			return bad("ROOMCAST_ADDR", "want host:port or :port, e.g. :8080")
		}
		return nil
	})
}

func main() {
	cli.Main(context.Background(), name, run)
}

func run(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	if err := cli.AskedVersion(name, version, args, stdout); err != nil {
		return err
	}
	cfg, log, err := cli.Setup(cli.Command{Name: name, Version: version, Usage: usage}, args, env, stdout, stderr, loadConfig)
	if err != nil {
		return err
	}
	srv, err := cli.ListenMetrics(cfg.Addr, cli.NewRegistry(), log)
	if err != nil {
		return err
	}
	baseline.New().Register(srv.Mux)
	log.Info("listening", "addr", srv.Addr().String())
	// Connections are not drained: the first signal ends the process.
	return cli.Lifecycle(ctx, log, func(ctx context.Context) error { <-ctx.Done(); return nil }, nil, srv)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: roomcast-baseline [-h] [-version]

roomcast-baseline is the floor of roomcast's benchmarks: the broadcast server one would
write first on gws, in one process. It speaks roomcast's wire protocol, so that
roomcast-loadgen drives it unchanged: a client of /ws/chat/{room}/ sends
{"message": "..."} and every member of the room, the sender included, gets
{"type":"message","room":...,"message":...,"ts":...}. There is no broker, no history,
no send queue, no rate limit and no drain. Not for production.

  ROOMCAST_ADDR=127.0.0.1:18344 roomcast-baseline & pid=$!
  roomcast-loadgen -no-thresholds -scenario fanout-large -url ws://127.0.0.1:18344 -server-pid $pid

Environment:
`)
	envconfig.Usage(w, config{})
}
