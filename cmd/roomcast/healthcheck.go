package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
)

// healthcheck probes this host's server, for a HEALTHCHECK in an image without a shell.
func healthcheck(ctx context.Context, args []string, env map[string]string, stderr io.Writer) error {
	if len(args) > 0 {
		return cli.Usagef("healthcheck takes no arguments, got %q", args[0])
	}
	addr := env["ROOMCAST_ADDR"]
	if addr == "" {
		addr = ":8080"
	}
	if !cli.ValidListenAddr(addr) {
		return envconfig.Invalid(env, "ROOMCAST_ADDR", "want host:port or :port")
	}
	_, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort("127.0.0.1", port) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck %s: status %d", url, resp.StatusCode)
	}
	fmt.Fprintln(stderr, "healthy")
	return nil
}
