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

// fakeSwarmNodes is a docker for `just label-nodes`: it keeps the nodes' roles and labels
// in a file (one node a line: ID ROLE LABEL...), answers node ls with its filters, adds
// labels on node update, and shows edge_nats as INSPECT replicas with TASKS (task:slot:node
// ...) running; CLUSTER non-empty is a service labelled roomcast.nats-cluster=true.
const fakeSwarmNodes = `#!/usr/bin/env bash
set -euo pipefail
state=$NODES_FILE
case "$1 $2" in
  "node ls")
    shift 2; role= label=
    while [ $# -gt 0 ]; do
      case $1 in
        --filter) case $2 in role=*) role=${2#role=} ;; node.label=*) label=${2#node.label=} ;; esac; shift 2 ;;
        *) shift ;;
      esac
    done
    while read -r id r labels; do
      [ -z "$role" ] || [ "$r" = "$role" ] || continue
      [ -z "$label" ] || [[ " $labels " == *" $label "* ]] || continue
      echo "$id"
    done < "$state" ;;
  "node update")
    label=$4 node=$5
    awk -v n="$node" -v l="$label" '$1 == n { $0 = $0 " " l } { print }' "$state" > "$state.new" && mv "$state.new" "$state" ;;
  "service ls") [ -z "${CLUSTER:-}" ] || echo svc1 ;;
  "service inspect") [ -n "${INSPECT:-}" ] && echo "$INSPECT" || exit 1 ;;
  "service ps") for t in ${TASKS:-}; do echo "${t%%:*}"; done ;;
  "info --format") head -n1 "$state" | cut -d' ' -f1 ;;
  *)
    if [ "$1" = inspect ]; then
      for t in ${TASKS:-}; do
        IFS=: read -r id slot node <<< "$t"
        [ "$id" = "$2" ] && echo "$slot $node"
      done
    fi ;;
esac
`

func TestJustLabelNodesPinsEachNATSMemberToANode(t *testing.T) {
	just := testenv.Program(t, "just")
	for _, tt := range []struct {
		name  string
		nodes string // ID ROLE LABEL... per line, the first the manager at DOCKER_HOST
		env   []string
		want  string
		warn  string // in the output
	}{
		{
			name:  "one NATS node without the cluster",
			nodes: "m1 manager\nw1 worker\nw2 worker",
			want:  "m1 manager roomcast.nats=true roomcast.monitoring=true\nw1 worker\nw2 worker",
		},
		{
			name:  "a member on each node, managers first",
			nodes: "m1 manager\nw1 worker\nm2 manager",
			env:   []string{"NATS_CLUSTER=true"},
			want: "m1 manager roomcast.nats=true roomcast.nats-1=true roomcast.monitoring=true\n" +
				"w1 worker roomcast.nats=true roomcast.nats-3=true\n" +
				"m2 manager roomcast.nats=true roomcast.nats-2=true",
		},
		{
			name:  "NATS_NODES in its order",
			nodes: "m1 manager\nw1 worker\nw2 worker",
			env:   []string{"NATS_CLUSTER=true", "NATS_NODES=w2,w1,m1"},
			want: "m1 manager roomcast.nats=true roomcast.nats-3=true roomcast.monitoring=true\n" +
				"w1 worker roomcast.nats=true roomcast.nats-2=true\n" +
				"w2 worker roomcast.nats=true roomcast.nats-1=true",
		},
		{
			name:  "one node holds every member",
			nodes: "m1 manager",
			env:   []string{"NATS_CLUSTER=true"},
			want:  "m1 manager roomcast.nats=true roomcast.nats-1=true roomcast.nats-2=true roomcast.nats-3=true roomcast.monitoring=true",
			warn:  "warning: NATS member 3 shares node m1 with another member",
		},
		{
			name: "a cluster of one service keeps each slot's node",
			nodes: "m1 manager roomcast.nats=true roomcast.monitoring=true\n" +
				"w1 worker roomcast.nats=true\nw2 worker roomcast.nats=true",
			env: []string{"CLUSTER=1", "INSPECT=3", "TASKS=t1:1:w2 t2:2:m1 t3:3:w1"},
			want: "m1 manager roomcast.nats=true roomcast.monitoring=true roomcast.nats-2=true\n" +
				"w1 worker roomcast.nats=true roomcast.nats-3=true\n" +
				"w2 worker roomcast.nats=true roomcast.nats-1=true",
		},
		{
			name: "labels already set stay",
			nodes: "m1 manager roomcast.nats=true roomcast.nats-2=true roomcast.monitoring=true\n" +
				"w1 worker roomcast.nats=true roomcast.nats-1=true\nw2 worker",
			env: []string{"NATS_CLUSTER=true", "INSPECT=1"},
			want: "m1 manager roomcast.nats=true roomcast.nats-2=true roomcast.monitoring=true\n" +
				"w1 worker roomcast.nats=true roomcast.nats-1=true\nw2 worker roomcast.nats=true roomcast.nats-3=true",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bin := t.TempDir()
			state := filepath.Join(bin, "nodes")
			if err := os.WriteFile(state, []byte(tt.nodes+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(fakeSwarmNodes), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(just, "label-nodes")
			cmd.Dir = ".."
			cmd.Env = append([]string{"PATH=" + bin + ":" + os.Getenv("PATH"), "HOME=" + bin, "NODES_FILE=" + state}, tt.env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("just label-nodes: %v\n%s", err, out)
			}
			got, _ := os.ReadFile(state)
			if strings.TrimSpace(string(got)) != tt.want {
				t.Errorf("nodes after just label-nodes:\n%s\nwant:\n%s\noutput:\n%s", got, tt.want, out)
			}
			if shares := strings.Contains(string(out), "shares node"); shares != (tt.warn != "") || !strings.Contains(string(out), tt.warn) {
				t.Errorf("just label-nodes said:\n%s\nwant a warning %q", out, tt.warn)
			}
		})
	}
}
