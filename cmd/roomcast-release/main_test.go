package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"roomcast/pkg/cli"
	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm/swarmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHelpListsEveryVariableTheRecipesRead(t *testing.T) {
	clitest.Help(t, name, run,
		"deploy", "promote TAG", "rollback", "status", "scale N", "unlock [-force]", "prune [-dry-run]", "-break-stale-lock",
		"TAG", "ALERTMANAGER_WEBHOOK_URL_FILE", "ROOMCAST_IMAGE", "EDGE_IMAGE", "EDGE_TAG", "HTTP_PORT", "EDGE_URL", "REPLICAS", "HEALTH_TIMEOUT",
		"FLIP_TIMEOUT", "DRAIN_TIMEOUT", "SMOKE_TIMEOUT", "JWT_SECRET_FILE", "NATS_CLUSTER",
		"HISTORY_REPLICAS", "DOCKER_HOST", "RELEASE_LOCK_STALE_AFTER", "ROOMCAST_LOG_LEVEL",
		"GRAFANA_ADMIN_PASSWORD_FILE", "GRAFANA_ADMIN_USER", "JWT_AUDIENCE", "JWT_ISSUER", "TLS_CERT_FILE", "TLS_KEY_FILE", "HTTPS_PORT", "REGISTRY",
	)
}

func TestUsageAndConfigurationErrorsExit2(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "missing command"},
		{[]string{"ship"}, nil, `unknown command "ship"`},
		{[]string{"promote"}, nil, "usage: roomcast-release promote TAG"},
		{[]string{"status", "x"}, nil, `status takes no argument, got "x"`},
		{[]string{"scale", "0"}, nil, `N must be a whole number of at least 1, got "0"`},
		{[]string{"scale", "-force", "3"}, nil, "-force is for unlock only"},
		{[]string{"status", "-dry-run"}, nil, "-dry-run is for prune only"},
		{[]string{"prune", "old"}, nil, `prune takes no argument, got "old"`},
		{[]string{"status"}, map[string]string{"HEALTH_TIMEOUT": "0"}, "HEALTH_TIMEOUT"},
		{[]string{"status"}, map[string]string{"NATS_CLUSTER": "yes"}, "NATS_CLUSTER"},
		{[]string{"status"}, map[string]string{"SMOKE_TIMEOUT": "soon"}, "SMOKE_TIMEOUT"},
		{[]string{"status"}, map[string]string{"GRAFANA_ADMIN_USER": "ad:min"}, "GRAFANA_ADMIN_USER"},
		{[]string{"status"}, map[string]string{"JWT_AUDIENCE": "roomcast "}, "JWT_AUDIENCE"},
		{[]string{"status"}, map[string]string{"JWT_ISSUER": " roomcast"}, "JWT_ISSUER"},
		{[]string{"status"}, map[string]string{"TLS_CERT_FILE": "tls.crt"}, "TLS_KEY_FILE"},
		{[]string{"status"}, map[string]string{"TLS_KEY_FILE": "tls.key"}, "TLS_CERT_FILE"},
		{[]string{"status"}, map[string]string{"REGISTRY": "10.216.0.5:5000/roomcast"}, "REGISTRY"},
	} {
		if code, line := clitest.Exit(name, run, tt.args, tt.env); code != 2 || !strings.Contains(line, tt.want) {
			t.Errorf("%v %v: exit %d, stderr %q; want 2 saying %q", tt.args, tt.env, code, line, tt.want)
		}
	}
}

func TestImageNamesFollowTheRegistry(t *testing.T) {
	for _, tt := range []struct {
		name           string
		env            map[string]string
		wantApp, wantE string
	}{
		{"no registry: local names", nil, "roomcast/roomcast", "roomcast/edge"},
		{"a registry", map[string]string{"REGISTRY": "10.216.0.5:5000"}, "10.216.0.5:5000/roomcast/roomcast", "10.216.0.5:5000/roomcast/edge"},
		{"names given win", map[string]string{"REGISTRY": "r:5000", "ROOMCAST_IMAGE": "me/app", "EDGE_IMAGE": "me/edge"}, "me/app", "me/edge"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := cli.Load(tt.env, checkConfig)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.AppImage != tt.wantApp || cfg.EdgeImage != tt.wantE {
				t.Errorf("images %q and %q, want %q and %q", cfg.AppImage, cfg.EdgeImage, tt.wantApp, tt.wantE)
			}
		})
	}
}

func TestStatusAndUnlockThroughTheEngineAPI(t *testing.T) {
	fake := swarmtest.NewServer(t)
	n := uint64(2)
	fake.DeployService(bluegreen.EdgeService, swarmtest.Spec{Image: "roomcast/edge:v1", Replicas: &n, Labels: map[string]string{
		bluegreen.LabelActive: "blue", bluegreen.LabelLock: "bob@box pid 1 (promote v2) since 2026-01-01T00:00:00Z",
		bluegreen.LabelPromoting: "true",
	}})
	fake.DeployService("blue_app", swarmtest.Spec{Image: "roomcast/roomcast:v1", Replicas: &n})
	env := map[string]string{"DOCKER_HOST": fake.Host()}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"status"}, env, &stdout, &stderr); err != nil {
		t.Fatalf("status: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"active: blue", "release lock: held by bob@box pid 1 (promote v2)", "blue   active  tag=v1", "replicas=2/2", "green  idle    not deployed"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, stdout.String())
		}
	}
	if err := run(context.Background(), []string{"unlock"}, env, &stdout, &stderr); err != nil {
		t.Fatalf("unlock of a lock from January: %v", err)
	}
	if l := fake.Labels(bluegreen.EdgeService); l[bluegreen.LabelLock] != "" || l[bluegreen.LabelPromoting] != "" {
		t.Errorf("labels after unlock: %v", l)
	}

	// prune: the JWT key no service mounts goes, the one blue mounts stays.
	fake.DeployService("blue_app", swarmtest.Spec{Image: "roomcast/roomcast:v1", Replicas: &n, Secrets: []string{"roomcast_jwt_new"}})
	fake.AddSecret("roomcast_jwt_old", nil)
	fake.AddSecret("roomcast_jwt_new", nil)
	if err := run(context.Background(), []string{"prune"}, env, &stdout, &stderr); err != nil {
		t.Fatalf("prune: %v\n%s", err, stderr.String())
	}
	if got := fake.Secrets(); !slices.Equal(got, []string{"roomcast_jwt_new"}) {
		t.Errorf("secrets after prune %v, want the mounted key only", got)
	}
}
