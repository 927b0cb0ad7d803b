package nginx_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"roomcast/pkg/fleet/edge"
	"roomcast/pkg/fleet/edge/edgetest"
	"roomcast/pkg/testenv"
)

// /edgez, the load balancer's health check of the edge, follows roomcast-edge's file
// alone: 200 while it is there, 503 at once without it, while nginx keeps proxying
// everything else; on the plain port also with TLS (balancers check without TLS).
func TestEdgezFollowsTheHealthFile(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) {
			green := backend(t, "127.0.0.1:0", "green", http.StatusOK)
			dir := t.TempDir()
			searchable(t, dir)
			p := serveParams(t, dir, "127.0.0.1", green.port())
			p.HealthDir = filepath.Join(dir, "health")
			if withTLS {
				ca := edgetest.NewCA(t, dir)
				p.TLSCertFile, p.TLSKeyFile = ca.CertFile, ca.KeyFile
				p.TLSListenPort, p.TLSPublicPort = testenv.FreePort(t), 443
			}
			if err := os.MkdirAll(p.HealthDir, 0o755); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(p.HealthDir, edge.HealthFile)
			if err := os.WriteFile(file, []byte("ok\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			path, text := MustRender(t, MustTemplate(t), dir, p)
			if n := strings.Count(text, "location = /edgez {"); n != map[bool]int{false: 1, true: 2}[withTLS] {
				t.Fatalf("/edgez rendered %d times:\n%s", n, text)
			}
			MustServe(t, bin, path, p.ListenPort)
			base := fmt.Sprintf("http://127.0.0.1:%d", p.ListenPort)

			resp, body := get(t, base+"/edgez")
			if resp.StatusCode != http.StatusOK || body != "ok\n" || resp.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("/edgez with the file: %d %q (Cache-Control %q), want 200 ok, no-store", resp.StatusCode, body, resp.Header.Get("Cache-Control"))
			}
			hits := green.hits.Load()
			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
			if resp, _ := get(t, base+"/edgez"); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("/edgez without the file: %d (Cache-Control %q), want 503, no-store", resp.StatusCode, resp.Header.Get("Cache-Control"))
			}
			if green.hits.Load() != hits {
				t.Fatal("/edgez reached the app")
			}
			// Everything else is served as before.
			if resp, body := get(t, base+"/healthz"); resp.StatusCode != http.StatusOK || body != "green\n" {
				t.Fatalf("/healthz while /edgez fails: %d %q, want 200 from green", resp.StatusCode, body)
			}
			if !withTLS {
				conn, r, resp := upgrade(t, p.ListenPort)
				defer conn.Close()
				fmt.Fprint(conn, "hello\n")
				if line, err := r.ReadString('\n'); resp.StatusCode != http.StatusSwitchingProtocols || err != nil || line != "echo green: hello\n" {
					t.Fatalf("upgrade while /edgez fails: %d, %q %v", resp.StatusCode, line, err)
				}
			}
		})
	}
}

// Without HealthDir there is no /edgez of nginx's own: the path is the app's.
func TestWithoutAHealthDirEdgezIsTheApps(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	green := backend(t, "127.0.0.1:0", "green", http.StatusOK)
	dir := t.TempDir()
	p := serveParams(t, dir, "127.0.0.1", green.port())
	path, text := MustRender(t, MustTemplate(t), dir, p)
	if strings.Contains(text, "/edgez") {
		t.Fatalf("/edgez rendered without HealthDir:\n%s", text)
	}
	MustServe(t, bin, path, p.ListenPort)
	if resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/edgez", p.ListenPort)); resp.StatusCode != http.StatusOK || body != "green\n" {
		t.Fatalf("/edgez: %d %q, want the app's answer", resp.StatusCode, body)
	}
}

// searchable lets nginx's workers reach files under dir, a t.TempDir (0700 with its
// parent): run by root, they run as nginx's default user.
func searchable(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}
