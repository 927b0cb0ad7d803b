package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// standin starts run on a free port with the given directories and returns its URL.
func standin(t *testing.T, provisioning, dashboards string) string {
	t.Helper()
	return standinWith(t, map[string]string{"GF_PATHS_PROVISIONING": provisioning, "ROOMCAST_GRAFANA_DASHBOARDS": dashboards})
}

// standinWith starts run on a free port with env and returns its URL.
func standinWith(t *testing.T, env map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan net.Addr, 1)
	done := make(chan error, 1)
	env["GF_SERVER_HTTP_PORT"] = "0"
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

// status is the status code of method path at url, with basic authentication when
// user is not empty.
func status(t *testing.T, method, url, user, password string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestLetsInWhomGrafanaWould: the admin's credentials from the variables or a file,
// anonymous access and sign-up as the variables say, with Grafana's status codes.
func TestLetsInWhomGrafanaWould(t *testing.T) {
	password := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(password, []byte("s3cret from a file\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	type request struct {
		method, path, user, password string
		want                         int
	}
	for _, tt := range []struct {
		name     string
		env      map[string]string
		requests []request
	}{
		{"Grafana's defaults", map[string]string{}, []request{
			{"GET", "/api/org", "", "", 401},
			{"GET", "/api/org", "admin", "admin", 200},
			{"GET", "/api/user", "admin", "admin", 200},
			{"POST", "/api/user/signup", "", "", 401},
		}},
		{"the password from a file", map[string]string{
			"GF_SECURITY_ADMIN_USER": "ops", "GF_SECURITY_ADMIN_PASSWORD__FILE": password,
			"GF_AUTH_ANONYMOUS_ENABLED": "false", "GF_USERS_ALLOW_SIGN_UP": "false",
		}, []request{
			{"GET", "/api/org", "", "", 401},
			{"GET", "/api/org", "admin", "admin", 401},
			{"GET", "/api/org", "ops", "admin", 401},
			{"GET", "/api/org", "ops", "s3cret from a file\n", 401},
			{"GET", "/api/org", "ops", "s3cret from a file", 200},
			{"GET", "/api/user", "ops", "s3cret from a file", 200},
			{"GET", "/api/user", "", "", 401},
			{"POST", "/api/user/signup", "", "", 401},
		}},
		{"the password as a variable", map[string]string{"GF_SECURITY_ADMIN_PASSWORD": "plain"}, []request{
			{"GET", "/api/org", "admin", "admin", 401},
			{"GET", "/api/org", "admin", "plain", 200},
		}},
		{"anonymous access and sign-up on", map[string]string{"GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_USERS_ALLOW_SIGN_UP": "true"}, []request{
			{"GET", "/api/org", "", "", 200},
			{"GET", "/api/org", "admin", "wrong", 401},
			{"GET", "/api/user", "", "", 401},
			{"POST", "/api/user/signup", "", "", 200},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := standinWith(t, tt.env)
			for _, r := range tt.requests {
				if got := status(t, r.method, url+r.path, r.user, r.password); got != r.want {
					t.Errorf("%s %s as %q:%q: %d, want %d", r.method, r.path, r.user, r.password, got, r.want)
				}
			}
		})
	}
}

func TestRefusesToStartWithoutItsPassword(t *testing.T) {
	for _, tt := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"a missing file", map[string]string{"GF_SECURITY_ADMIN_PASSWORD__FILE": filepath.Join(t.TempDir(), "missing")}, "reading GF_SECURITY_ADMIN_PASSWORD__FILE"},
		{"both forms", map[string]string{"GF_SECURITY_ADMIN_PASSWORD__FILE": "/dev/null", "GF_SECURITY_ADMIN_PASSWORD": "x"}, "are exclusive"},
		{"a bad switch", map[string]string{"GF_AUTH_ANONYMOUS_ENABLED": "maybe"}, "GF_AUTH_ANONYMOUS_ENABLED"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.env["GF_SERVER_HTTP_PORT"] = "0"
			err := run(context.Background(), func(k string) string { return tt.env[k] }, io.Discard, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}
