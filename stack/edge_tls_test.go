package stack_test

import (
	"os/exec"
	"strings"
	"testing"

	"roomcast/pkg/testenv"
)

// With stack/edge-tls.yml merged (as roomcast-release does when TLS_CERT_FILE is set),
// nginx mounts the certificate and key as secrets for its user only, listens for HTTPS
// on 8443 published as HTTPS_PORT, and names that port in its redirect; without the
// secret IDs the file refuses to deploy.
func TestEdgeTLSStackMountsTheSecretsAndPublishesHTTPS(t *testing.T) {
	docker := testenv.Program(t, "docker")
	config := func(env ...string) (string, error) {
		cmd := exec.Command(docker, "stack", "config", "-c", "edge.yml", "-c", "edge-tls.yml")
		cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + t.TempDir(), "ACTIVE_COLOR=blue"}, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := config("TLS_CERT_SECRET_ID=c0ffee", "TLS_KEY_SECRET_ID=beef", "HTTPS_PORT=9443")
	if err != nil {
		t.Fatalf("edge.yml + edge-tls.yml: %v\n%s", err, out)
	}
	for _, want := range []string{
		"ROOMCAST_EDGE_TLS_CERT_FILE: /run/secrets/tls_cert", "ROOMCAST_EDGE_TLS_KEY_FILE: /run/secrets/tls_key",
		`ROOMCAST_EDGE_TLS_LISTEN_PORT: "8443"`, `ROOMCAST_EDGE_TLS_PUBLIC_PORT: "9443"`,
		"target: 8443\n        published: 9443", "target: 8080\n        published: 80",
		"source: tls_key\n        target: tls_key\n        uid: \"101\"\n        gid: \"101\"\n        mode: 256",
		"source: tls_cert\n        target: tls_cert\n        uid: \"101\"\n        gid: \"101\"\n        mode: 256",
		"name: roomcast_tls_cert_c0ffee", "name: roomcast_tls_key_beef",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered edge.yml + edge-tls.yml lacks %q:\n%s", want, out)
		}
	}
	for _, missing := range []string{"TLS_CERT_SECRET_ID", "TLS_KEY_SECRET_ID"} {
		env := []string{"TLS_CERT_SECRET_ID=c0ffee", "TLS_KEY_SECRET_ID=beef"}
		env = slicesWithout(env, missing)
		if out, err := config(env...); err == nil || !strings.Contains(out, missing) {
			t.Errorf("edge-tls.yml without %s: err=%v, output should name it:\n%s", missing, err, out)
		}
	}
	// Alone, edge.yml stays HTTP.
	out, err = stackConfig(t, "edge.yml", "ACTIVE_COLOR=blue")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "8443") || strings.Contains(out, "TLS") {
		t.Errorf("edge.yml alone mentions TLS:\n%s", out)
	}
}

// slicesWithout is env without the variable name.
func slicesWithout(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
