package stack_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"roomcast/pkg/testenv"
)

// fakeDocker runs `just ARGS` from the repository root with a docker on PATH that
// records each call (its arguments joined by spaces) and answers `service inspect`
// with inspect and `volume ls` with the volumes; it returns the calls and the exit error.
func fakeDocker(t *testing.T, inspect string, env []string, args ...string) ([]string, error) {
	t.Helper()
	just := testenv.Program(t, "just")
	bin := t.TempDir()
	log := filepath.Join(bin, "calls")
	script := `#!/bin/sh
echo "$*" >> "` + log + `"
case "$1 $2" in
  "service inspect") printf '%s' "$INSPECT" ;;
  "volume ls") echo edge_nats-data; echo edge_prometheus-data ;;
esac
exit 0
`
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(just, args...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), append([]string{"PATH=" + bin + ":" + os.Getenv("PATH"), "INSPECT=" + inspect}, env...)...)
	out, err := cmd.CombinedOutput()
	t.Logf("just %v:\n%s", args, out)
	data, _ := os.ReadFile(log)
	return strings.Split(strings.TrimSpace(string(data)), "\n"), err
}

func TestJustDownKeepsVolumesUnlessAsked(t *testing.T) {
	calls, err := fakeDocker(t, "", nil, "down")
	if err != nil || !slices.Contains(calls, "stack rm blue green edge") || slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "volume") }) {
		t.Errorf("just down: %v, docker %q; want the three stacks removed, no volume touched", err, calls)
	}
	calls, err = fakeDocker(t, "", nil, "down", "remove-volumes")
	if err != nil || !slices.Contains(calls, "volume rm edge_nats-data edge_prometheus-data") {
		t.Errorf("just down remove-volumes: %v, docker %q; want the edge stack's volumes removed", err, calls)
	}
	calls, err = fakeDocker(t, "ops@box pid 7 (promote v2) since 2026-12-06T06:00:00Z", nil, "down")
	if err == nil || slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "stack rm") }) {
		t.Errorf("just down during a release: %v, docker %q; want it refused, nothing removed", err, calls)
	}
}

func TestJustPushTagsTheImagesForTheRegistry(t *testing.T) {
	calls, err := fakeDocker(t, "", []string{"REGISTRY=registry.lab:5000/", "ROOMCAST_IMAGE=registry.lab:5000/team/roomcast", "EDGE_IMAGE="}, "push", "v7")
	want := []string{
		"push registry.lab:5000/team/roomcast:v7",
		"tag roomcast/edge:v7 registry.lab:5000/roomcast/edge:v7", "push registry.lab:5000/roomcast/edge:v7",
	}
	if err != nil || !slices.Equal(calls, want) {
		t.Errorf("just push v7: %v, docker %q; want %q", err, calls, want)
	}
	if _, err := fakeDocker(t, "", []string{"REGISTRY="}, "push"); err == nil {
		t.Error("just push without REGISTRY succeeded")
	}
}
