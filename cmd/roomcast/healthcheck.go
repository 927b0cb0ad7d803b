package main

import (
	"context"
	"io"
	"maps"
	"net"

	"roomcast/pkg/cli"
)

// healthcheck probes this host's server at the port of ROOMCAST_ADDR, for a HEALTHCHECK
// in an image without a shell. It asks 127.0.0.1 whatever host ROOMCAST_ADDR names: a
// server that does not answer on loopback inside its own container is not healthy for
// Docker (the release test's broken image is one).
func healthcheck(ctx context.Context, args []string, env map[string]string, stderr io.Writer) error {
	if _, port, err := net.SplitHostPort(env["ROOMCAST_ADDR"]); err == nil && port != "" {
		env = maps.Clone(env)
		env["ROOMCAST_ADDR"] = "127.0.0.1:" + port
	}
	return cli.Healthcheck(ctx, args, env, "ROOMCAST_ADDR", ":8080", stderr)
}
