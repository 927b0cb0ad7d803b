package bluegreen_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The first deploy makes the NATS passwords and three Swarm secrets of them: the app's
// password as it is, and the variables the NATS nodes include (stack/nats-auth.conf,
// stack/nats-cluster.conf); every stack deploy gets their IDs and no password.
func TestNATSPasswordsAreSwarmSecretsMadeOnTheFirstDeploy(t *testing.T) {
	h := newHarness(t)
	envs := h.edgeEnv()
	if err := h.rel.Deploy(h.ctx()); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(h.grafanaPassword)
	appName, appData := contentSecret(t, "roomcast_nats_app_", filepath.Join(dir, "nats-app-password"))
	appPassword := strings.TrimSpace(string(appData))
	routePassword := strings.TrimSpace(string(mustRead(t, filepath.Join(dir, "nats-route-password"))))
	if len(appPassword) < 32 || len(routePassword) < 32 || appPassword == routePassword {
		t.Fatalf("passwords made: %d and %d bytes, equal %v", len(appPassword), len(routePassword), appPassword == routePassword)
	}
	if data, labels, ok := h.fake.Secret(appName); !ok || string(data) != string(appData) || labels["roomcast.nats"] != "true" {
		t.Errorf("secret %s: %v, %q, labels %v", appName, ok, data, labels)
	}
	env := (*envs)[0]
	for _, s := range []struct{ prefix, variable, want string }{
		{"roomcast_nats_users_", "NATS_USERS_SECRET_ID", "\nROOMCAST_APP_PASSWORD: \"" + appPassword + "\"\n"},
		{"roomcast_nats_routes_", "NATS_ROUTES_SECRET_ID", "\nROOMCAST_ROUTE_PASSWORD: \"" + routePassword + "\"\n"},
	} {
		name := s.prefix + env[s.variable]
		data, _, ok := h.fake.Secret(name)
		if !ok || !strings.Contains(string(data), s.want) {
			t.Errorf("secret %s (%s=%q): %v, want it to hold the password", name, s.variable, env[s.variable], ok)
		}
		sum := sha256.Sum256(data)
		if id := hex.EncodeToString(sum[:])[:12]; id != env[s.variable] {
			t.Errorf("%s=%s, want the start of its content's SHA-256 %s", s.variable, env[s.variable], id)
		}
	}
	if got := "roomcast_nats_app_" + env["NATS_APP_SECRET_ID"]; got != appName {
		t.Errorf("NATS_APP_SECRET_ID names %s, want %s", got, appName)
	}
	routes, _, _ := h.fake.Secret("roomcast_nats_routes_" + env["NATS_ROUTES_SECRET_ID"])
	// Each member by a name of its own (stack/nats-cluster.yml).
	want := regexp.MustCompile(`ROOMCAST_ROUTES: \["nats://route:[^@"]+@edge_nats-1:6222", "nats://route:[^@"]+@edge_nats-2:6222", "nats://route:[^@"]+@edge_nats-3:6222"\]\n`)
	if !want.Match(routes) {
		t.Errorf("the routes secret does not route to edge_nats-1, -2 and -3 on 6222:\n%s", strings.ReplaceAll(string(routes), routePassword, "<password>"))
	}
	h.expectNotLogged(appPassword, *envs)
	h.expectNotLogged(routePassword, *envs)

	// A second deploy makes nothing new.
	before := h.fake.Count("POST /v1.41/secrets/create")
	if err := h.rel.Deploy(h.ctx()); err != nil {
		t.Fatal(err)
	}
	if n := h.fake.Count("POST /v1.41/secrets/create"); n != before {
		t.Errorf("the second deploy created %d secrets", n-before)
	}
}

// NATS reads a password from a quoted string of its configuration: one that would end
// it early, or is too short, stops the deploy before anything is deployed.
func TestNATSPasswordFilesRefused(t *testing.T) {
	for _, tt := range []struct{ name, content, want string }{
		{"a quote", `0123456789abcdef"0123`, "want a password without quotes"},
		{"a backslash", `0123456789abcdef\0123`, "want a password without quotes"},
		{"white space inside", "0123456789abcdef 0123", "want a password without quotes"},
		{"short", "secret\n", "holds less than 16 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			file := filepath.Join(t.TempDir(), "nats-app-password")
			if err := os.WriteFile(file, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			h.rel.Config.NATSAppPasswordFile = file
			err := h.rel.Deploy(h.ctx())
			h.expectErr(err, "NATS_APP_PASSWORD_FILE="+file)
			h.expectErr(err, tt.want)
			if d := h.stacks.Deploys(); len(d) != 0 {
				t.Errorf("deployed %v", d)
			}
		})
	}
}

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
