package bluegreen_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm"
	"roomcast/pkg/fleet/swarm/swarmtest"
	"roomcast/pkg/testenv"
)

func ptr(n uint64) *uint64 { return &n }

const (
	appImage  = "roomcast/roomcast"
	edgeImage = "roomcast/edge"
)

// harness is a deployment on the fake Engine API: nginx (an HTTP server answering
// with the color of the edge service's roomcast.active label, as roomcast-edge makes
// it), a fake stack deploy, a clock that moves only when the release sleeps.
type harness struct {
	t      *testing.T
	fake   *swarmtest.Server
	stacks *fakeStacks
	rel    *bluegreen.Release
	out    *testenv.SyncBuffer
	clock  *fakeClock

	// grafanaPassword is the default GRAFANA_ADMIN_PASSWORD_FILE of every release.
	grafanaPassword string

	mu    sync.Mutex
	color func() string // what nginx answers; nil: the active label
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, fake: swarmtest.NewServer(t), out: &testenv.SyncBuffer{},
		clock:           &fakeClock{now: time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)},
		grafanaPassword: filepath.Join(t.TempDir(), "secrets", "grafana-admin-password")}
	h.stacks = &fakeStacks{fake: h.fake}
	nginx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Like the real edge: /readyz is not public, /healthz is and carries the color.
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		h.mu.Lock()
		color := h.color
		h.mu.Unlock()
		c := h.fake.Labels(bluegreen.EdgeService)[bluegreen.LabelActive]
		if color != nil {
			c = color()
		}
		w.Header().Set("X-Roomcast-Color", c)
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	t.Cleanup(nginx.Close)
	key := filepath.Join(t.TempDir(), "jwt-secret")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.rel = h.release("alice@box pid 100", nginx.URL, key)
	h.fake.AddImage(appImage+":t0", appImage+":t1", appImage+":t2", edgeImage+":t1", edgeImage+":e2", appImage+":e2")
	return h
}

// release is a Release on the harness' fake, as a process named holder.
func (h *harness) release(holder, edgeURL, key string) *bluegreen.Release {
	c, err := swarm.New(h.fake.Host())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = c.Close() })
	natsApp := filepath.Join(filepath.Dir(h.grafanaPassword), "nats-app-password")
	natsRoute := filepath.Join(filepath.Dir(h.grafanaPassword), "nats-route-password")
	return &bluegreen.Release{
		Config: bluegreen.Config{
			AppImage: appImage, EdgeImage: edgeImage, Tag: "t1", Replicas: 2,
			HealthTimeout: 10 * time.Second, FlipTimeout: 5 * time.Second, DrainTimeout: 10 * time.Second,
			SmokeTimeout: 30 * time.Second, EdgeURL: edgeURL,
			JWTSecretFile: key, DefaultJWTSecretFile: filepath.Join(h.t.TempDir(), "default-key"),
			JWTAudience: jwtAudience, JWTIssuer: jwtIssuer,
			// Made by the first deploy, as .secrets/grafana-admin-password is.
			GrafanaAdminPasswordFile: h.grafanaPassword, DefaultGrafanaAdminPasswordFile: h.grafanaPassword,
			// Made by the first deploy, as .secrets/nats-*-password are.
			NATSAppPasswordFile: natsApp, DefaultNATSAppPasswordFile: natsApp,
			NATSRoutePasswordFile: natsRoute, DefaultNATSRoutePasswordFile: natsRoute,
			AppStack: "stack/app.yml", EdgeStack: "stack/edge.yml", NATSClusterStack: "stack/nats-cluster.yml",
			EdgeTLSStack: "stack/edge-tls.yml", Network: "roomcast", LockStaleAfter: 30 * time.Minute,
			AlertmanagerTemplate: alertmanagerTemplate,
		},
		Docker: c, Stacks: h.stacks, Out: h.out, Holder: holder,
		Now: h.clock.Now, Sleep: h.clock.Sleep,
	}
}

// nginxAnswers makes nginx answer with color() instead of following the label.
func (h *harness) nginxAnswers(color func() string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.color = color
}

// deployed is the state after `just deploy` and a promote: active is live at
// activeTag × 2; the idle color, unless idleTag is empty, exists at idleTag × 0.
func (h *harness) deployed(active, previous, activeTag, idleTag string) {
	labels := map[string]string{bluegreen.LabelActive: active, "com.docker.stack.namespace": "edge"}
	if previous != "" {
		labels[bluegreen.LabelPrevious] = previous
	}
	h.fake.DeployService(bluegreen.EdgeService, swarmtest.Spec{Image: edgeImage + ":t1", Labels: labels, Replicas: ptr(1)})
	h.fake.DeployService(h.app(active), appSpec(active, activeTag, 2))
	if idleTag != "" {
		h.fake.DeployService(h.app(bluegreen.Other(active)), appSpec(bluegreen.Other(active), idleTag, 0))
	}
}

func appSpec(color, tag string, replicas uint64) swarmtest.Spec {
	return swarmtest.Spec{Image: appImage + ":" + tag, Replicas: ptr(replicas),
		Labels: map[string]string{"com.docker.stack.namespace": color}}
}

func (h *harness) app(color string) string { return bluegreen.ForColor(bluegreen.AppService, color) }

// expectApp checks the image and replica count of color's service.
func (h *harness) expectApp(color, tag string, replicas uint64) {
	h.t.Helper()
	spec, ok := h.fake.Service(h.app(color))
	if !ok {
		h.t.Fatalf("%s does not exist, want %s × %d", h.app(color), tag, replicas)
	}
	if spec.Image != appImage+":"+tag || spec.Replicas == nil || *spec.Replicas != replicas {
		h.t.Fatalf("%s is %s × %v, want %s × %d\n%s", h.app(color), spec.Image, deref(spec.Replicas), tag, replicas, h.out)
	}
}

func deref(p *uint64) any {
	if p == nil {
		return nil
	}
	return *p
}

// expectLabels checks the release labels of the edge service, and that neither the
// lock nor roomcast.promoting is left.
func (h *harness) expectLabels(active, previous string) {
	h.t.Helper()
	l := h.fake.Labels(bluegreen.EdgeService)
	if l[bluegreen.LabelActive] != active || l[bluegreen.LabelPrevious] != previous {
		h.t.Errorf("labels active=%q previous=%q, want %q and %q", l[bluegreen.LabelActive], l[bluegreen.LabelPrevious], active, previous)
	}
	if v, ok := l[bluegreen.LabelPromoting]; ok {
		h.t.Errorf("%s=%q left behind", bluegreen.LabelPromoting, v)
	}
	if v := l[bluegreen.LabelLock]; v != "" {
		h.t.Errorf("lock %q left behind", v)
	}
}

// expectErr fails the test unless err says want.
func (h *harness) expectErr(err error, want string) {
	h.t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		h.t.Fatalf("error %v, want one saying %q\n%s", err, want, h.out)
	}
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

// fakeClock moves only when the release sleeps: bounded waits end after as many polls
// as fit in their bound, at once.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeStacks is `docker stack deploy` on the fake: the app stack makes <color>_app,
// the edge stack edge_nginx (labels exactly the file's), edge_nats and
// edge_autoscaler.
type fakeStacks struct {
	fake *swarmtest.Server

	mu      sync.Mutex
	deploys []string
	// edgeFiles are the compose files of each edge deploy.
	edgeFiles [][]string
	// before runs first in each deploy; an error fails it.
	before func(name string, env map[string]string) error
}

func (s *fakeStacks) Deploy(ctx context.Context, name string, files []string, env map[string]string) error {
	s.mu.Lock()
	before := s.before
	s.deploys = append(s.deploys, name+" "+env["TAG"])
	if name == "edge" {
		s.edgeFiles = append(s.edgeFiles, files)
	}
	s.mu.Unlock()
	if before != nil {
		if err := before(name, env); err != nil {
			return err
		}
	}
	if name == "edge" {
		labels := map[string]string{
			bluegreen.LabelActive: env["ACTIVE_COLOR"], bluegreen.LabelPrevious: env["PREVIOUS_COLOR"],
			bluegreen.LabelLock: env["RELEASE_LOCK"], "com.docker.stack.namespace": "edge",
		}
		s.fake.DeployService(bluegreen.EdgeService, swarmtest.Spec{Image: env["EDGE_IMAGE"] + ":" + env["EDGE_TAG"], Labels: labels, Replicas: ptr(1)})
		nats := map[string]string{"com.docker.stack.namespace": "edge"}
		if env["NATS_CLUSTER"] == "true" {
			nats[bluegreen.LabelNATSCluster] = "true"
		}
		s.fake.DeployService(bluegreen.NATSService, swarmtest.Spec{Image: "nats:2.10", Labels: nats, Replicas: ptr(1)})
		s.fake.DeployService("edge_autoscaler", swarmtest.Spec{Image: env["ROOMCAST_IMAGE"] + ":" + env["EDGE_TAG"], Replicas: ptr(1)})
		return nil
	}
	n, err := strconv.ParseUint(env["REPLICAS"], 10, 64)
	if err != nil || env["COLOR"] != name || env["JWT_SECRET_ID"] == "" {
		return errors.New("fake stack deploy: bad app environment")
	}
	spec := appSpec(name, env["TAG"], n)
	spec.Image = env["ROOMCAST_IMAGE"] + ":" + env["TAG"]
	spec.Secrets = []string{"roomcast_jwt_" + env["JWT_SECRET_ID"]}
	s.fake.DeployService(name+"_app", spec)
	return nil
}

// EdgeFiles are the compose files of each edge deploy so far.
func (s *fakeStacks) EdgeFiles() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]string(nil), s.edgeFiles...)
}

func (s *fakeStacks) Deploys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.deploys...)
}
