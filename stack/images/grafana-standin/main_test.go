package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// standin starts run on a free port with the given directories and returns its URL.
func standin(t *testing.T, provisioning, dashboards string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan net.Addr, 1)
	done := make(chan error, 1)
	env := map[string]string{"GF_SERVER_HTTP_PORT": "0", "GF_PATHS_PROVISIONING": provisioning, "ROOMCAST_GRAFANA_DASHBOARDS": dashboards}
	go func() { done <- run(ctx, func(k string) string { return env[k] }, io.Discard, listening) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not return")
		}
	})
	select {
	case addr := <-listening:
		return "http://" + addr.String()
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not listening")
	}
	return ""
}

func health(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url + "/api/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestHealthyOnlyWithTheRepositorysProvisioningFiles(t *testing.T) {
	grafana := filepath.Join("..", "..", "..", "monitoring", "grafana")
	code, body := health(t, standin(t, filepath.Join(grafana, "provisioning"), filepath.Join(grafana, "dashboards")))
	if code != 200 || body["standin"] != true {
		t.Fatalf("with monitoring/grafana: %d %v", code, body)
	}

	empty := t.TempDir()
	if code, body := health(t, standin(t, empty, empty)); code != 503 || body["problems"] == nil {
		t.Fatalf("with nothing mounted: %d %v", code, body)
	}

	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "x.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _ := health(t, standin(t, filepath.Join(grafana, "provisioning"), broken)); code != 503 {
		t.Fatalf("with a broken dashboard: %d", code)
	}
}
