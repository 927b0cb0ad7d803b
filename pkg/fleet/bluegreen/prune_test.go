package bluegreen_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm/swarmtest"
)

// prunable deploys, then leaves what releases leave behind: a JWT key and a certificate
// that newer files replaced, an edge config of an earlier monitoring/; beside them
// the Swarm's other secrets and configs, which are not the release's to remove.
func prunable(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	if err := h.rel.Deploy(h.ctx()); err != nil {
		t.Fatalf("deploy: %v\n%s", err, h.out)
	}
	// The edge services that mount the deploy's secrets and the current configs.
	var grafana, alertmanager string
	for _, name := range h.fake.Secrets() {
		switch {
		case strings.HasPrefix(name, "roomcast_grafana_admin_"):
			grafana = name
		case strings.HasPrefix(name, "roomcast_alertmanager_"):
			alertmanager = name
		}
	}
	h.fake.DeployService("edge_grafana", swarmtest.Spec{Image: "grafana", Replicas: ptr(1), Secrets: []string{grafana},
		Configs: []string{"edge_grafana_dashboard_roomcast-new"}})
	h.fake.DeployService("edge_alertmanager", swarmtest.Spec{Image: "alertmanager", Replicas: ptr(1), Secrets: []string{alertmanager}})
	for _, name := range []string{"roomcast_jwt_0123456789ab", "roomcast_tls_cert_0123456789ab", "someone_elses"} {
		h.fake.AddSecret(name, nil)
	}
	for _, name := range []string{"edge_grafana_dashboard_roomcast-old", "edge_grafana_dashboard_roomcast-new", "someone_elses_config"} {
		h.fake.AddConfig(name, nil)
	}
	return h
}

func TestPruneRemovesOnlyWhatReleasesMadeAndNoServiceMounts(t *testing.T) {
	h := prunable(t)
	secrets, configs := h.fake.Secrets(), h.fake.Configs()

	if err := h.rel.Prune(h.ctx(), true); err != nil {
		t.Fatalf("prune -dry-run: %v\n%s", err, h.out)
	}
	if !slices.Equal(h.fake.Secrets(), secrets) || !slices.Equal(h.fake.Configs(), configs) {
		t.Fatalf("a dry run removed something: secrets %v, configs %v", h.fake.Secrets(), h.fake.Configs())
	}
	for _, want := range []string{"would remove secret roomcast_jwt_0123456789ab", "would remove secret roomcast_tls_cert_0123456789ab",
		"would remove config edge_grafana_dashboard_roomcast-old"} {
		if !strings.Contains(h.out.String(), want) {
			t.Errorf("the dry run does not say %q:\n%s", want, h.out)
		}
	}

	if err := h.rel.Prune(h.ctx(), false); err != nil {
		t.Fatalf("prune: %v\n%s", err, h.out)
	}
	want := slices.DeleteFunc(slices.Clone(secrets), func(n string) bool { return strings.HasSuffix(n, "_0123456789ab") })
	if got := h.fake.Secrets(); !slices.Equal(got, want) || len(got) != len(secrets)-2 {
		t.Errorf("secrets %v, want %v: the replaced key and certificate gone, the mounted and the others' kept", got, want)
	}
	if got := h.fake.Configs(); !slices.Equal(got, []string{"edge_grafana_dashboard_roomcast-new", "someone_elses_config"}) {
		t.Errorf("configs %v, want the mounted one and the others' kept", got)
	}
	if lock := h.fake.Labels(bluegreen.EdgeService)[bluegreen.LabelLock]; lock != "" {
		t.Errorf("the release lock is still held: %q", lock)
	}
}

func TestPruneWaitsForNoRelease(t *testing.T) {
	h := prunable(t)
	secrets := h.fake.Secrets()
	h.fake.SetLabel(bluegreen.EdgeService, bluegreen.LabelLock, bluegreen.Lock{Holder: "ops@host pid 1 (promote v2)", Since: h.clock.Now()}.String())
	var locked *bluegreen.LockedError
	if err := h.rel.Prune(h.ctx(), false); !errors.As(err, &locked) {
		t.Fatalf("prune during a release: %v, want the release lock's refusal", err)
	}
	if !slices.Equal(h.fake.Secrets(), secrets) {
		t.Errorf("secrets %v removed during a release", h.fake.Secrets())
	}
}
