// Package stack_test checks the Swarm stack files and, on a real Swarm, the blue/green
// release recipes of the justfile.
package stack_test

import (
	"os/exec"
	"strings"
	"testing"

	"roomcast/pkg/testenv"
)

// stackConfig renders a stack file the way `docker stack deploy` would read it.
func stackConfig(t *testing.T, file string, env ...string) (string, error) {
	t.Helper()
	return stackConfigFiles(t, []string{file}, env...)
}

// stackConfigFiles renders stack files merged, each overriding the ones before, the way
// `docker stack deploy -c A -c B` would read them.
func stackConfigFiles(t *testing.T, files []string, env ...string) (string, error) {
	t.Helper()
	args := []string{"stack", "config"}
	for _, f := range files {
		args = append(args, "-c", f)
	}
	cmd := exec.Command(testenv.Program(t, "docker"), args...)
	cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + t.TempDir()}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestAppStackNeedsColorTagReplicasAndTheJWTSecret(t *testing.T) {
	full := []string{"COLOR=green", "TAG=v7", "REPLICAS=3", "JWT_SECRET_ID=0123abcd", "NATS_APP_SECRET_ID=4567cdef"}
	out, err := stackConfig(t, "app.yml", full...)
	if err != nil {
		t.Fatalf("app.yml with COLOR, TAG and REPLICAS: %v\n%s", err, out)
	}
	for _, want := range []string{
		"image: roomcast/roomcast:v7", "ROOMCAST_COLOR: green", "replicas: 3", "endpoint_mode: dnsrr",
		"order: start-first", "failure_action: rollback", "- /usr/local/bin/roomcast", "- healthcheck",
		"stop_grace_period: 35s", "external: true", "name: roomcast",
		// Auth on, the key a Swarm secret (never a literal in the stack file).
		"ROOMCAST_JWT_SECRET_FILE: /run/secrets/roomcast_jwt", "name: roomcast_jwt_0123abcd", "target: roomcast_jwt",
		// roomcast-release's defaults of JWT_AUDIENCE and JWT_ISSUER, which just token writes.
		"ROOMCAST_JWT_AUDIENCE: roomcast", "ROOMCAST_JWT_ISSUER: roomcast-swarm",
		// NATS credentials: the password a Swarm secret too.
		"ROOMCAST_NATS_USER: roomcast", "ROOMCAST_NATS_PASSWORD_FILE: /run/secrets/roomcast_nats_password",
		"name: roomcast_nats_app_4567cdef", "target: roomcast_nats_password",
		// History's shards: the app's choice (one, on the stacks' external NATS).
		`ROOMCAST_HISTORY_SHARDS: "0"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered app.yml lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ROOMCAST_JWT_SECRET:") {
		t.Errorf("app.yml sets the key itself, not through a secret file:\n%s", out)
	}
	out, _ = stackConfig(t, "app.yml", append(full, "HISTORY_SHARDS=8")...)
	if !strings.Contains(out, `ROOMCAST_HISTORY_SHARDS: "8"`) {
		t.Errorf("HISTORY_SHARDS not passed to the app:\n%s", out)
	}
	out, _ = stackConfig(t, "app.yml", append(full, "ROOMCAST_IMAGE=registry.example/rc")...)
	if !strings.Contains(out, "image: registry.example/rc:v7") {
		t.Errorf("ROOMCAST_IMAGE not used:\n%s", out)
	}
	for i, missing := range []string{"COLOR", "TAG", "REPLICAS", "JWT_SECRET_ID", "NATS_APP_SECRET_ID"} {
		env := append(append([]string{}, full[:i]...), full[i+1:]...)
		if out, err := stackConfig(t, "app.yml", env...); err == nil || !strings.Contains(out, missing) {
			t.Errorf("app.yml without %s: err=%v, output should name it:\n%s", missing, err, out)
		}
	}
}

func TestEdgeStackCarriesTheLiveColorAndImageVariables(t *testing.T) {
	if out, err := stackConfig(t, "edge.yml"); err == nil || !strings.Contains(out, "ACTIVE_COLOR") {
		t.Errorf("edge.yml without ACTIVE_COLOR must fail naming it: %v\n%s", err, out)
	}
	out, err := stackConfig(t, "edge.yml", "ACTIVE_COLOR=green", "PREVIOUS_COLOR=blue",
		"EDGE_IMAGE=my/edge", "EDGE_TAG=v3", "NATS_IMAGE=my/nats:1", "HTTP_PORT=8088", "HTTP_PUBLISH_MODE=host",
		"RELEASE_LOCK=alice@box")
	if err != nil {
		t.Fatalf("edge.yml: %v\n%s", err, out)
	}
	for _, want := range []string{
		"roomcast.active: green", "roomcast.previous: blue", "roomcast.lock: alice@box", "image: my/edge:v3", "image: my/nats:1",
		"published: 8088", "mode: host", "node.role == manager", "attachable: true", "/etc/nats/nats.conf",
		"target: /var/run/docker.sock", "stop_signal: SIGQUIT",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered edge.yml lacks %q:\n%s", want, out)
		}
	}
	out, err = stackConfig(t, "edge.yml", "ACTIVE_COLOR=blue")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"image: nats:", "mode: ingress", "published: 80"} {
		if !strings.Contains(out, want) {
			t.Errorf("edge.yml defaults lack %q:\n%s", want, out)
		}
	}
}
