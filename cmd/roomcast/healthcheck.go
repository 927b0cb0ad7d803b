package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"time"

	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
)

// healthcheck probes this host's server for a HEALTHCHECK in an image without a shell:
// /healthz at the port of ROOMCAST_PROBE_ADDR when it is set, else of ROOMCAST_ADDR. It
// asks 127.0.0.1 whatever host the variable names: a server that does not answer on
// loopback inside its own container is not healthy for Docker (the release test's
// broken image is one).
//
// With a probe listener, the public listener is checked too, with a TCP connect only:
// the kernel completes it from the listen backlog, so a storm of upgrades that the
// server is working through (ROOMCAST_MAX_HANDSHAKES at a time) does not fail the check,
// while a public listener bound where nobody can reach it does.
func healthcheck(ctx context.Context, args []string, env map[string]string, stderr io.Writer) error {
	if env["ROOMCAST_PROBE_ADDR"] == "" {
		return cli.Healthcheck(ctx, args, onLoopback(env, "ROOMCAST_ADDR"), "ROOMCAST_ADDR", ":8080", stderr)
	}
	if len(args) == 0 {
		if err := publicListening(ctx, env); err != nil {
			return err
		}
	}
	return cli.Healthcheck(ctx, args, onLoopback(env, "ROOMCAST_PROBE_ADDR"), "ROOMCAST_PROBE_ADDR", "", stderr)
}

// onLoopback returns env with the host of the address in name replaced by 127.0.0.1.
func onLoopback(env map[string]string, name string) map[string]string {
	if _, port, err := net.SplitHostPort(env[name]); err == nil && port != "" {
		env = maps.Clone(env)
		env[name] = "127.0.0.1:" + port
	}
	return env
}

// publicListening connects to the port of ROOMCAST_ADDR on 127.0.0.1 and hangs up.
func publicListening(ctx context.Context, env map[string]string) error {
	addr := env["ROOMCAST_ADDR"]
	if addr == "" {
		addr = ":8080"
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return envconfig.Invalid(env, "ROOMCAST_ADDR", "want host:port or :port")
	}
	target := net.JoinHostPort("127.0.0.1", port)
	d := net.Dialer{Timeout: 3 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return fmt.Errorf("healthcheck: the public listener (ROOMCAST_ADDR) at %s: %w", target, err)
	}
	return conn.Close()
}
