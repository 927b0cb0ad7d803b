package main

import (
	"context"
	"io"

	"roomcast/pkg/cli"
)

// healthcheck probes this host's server at ROOMCAST_ADDR, for a HEALTHCHECK in an image
// without a shell.
func healthcheck(ctx context.Context, args []string, env map[string]string, stderr io.Writer) error {
	return cli.Healthcheck(ctx, args, env, "ROOMCAST_ADDR", ":8080", stderr)
}
