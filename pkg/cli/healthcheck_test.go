package cli_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"roomcast/pkg/cli"
)

func TestHealthcheckAsksHealthzOnThisHost(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "stuck")
	}))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().String()[strings.LastIndex(srv.Listener.Addr().String(), ":"):]
	var stderr strings.Builder
	for _, addr := range []string{port, "0.0.0.0" + port, srv.Listener.Addr().String()} {
		if err := cli.Healthcheck(context.Background(), nil, map[string]string{"X_ADDR": addr}, "X_ADDR", ":1", &stderr); err != nil {
			t.Fatalf("X_ADDR=%s: %v", addr, err)
		}
	}
	if stderr.String() != strings.Repeat("healthy\n", 3) {
		t.Fatalf("stderr %q", stderr.String())
	}
	status = http.StatusServiceUnavailable
	if err := cli.Healthcheck(context.Background(), nil, map[string]string{"X_ADDR": port}, "X_ADDR", ":1", io.Discard); err == nil || !strings.Contains(err.Error(), "status 503 stuck") {
		t.Fatalf("503: %v", err)
	}
	if code := cli.ExitCode("x", cli.Healthcheck(context.Background(), nil, map[string]string{"X_ADDR": "8081"}, "X_ADDR", ":1", io.Discard), io.Discard); code != 2 {
		t.Fatalf("a bad address exits %d, want 2", code)
	}
	if code := cli.ExitCode("x", cli.Healthcheck(context.Background(), []string{"now"}, nil, "X_ADDR", port, io.Discard), io.Discard); code != 2 {
		t.Fatalf("an argument exits %d, want 2", code)
	}
}
