// Command roomcast is one replica of the roomcast chat server. With no NATS_URL it
// starts an embedded NATS server and is a complete single-node system;
// `roomcast healthcheck` probes a running server for a Docker HEALTHCHECK.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	oklog "github.com/oklog/run"

	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/server/replica"
)

// version is set at build time with -ldflags "-X main.version=..."; cli.Version falls
// back to the build info.
var version = "dev"

func main() {
	err := run(context.Background(), os.Args[1:], envconfig.Environ(), os.Stdout, os.Stderr)
	os.Exit(cli.ExitCode("roomcast", err, os.Stderr))
}

// errInterrupted means a second signal cut the drain short.
var errInterrupted = errors.New("interrupted by a second signal")

func run(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	// Before any subcommand: each answers -version, none runs.
	if err := cli.AskedVersion("roomcast", version, args, stdout); err != nil {
		return err
	}
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(ctx, args[1:], env, stderr)
	}
	if len(args) > 0 && args[0] == "token" {
		return token(args[1:], env, stdout, time.Now())
	}
	fs := cli.NewFlagSet("roomcast", stdout, stderr, usage)
	if err := cli.Parse(fs, args, version, stdout, true); err != nil {
		return err
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	cfg.Server.HTTP.Identity.Version = cli.Version(version)
	log := cfg.Log.New(stderr)
	log.Info("starting roomcast", "version", cfg.Server.HTTP.Identity.Version, "config", envconfig.LogValue(cfg))
	return serve(ctx, cfg.Server, log)
}

// serve runs one replica until a signal drains it. It stops in this order:
//   - first SIGTERM or SIGINT: the drain actor runs Replica.Drain (not ready, wait,
//     close the WebSockets, drain NATS, stop HTTP); when it returns, the group stops the
//     others: the replica is closed (nothing left after a drain) and the signals released;
//   - second signal: the drain is cancelled, Drain closes everything at once, and run
//     returns errInterrupted (exit 1);
//   - Serve failing: the group stops the others at once (Close, no drain).
func serve(ctx context.Context, cfg replica.Config, log *slog.Logger) error {
	draining := make(chan struct{})
	abortCtx, abort := context.WithCancel(ctx)
	defer abort()
	// Catch signals before the port is bound: from then on a SIGTERM must drain.
	signals, stopSignals := cli.Signals(ctx, log, func() { close(draining) }, abort)
	rep, err := replica.New(cfg, log)
	if err != nil {
		stopSignals(err)
		_ = signals() // returns at once, releasing the signals
		return err
	}
	attrs := []any{"addr", rep.Addr().String(), "color", cfg.HTTP.Identity.Color, "instance", cfg.HTTP.Identity.Instance}
	if probe := rep.ProbeAddr(); probe != nil {
		attrs = append(attrs, "probe_addr", probe.String())
	}
	if profiles := rep.PprofAddr(); profiles != nil {
		attrs = append(attrs, "pprof_addr", profiles.String())
	}
	log.Info("listening", attrs...)

	var g oklog.Group
	g.Add(signals, stopSignals)
	stopped := make(chan struct{})
	var stopOnce sync.Once
	g.Add(func() error {
		if err := rep.Serve(); err != nil {
			return err
		}
		<-stopped // Serve returns once Drain stops HTTP: the drain actor decides the end
		return nil
	}, func(error) {
		rep.Close()
		stopOnce.Do(func() { close(stopped) })
	})
	quit := make(chan struct{})
	var quitOnce sync.Once
	g.Add(func() error {
		select {
		case <-draining:
		case <-quit:
			return nil
		}
		if err := rep.Drain(abortCtx); err != nil {
			if abortCtx.Err() != nil {
				return errInterrupted
			}
			return err
		}
		return nil
	}, func(error) {
		abort() // the group ends early only if serving failed or ctx ended: no drain then
		quitOnce.Do(func() { close(quit) })
	})
	return g.Run()
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: roomcast [-h] [-version]
       roomcast healthcheck
       roomcast token -sub SUBJECT -rooms ROOM[,PREFIX*...] [-ttl 1h] [-read-only]

roomcast is one replica of the roomcast chat server. It serves WebSocket rooms at
/ws/chat/{room}/, /healthz, /readyz, /metrics and a chat page at /; with
ROOMCAST_PROBE_ADDR also /healthz, /readyz and /metrics alone on that address, and with
ROOMCAST_PPROF_ADDR Go's profiles at /debug/pprof/ alone on that one. With
NATS_URL empty it starts an embedded NATS server, so one process is a complete system.
SIGTERM or SIGINT drains it gracefully; a second signal exits at once.

"roomcast healthcheck" probes /healthz on 127.0.0.1 at the port of ROOMCAST_PROBE_ADDR
(then also connects to the port of ROOMCAST_ADDR), or of ROOMCAST_ADDR when that is
unset, and exits 0 if it answers 200, else 1. "roomcast token" prints a token signed with the
HS256 key of ROOMCAST_JWT_SECRET_FILE or ROOMCAST_JWT_SECRET (see roomcast token -h).

Configuration (environment variables):
`)
	envconfig.Usage(w, config{})
}
