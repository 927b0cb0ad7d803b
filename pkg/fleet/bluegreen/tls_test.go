package bluegreen_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"slices"
	"strings"
	"testing"

	"roomcast/pkg/fleet/edge/edgetest"
)

// contentSecret is the Swarm secret name a deploy gives file under prefix, and the
// file's content.
func contentSecret(t *testing.T, prefix, file string) (name string, data []byte) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return prefix + hex.EncodeToString(sum[:])[:12], data
}

// With TLS_CERT_FILE and TLS_KEY_FILE the certificate and key become Swarm secrets
// named after their content, made once, and the edge is deployed with
// stack/edge-tls.yml too; the key shows in no output and no stack variable.
func TestTLSFilesBecomeSwarmSecretsAndTheTLSComposeFile(t *testing.T) {
	h := newHarness(t)
	ca := edgetest.NewCA(t, t.TempDir())
	h.rel.Config.TLSCertFile, h.rel.Config.TLSKeyFile = ca.CertFile, ca.KeyFile
	envs := h.edgeEnv()
	for i := range 2 {
		if err := h.rel.Deploy(h.ctx()); err != nil {
			t.Fatalf("deploy %d: %v\n%s", i+1, err, h.out)
		}
	}
	certName, cert := contentSecret(t, "roomcast_tls_cert_", ca.CertFile)
	keyName, key := contentSecret(t, "roomcast_tls_key_", ca.KeyFile)
	for _, s := range []struct {
		name string
		data []byte
	}{{certName, cert}, {keyName, key}} {
		data, labels, ok := h.fake.Secret(s.name)
		if !ok || string(data) != string(s.data) || labels["roomcast.tls"] != "true" {
			t.Errorf("secret %s: %v, labels %v, want the file's content", s.name, ok, labels)
		}
		if n := strings.Count(h.out.String(), "creating Swarm secret "+s.name); n != 1 {
			t.Errorf("secret %s made %d times in two deploys, want once\n%s", s.name, n, h.out)
		}
	}
	if len(*envs) != 2 {
		t.Fatalf("%d edge deploys, want 2", len(*envs))
	}
	for i, env := range *envs {
		if "roomcast_tls_cert_"+env["TLS_CERT_SECRET_ID"] != certName || "roomcast_tls_key_"+env["TLS_KEY_SECRET_ID"] != keyName {
			t.Errorf("edge deploy %d: TLS_CERT_SECRET_ID=%q TLS_KEY_SECRET_ID=%q, want the secrets %s and %s",
				i+1, env["TLS_CERT_SECRET_ID"], env["TLS_KEY_SECRET_ID"], certName, keyName)
		}
	}
	for i, files := range h.stacks.EdgeFiles() {
		if !slices.Equal(files, []string{"stack/edge.yml", "stack/edge-tls.yml"}) {
			t.Errorf("edge deploy %d with %v, want stack/edge.yml and stack/edge-tls.yml", i+1, files)
		}
	}
	// Every line of the key's PEM body: none may show anywhere.
	for line := range strings.Lines(string(key)) {
		if !strings.HasPrefix(line, "-----") {
			h.expectNotLogged(line, *envs)
		}
	}
}

// Without the TLS files the edge stays HTTP: no secret, no variable, no extra file.
func TestWithoutTLSFilesTheEdgeStaysHTTP(t *testing.T) {
	h := newHarness(t)
	envs := h.edgeEnv()
	if err := h.rel.Deploy(h.ctx()); err != nil {
		t.Fatalf("deploy: %v\n%s", err, h.out)
	}
	if strings.Contains(h.out.String(), "roomcast_tls_") {
		t.Errorf("a deploy without TLS files made a TLS secret:\n%s", h.out)
	}
	for _, env := range *envs {
		if _, ok := env["TLS_CERT_SECRET_ID"]; ok {
			t.Errorf("edge deployed with TLS_CERT_SECRET_ID=%q", env["TLS_CERT_SECRET_ID"])
		}
	}
	for _, files := range h.stacks.EdgeFiles() {
		if !slices.Equal(files, []string{"stack/edge.yml"}) {
			t.Errorf("edge deployed with %v, want stack/edge.yml alone", files)
		}
	}
}

// A key that is not the certificate's, or one file alone, fails the deploy before any
// TLS secret is made or the edge is touched.
func TestABadTLSPairFailsTheDeployFirst(t *testing.T) {
	ca, other := edgetest.NewCA(t, t.TempDir()), edgetest.NewCA(t, t.TempDir())
	for _, tt := range []struct{ name, cert, key, want string }{
		{"another certificate's key", ca.CertFile, other.KeyFile, "are not a certificate and its key"},
		{"key as certificate", ca.KeyFile, ca.KeyFile, "are not a certificate and its key"},
		{"certificate alone", ca.CertFile, "", "want both set or neither"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.rel.Config.TLSCertFile, h.rel.Config.TLSKeyFile = tt.cert, tt.key
			err := h.rel.Deploy(h.ctx())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("deploy: %v, want an error saying %q", err, tt.want)
			}
			if len(h.stacks.EdgeFiles()) != 0 || strings.Contains(h.out.String(), "roomcast_tls_") {
				t.Fatalf("a bad pair reached the Swarm:\n%s", h.out)
			}
		})
	}
}
