// Command roomcast is one replica of the roomcast chat server. With no NATS_URL it
// starts an embedded NATS server and is a complete single-node system;
// `roomcast healthcheck` probes a running server for a Docker HEALTHCHECK.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"roomcast/pkg/envconfig"
	"roomcast/pkg/server/replica"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	err := run(context.Background(), os.Args[1:], envconfig.Environ(), os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

// errInterrupted means a second signal cut the drain short.
var errInterrupted = errors.New("interrupted by a second signal")

// usageError is a mistake on the command line or in the environment: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	var ee *envconfig.Error
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee), errors.As(err, &ue):
		fmt.Fprintln(stderr, "roomcast:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "roomcast:", err)
		return 1
	}
}

func run(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(ctx, args[1:], env, stderr)
	}
	if len(args) > 0 && args[0] == "token" {
		return token(args[1:], env, stdout, time.Now())
	}
	fs := flag.NewFlagSet("roomcast", flag.ContinueOnError)
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
	log.Info("starting roomcast", "version", version, "config", envconfig.LogValue(cfg))

	// Catch signals before the port is bound: from then on a SIGTERM must drain.
	sigCtx, stopSignals := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()
	repCfg, err := cfg.replica(version)
	if err != nil {
		return err
	}
	rep, err := replica.New(repCfg, log)
	if err != nil {
		return err
	}
	log.Info("listening", "addr", rep.Addr().String(), "color", cfg.Color, "instance", cfg.Instance)
	served := make(chan error, 1)
	go func() { served <- rep.Serve() }()
	select {
	case err := <-served:
		rep.Close()
		return err
	case <-sigCtx.Done():
	}
	// A second signal cancels the drain. Register it before the first handler is
	// released so no signal falls through to the default action.
	abortCtx, stopAbort := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stopAbort()
	stopSignals()
	log.Info("signal received, draining")
	if err := rep.Drain(abortCtx); err != nil {
		if abortCtx.Err() != nil {
			return errInterrupted
		}
		return err
	}
	return <-served
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: roomcast [-h]
       roomcast healthcheck
       roomcast token -sub SUBJECT -rooms ROOM[,PREFIX*...] [-ttl 1h] [-read-only]

roomcast is one replica of the roomcast chat server. It serves WebSocket rooms at
/ws/chat/{room}/, /healthz, /readyz, /metrics and a chat page at /. With NATS_URL
empty it starts an embedded NATS server, so one process is a complete system.
SIGTERM or SIGINT drains it gracefully; a second signal exits at once.

"roomcast healthcheck" probes /healthz on 127.0.0.1 at the port of ROOMCAST_ADDR and
exits 0 if it answers 200, else 1. "roomcast token" prints a token signed with the
HS256 key of ROOMCAST_JWT_SECRET_FILE or ROOMCAST_JWT_SECRET (see roomcast token -h).

Configuration (environment variables):
`)
	envconfig.Usage(w, config{})
}
