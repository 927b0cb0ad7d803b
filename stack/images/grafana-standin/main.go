// Command grafana-standin stands in for Grafana in a Swarm test where the Grafana image
// cannot be had (it is not in Debian and no registry is reachable). It is NOT Grafana:
// it answers GET /api/health only, and only after checking that the provisioning files
// stack/edge.yml mounts are where Grafana reads them and that every dashboard parses as
// JSON. The dashboards themselves are checked against a real Prometheus by
// monitoring/'s tests.
//
// It listens on GF_SERVER_HTTP_PORT (default 3000) and reads GF_PATHS_PROVISIONING
// (default /etc/grafana/provisioning) and ROOMCAST_GRAFANA_DASHBOARDS (default
// /etc/grafana/dashboards).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "grafana-standin:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done; listening is sent the bound address when not nil.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer, listening chan<- net.Addr) error {
	port := or(getenv("GF_SERVER_HTTP_PORT"), "3000")
	provisioning := or(getenv("GF_PATHS_PROVISIONING"), "/etc/grafana/provisioning")
	dashboards := or(getenv("ROOMCAST_GRAFANA_DASHBOARDS"), "/etc/grafana/dashboards")
	fmt.Fprintln(stdout, "grafana-standin: a STAND-IN for Grafana, answering /api/health only; this is not Grafana")

	problems := check(provisioning, dashboards)
	for _, p := range problems {
		fmt.Fprintln(stdout, "grafana-standin: provisioning problem:", p)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		body := map[string]any{"database": "ok", "version": "stand-in", "standin": true}
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			body["database"], body["problems"] = "provisioning files missing or invalid", problems
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return fmt.Errorf("listening on :%s: %w", port, err)
	}
	if listening != nil {
		listening <- ln.Addr()
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}

// check lists what Grafana would not find: a provider file in each provisioning
// directory, and at least one dashboard, each valid JSON with a uid.
func check(provisioning, dashboards string) []string {
	var problems []string
	for _, dir := range []string{"datasources", "dashboards"} {
		files, _ := filepath.Glob(filepath.Join(provisioning, dir, "*.y*ml"))
		if len(files) == 0 {
			problems = append(problems, fmt.Sprintf("no YAML file in %s", filepath.Join(provisioning, dir)))
		}
	}
	files, _ := filepath.Glob(filepath.Join(dashboards, "*.json"))
	if len(files) == 0 {
		problems = append(problems, fmt.Sprintf("no dashboard in %s", dashboards))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		var d struct {
			UID string `json:"uid"`
		}
		if err == nil {
			err = json.Unmarshal(b, &d)
		}
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", f, err))
		case strings.TrimSpace(d.UID) == "":
			problems = append(problems, fmt.Sprintf("%s: no uid", f))
		}
	}
	return problems
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
