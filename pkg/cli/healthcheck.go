package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"roomcast/pkg/envconfig"
)

// Healthcheck is a command's `healthcheck` subcommand, for a Docker HEALTHCHECK in an
// image without a shell: it asks the command's own /healthz on this host, at the
// listen address in the environment variable addrVar (def when unset), and returns nil,
// having printed "healthy" on stderr, when it answers 200. A specific host in the
// address is asked; an unspecified one (":8081", "0.0.0.0:8081") means 127.0.0.1.
func Healthcheck(ctx context.Context, args []string, env map[string]string, addrVar, def string, stderr io.Writer) error {
	if len(args) > 0 {
		return Usagef("healthcheck takes no arguments, got %q", args[0])
	}
	addr := env[addrVar]
	if addr == "" {
		addr = def
	}
	if !ValidListenAddr(addr) {
		return envconfig.Invalid(env, addrVar, "want host:port or :port")
	}
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("healthcheck %s: status %d %s", url, resp.StatusCode, body)
	}
	fmt.Fprintln(stderr, "healthy")
	return nil
}
