package stack_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"roomcast/pkg/fleet/edge/edgetest"
	"roomcast/pkg/testenv"
)

// TLS through `just deploy` on a real Swarm: with TLS_CERT_FILE and TLS_KEY_FILE the
// published HTTPS_PORT answers over TLS with a certificate of the test's CA, with
// HSTS, from the active color, and HTTP_PORT redirects to it but for /healthz. New
// files and `just deploy` again rotate the certificate.
func TestEdgeTLSOnARealSwarm(t *testing.T) {
	requireSwarm(t)
	ca, rotated := edgetest.NewCA(t, t.TempDir()), edgetest.NewCA(t, t.TempDir())
	// Registered before newSwarmEnv's teardown, so it runs after: a secret in use
	// cannot be removed.
	t.Cleanup(func() {
		for _, c := range []edgetest.CA{ca, rotated} {
			for prefix, file := range map[string]string{"roomcast_tls_cert_": c.CertFile, "roomcast_tls_key_": c.KeyFile} {
				b, err := os.ReadFile(file)
				if err != nil {
					continue
				}
				sum := sha256.Sum256(b)
				_ = exec.Command("docker", "secret", "rm", prefix+hex.EncodeToString(sum[:])[:12]).Run()
			}
		}
	})
	httpsPort := testenv.FreePort(t)
	env := newSwarmEnv(t, "TAG=tls1", fmt.Sprintf("HTTPS_PORT=%d", httpsPort),
		"TLS_CERT_FILE="+ca.CertFile, "TLS_KEY_FILE="+ca.KeyFile)
	env.vars = append(env.vars, standinVars(t, env)...)
	mustSh(t, env, 5*time.Minute, "just", "build", "tls1")
	mustSh(t, env, 5*time.Minute, "just", "deploy")

	resp := httpsHealthz(t, ca, httpsPort)
	if resp.Header.Get("X-Roomcast-Color") != "blue" || resp.Header.Get("Strict-Transport-Security") != "max-age=31536000" {
		t.Errorf("HTTPS /healthz: color %q, HSTS %q; want blue and max-age=31536000",
			resp.Header.Get("X-Roomcast-Color"), resp.Header.Get("Strict-Transport-Security"))
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(env.edgeURL("/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := fmt.Sprintf("https://127.0.0.1:%d/", httpsPort); resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("plain GET /: %d to %q, want 308 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	resp, err = client.Get(env.edgeURL("/healthz"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("plain /healthz: %d, want 200 (balancers check it without TLS)", resp.StatusCode)
	}

	// Rotation: new files, new secrets, mounted by the next deploy; the new certificate
	// (of another CA) is then what nginx presents.
	env.vars = append(env.vars, "TLS_CERT_FILE="+rotated.CertFile, "TLS_KEY_FILE="+rotated.KeyFile)
	mustSh(t, env, 5*time.Minute, "just", "deploy")
	httpsHealthz(t, rotated, httpsPort)
}

// httpsHealthz waits (bounded) until https://127.0.0.1:port/healthz answers 200 with a
// certificate that ca signed, and returns that answer.
func httpsHealthz(t *testing.T, ca edgetest.CA, port int) *http.Response {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", port))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return resp
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTPS on the published port with the certificate of %s: %v %v", ca.CertFile, resp, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
