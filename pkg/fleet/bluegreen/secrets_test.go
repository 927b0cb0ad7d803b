package bluegreen_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// grafanaSecret is the Swarm secret name a deploy gives the password in file.
func grafanaSecret(t *testing.T, file string) (name, password string) {
	t.Helper()
	name, data := contentSecret(t, "roomcast_grafana_admin_", file)
	return name, string(data)
}

// edgeEnv records the environment of each edge stack deploy.
func (h *harness) edgeEnv() *[]map[string]string {
	var envs []map[string]string
	h.stacks.before = func(name string, env map[string]string) error {
		if name == "edge" {
			envs = append(envs, env)
		}
		return nil
	}
	return &envs
}

// expectNotLogged fails when the password shows in the release's output or in any
// variable given to a stack deploy.
func (h *harness) expectNotLogged(password string, envs []map[string]string) {
	h.t.Helper()
	password = strings.TrimSpace(password)
	if strings.Contains(h.out.String(), password) {
		h.t.Errorf("the password is in the output:\n%s", h.out)
	}
	for _, env := range envs {
		for k, v := range env {
			if strings.Contains(v, password) {
				h.t.Errorf("the password is in the stack deploy's %s", k)
			}
		}
	}
}

func TestGrafanaAdminPasswordIsASwarmSecretMadeOnTheFirstDeploy(t *testing.T) {
	h := newHarness(t)
	h.rel.Config.GrafanaAdminUser = "ops"
	envs := h.edgeEnv()
	if err := h.rel.Deploy(h.ctx()); err != nil {
		t.Fatalf("deploy: %v\n%s", err, h.out)
	}
	info, err := os.Stat(h.grafanaPassword)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v, want one readable by its owner only", info, err)
	}
	name, password := grafanaSecret(t, h.grafanaPassword)
	if n := len(strings.TrimSpace(password)); n < 24 {
		t.Errorf("made a password of %d characters, want 24 or more", n)
	}
	data, labels, ok := h.fake.Secret(name)
	if !ok || string(data) != password || labels["roomcast.grafana"] != "true" {
		t.Fatalf("secret %s: %v, labels %v\n%s", name, ok, labels, h.out)
	}
	if len(*envs) != 1 {
		t.Fatalf("%d edge deploys, want 1", len(*envs))
	}
	env := (*envs)[0]
	if "roomcast_grafana_admin_"+env["GRAFANA_ADMIN_SECRET_ID"] != name || env["GRAFANA_ADMIN_USER"] != "ops" {
		t.Errorf("edge deployed with GRAFANA_ADMIN_SECRET_ID=%q GRAFANA_ADMIN_USER=%q, want the secret %s and ops",
			env["GRAFANA_ADMIN_SECRET_ID"], env["GRAFANA_ADMIN_USER"], name)
	}
	for _, want := range []string{"creating Grafana's admin password in " + h.grafanaPassword, "creating Swarm secret " + name} {
		if !strings.Contains(h.out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, h.out)
		}
	}

	// The next deploy reuses file and secret; a promote does not touch them.
	creates := h.fake.Count("POST /v1.41/secrets/create")
	if err := h.rel.Deploy(h.ctx()); err != nil {
		t.Fatalf("second deploy: %v\n%s", err, h.out)
	}
	if err := h.rel.Promote(h.ctx(), "t2"); err != nil {
		t.Fatalf("promote: %v\n%s", err, h.out)
	}
	if again, _ := grafanaSecret(t, h.grafanaPassword); again != name {
		t.Errorf("the second deploy made a new password (%s, was %s)", again, name)
	}
	if n := h.fake.Count("POST /v1.41/secrets/create"); n != creates {
		t.Errorf("%d secrets created by the second deploy and the promote, want none", n-creates)
	}
	if got := (*envs)[1]["GRAFANA_ADMIN_SECRET_ID"]; got != env["GRAFANA_ADMIN_SECRET_ID"] {
		t.Errorf("second deploy mounts %q, want %q", got, env["GRAFANA_ADMIN_SECRET_ID"])
	}
	h.expectNotLogged(password, *envs)
}

// TestANewGrafanaPasswordFileIsANewSecret: rotation is a new file; the old secret
// stays for the services that still mount it.
func TestANewGrafanaPasswordFileIsANewSecret(t *testing.T) {
	h := newHarness(t)
	envs := h.edgeEnv()
	if err := h.rel.Deploy(h.ctx()); err != nil {
		t.Fatalf("deploy: %v\n%s", err, h.out)
	}
	old, _ := grafanaSecret(t, h.grafanaPassword)
	if err := os.WriteFile(h.grafanaPassword, []byte("a new password, rotated by hand\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.rel.Deploy(h.ctx()); err != nil {
		t.Fatalf("deploy: %v\n%s", err, h.out)
	}
	name, password := grafanaSecret(t, h.grafanaPassword)
	if data, _, ok := h.fake.Secret(name); !ok || string(data) != password || name == old {
		t.Fatalf("secret %s (old %s): %v", name, old, ok)
	}
	if _, _, ok := h.fake.Secret(old); !ok {
		t.Errorf("the old secret %s was removed", old)
	}
	if got := "roomcast_grafana_admin_" + (*envs)[1]["GRAFANA_ADMIN_SECRET_ID"]; got != name {
		t.Errorf("the deploy after the rotation mounts %s, want %s", got, name)
	}
	h.expectNotLogged(password, *envs)
}

func TestGrafanaPasswordFilesRefused(t *testing.T) {
	for _, tt := range []struct {
		name    string
		content *string // nil: the file does not exist
		want    string
	}{
		{"a named file that is missing", nil, "is missing or empty"},
		{"an empty file", ptrTo(""), "is missing or empty"},
		{"admin", ptrTo("admin\n"), "holds less than 16 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			file := filepath.Join(t.TempDir(), "grafana-password")
			if tt.content != nil {
				if err := os.WriteFile(file, []byte(*tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			h.rel.Config.GrafanaAdminPasswordFile = file
			err := h.rel.Deploy(h.ctx())
			h.expectErr(err, "GRAFANA_ADMIN_PASSWORD_FILE="+file+" "+tt.want)
			if _, err := os.Stat(file); tt.content == nil && err == nil {
				t.Error("a named file that was missing was made")
			}
			if d := h.stacks.Deploys(); len(d) != 0 {
				t.Errorf("deployed %v", d)
			}
			// The JWT key's and the three of NATS (natsauth_test.go), made by every deploy
			// before the edge's.
			if n := h.fake.Count("POST /v1.41/secrets/create"); n != 4 {
				t.Errorf("%d secrets created, want the JWT key's and NATS' only", n)
			}
		})
	}
}

func ptrTo(s string) *string { return &s }

func TestJWTKeyShorterThanTheServersTakeIsRefused(t *testing.T) {
	h := newHarness(t)
	file := filepath.Join(t.TempDir(), "jwt-secret")
	// 31 bytes: what the servers refuse (HS256 keys of at least 32 bytes, RFC 7518).
	if err := os.WriteFile(file, []byte(strings.Repeat("k", 31)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.rel.Config.JWTSecretFile = file
	err := h.rel.Deploy(h.ctx())
	h.expectErr(err, "JWT_SECRET_FILE="+file+" holds less than 32 bytes")
	if d := h.stacks.Deploys(); len(d) != 0 {
		t.Errorf("deployed %v", d)
	}
	if n := h.fake.Count("POST /v1.41/secrets/create"); n != 0 {
		t.Errorf("%d secrets created, want none", n)
	}
}
