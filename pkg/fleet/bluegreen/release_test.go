package bluegreen_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm/swarmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPromote(t *testing.T) {
	h := newHarness(t)
	h.deployed("blue", "", "t1", "")
	if err := h.rel.Promote(h.ctx(), "t2"); err != nil {
		t.Fatalf("promote: %v\n%s", err, h.out)
	}
	h.expectLabels("green", "blue")
	h.expectApp("green", "t2", 2)
	h.expectApp("blue", "t1", 0)
	out := h.out.String()
	for _, want := range []string{
		"promoting roomcast/roomcast:t2: blue is active, releasing to green × 2",
		"deploying green: roomcast/roomcast:t2 × 2", "green_app: 2/2 healthy",
		"smoke test of green", "PASS", "flipping nginx to green", "answers with green",
		"draining blue", "promoted: green is active (roomcast/roomcast:t2 × 2); blue kept at 0 for rollback",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The key became a Swarm secret named after the file's content, mounted by the app.
	secret := regexp.MustCompile(`roomcast_jwt_[0-9a-f]{12}`).FindString(out)
	data, labels, ok := h.fake.Secret(secret)
	if !ok || string(data) != "0123456789abcdef0123456789abcdef\n" || labels["roomcast.jwt"] != "true" {
		t.Errorf("secret %q: %q %v %v", secret, data, labels, ok)
	}
	if spec, _ := h.fake.Service(h.app("green")); !slices.Equal(spec.Secrets, []string{secret}) {
		t.Errorf("green mounts %v, want %s", spec.Secrets, secret)
	}
	// The smoke job is gone, every local nginx task was asked for the new color.
	if _, ok := h.fake.Service("roomcast_smoke_green"); ok {
		t.Error("smoke job left behind")
	}
	if execs := h.fake.Execs(); len(execs) != 1 || !strings.HasSuffix(execs[0], "/usr/local/bin/roomcast-edge status -color green") {
		t.Errorf("exec'd %v", execs)
	}
	// One update flipped both labels.
	if n := h.fake.Count("POST /v1.41/services/" + h.edgeID() + "/update"); n != 3 {
		t.Errorf("%d updates of the edge service, want 3 (lock, flip, unlock)", n)
	}
}

func (h *harness) edgeID() string {
	for _, r := range h.fake.Requests() {
		if m := regexp.MustCompile(`/services/(svc\d+)/update`).FindStringSubmatch(r); m != nil {
			return m[1]
		}
	}
	return "none"
}

// The tokens' audience and issuer of the harness' releases: not the defaults of
// roomcast-release, so a value that skipped Config would show.
const jwtAudience, jwtIssuer = "chat.example", "release-test"

// TestSmokeJobGetsTheKeyAsASecretFile: the smoke test runs as a one-off job with the
// key mounted from the Swarm secret, never as a literal in its command or environment,
// and its token carries the audience and issuer the stack gives the replicas.
func TestSmokeJobGetsTheKeyAsASecretFile(t *testing.T) {
	h := newHarness(t)
	h.deployed("blue", "", "t1", "")
	if err := h.rel.Promote(h.ctx(), "t2"); err != nil {
		t.Fatal(err)
	}
	created := h.fake.Created()
	if len(created) != 1 || !created[0].Job {
		t.Fatalf("created %+v, want one job", created)
	}
	job := created[0]
	want := "/usr/local/bin/roomcast-smoke -target tasks.green_app:8080 -color green -timeout 30s -jwt-secret-file /run/secrets/roomcast_jwt" +
		" -jwt-audience " + jwtAudience + " -jwt-issuer " + jwtIssuer
	if strings.Join(job.Command, " ") != want || job.Image != appImage+":t2" {
		t.Errorf("job runs %s %q, want %q", job.Image, job.Command, want)
	}
	if len(job.Secrets) != 1 || !strings.HasPrefix(job.Secrets[0], "roomcast_jwt_") {
		t.Errorf("job mounts %v", job.Secrets)
	}
}

// TestEveryStackDeployGetsTheTokensAudienceAndIssuer: the app stack reads JWT_AUDIENCE
// and JWT_ISSUER on every deploy (first deploy, promote, rollback), or a deploy would
// reset the replicas to the file's defaults while tokens carry other values.
func TestEveryStackDeployGetsTheTokensAudienceAndIssuer(t *testing.T) {
	h := newHarness(t)
	var got []string
	h.stacks.before = func(name string, env map[string]string) error {
		got = append(got, name+" aud="+env["JWT_AUDIENCE"]+" iss="+env["JWT_ISSUER"])
		return nil
	}
	ctx := h.ctx()
	if err := h.rel.Deploy(ctx); err != nil {
		t.Fatalf("deploy: %v\n%s", err, h.out)
	}
	if err := h.rel.Promote(ctx, "t2"); err != nil {
		t.Fatalf("promote: %v\n%s", err, h.out)
	}
	if err := h.rel.Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v\n%s", err, h.out)
	}
	if len(got) < 4 {
		t.Fatalf("stack deploys %q, want edge, blue, green and blue again", got)
	}
	for _, d := range got {
		if _, rest, _ := strings.Cut(d, " "); rest != "aud="+jwtAudience+" iss="+jwtIssuer {
			t.Errorf("stack deploy %q, want aud=%s iss=%s", d, jwtAudience, jwtIssuer)
		}
	}
}

// TestFailureBeforeTheFlip: whatever fails before the flip, users stay on the active
// color, the labels stay as they were, and the idle color is put back as it was: at
// its old tag and count, or removed if it did not exist.
func TestFailureBeforeTheFlip(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness)
		why   string
	}{
		{"image missing", func(h *harness) {}, "image roomcast/roomcast:t9 not found"},
		{"stack deploy fails", func(h *harness) {
			h.stacks.before = func(name string, env map[string]string) error {
				if env["TAG"] == "t9" {
					return errors.New("docker stack deploy: boom")
				}
				return nil
			}
		}, "deploying green failed"},
		{"never healthy", func(h *harness) {
			h.fake.Converge(h.app("green"), func(image string, n uint64) []swarmtest.Task {
				if image != appImage+":t9" {
					return running(image, n)
				}
				return []swarmtest.Task{{Image: image, State: "starting"}, {Image: image, Err: "task: non-zero exit (1)", State: "failed"}}
			})
		}, "green replicas did not become healthy within 10s"},
		{"smoke test fails", func(h *harness) { h.fake.SetJob(1, "FAIL message: 0 of 2 delivered\n") }, "smoke test of green failed"},
		{"flip update fails", func(h *harness) {
			h.stacks.before = func(name string, env map[string]string) error {
				if env["TAG"] == "t9" { // the next update of a service is the flip
					h.fake.Fail(`^/services/[^/]+/update$`, 500, 1)
				}
				return nil
			}
		}, "updating the nginx labels failed"},
		{"nginx does not switch", func(h *harness) { h.nginxAnswers(func() string { return "blue" }) }, "nginx did not switch to green"},
	}
	for _, tt := range tests {
		for _, idle := range []string{"", "t0"} {
			t.Run(tt.name+" idle "+map[string]string{"": "absent", "t0": "at t0"}[idle], func(t *testing.T) {
				h := newHarness(t)
				h.fake.AddImage(appImage + ":t9")
				if tt.name == "image missing" {
					h = newHarness(t)
				}
				h.deployed("blue", "green", "t1", idle)
				tt.setup(h)
				err := h.rel.Promote(h.ctx(), "t9")
				if err == nil || !strings.Contains(err.Error(), tt.why) {
					t.Fatalf("promote: %v, want an error saying %q\n%s", err, tt.why, h.out)
				}
				h.expectLabels("blue", "green")
				h.expectApp("blue", "t1", 2)
				if idle == "" {
					if _, ok := h.fake.Service(h.app("green")); ok {
						t.Errorf("green not removed\n%s", h.out)
					}
				} else {
					h.expectApp("green", idle, 0)
				}
			})
		}
	}
}

func running(image string, n uint64) []swarmtest.Task {
	tasks := make([]swarmtest.Task, n)
	for i := range tasks {
		tasks[i] = swarmtest.Task{Image: image}
	}
	return tasks
}

// TestHealthWaitIgnoresOldTasks: the idle color's old tasks, healthy as they are, do
// not make the new release healthy.
func TestHealthWaitIgnoresOldTasks(t *testing.T) {
	h := newHarness(t)
	h.deployed("blue", "green", "t1", "t0")
	h.fake.Converge(h.app("green"), func(image string, n uint64) []swarmtest.Task {
		return running(appImage+":t0", n) // the update never gets going
	})
	err := h.rel.Promote(h.ctx(), "t2")
	if err == nil || !strings.Contains(err.Error(), "did not become healthy") ||
		!strings.Contains(err.Error(), "2 task(s) still running another image than roomcast/roomcast:t2") {
		t.Fatalf("promote: %v\n%s", err, h.out)
	}
	h.expectLabels("blue", "green")
}

func TestInterruptBeforeTheFlipRestoresTheIdleColor(t *testing.T) {
	for _, at := range []string{"health wait", "smoke test"} {
		t.Run(at, func(t *testing.T) {
			h := newHarness(t)
			h.deployed("blue", "green", "t1", "t0")
			ctx, cancel := context.WithCancel(h.ctx())
			defer cancel()
			h.fake.Converge(h.app("green"), func(image string, n uint64) []swarmtest.Task {
				if image != appImage+":t2" {
					return running(image, n)
				}
				if at == "health wait" {
					cancel()
					return []swarmtest.Task{{Image: image, State: "starting"}}
				}
				return running(image, n)
			})
			if at == "smoke test" {
				h.fake.Converge("roomcast_smoke_green", func(string, uint64) []swarmtest.Task {
					cancel()
					return []swarmtest.Task{{Image: appImage + ":t2", State: "running"}}
				})
			}
			h.expectErr(h.rel.Promote(ctx, "t2"), "interrupted")
			h.expectLabels("blue", "green")
			h.expectApp("green", "t0", 0)
			h.expectApp("blue", "t1", 2)
			if _, ok := h.fake.Service("roomcast_smoke_green"); ok {
				t.Error("smoke job left behind")
			}
		})
	}
}

func TestInterruptAfterTheFlipDrainsNothing(t *testing.T) {
	h := newHarness(t)
	h.deployed("blue", "", "t1", "")
	ctx, cancel := context.WithCancel(h.ctx())
	defer cancel()
	h.nginxAnswers(func() string {
		c := h.fake.Labels(bluegreen.EdgeService)[bluegreen.LabelActive]
		if c == "green" {
			cancel()
		}
		return c
	})
	h.expectErr(h.rel.Promote(ctx, "t2"), "interrupted after the flip")
	h.expectLabels("green", "blue")
	h.expectApp("blue", "t1", 2)
	h.expectApp("green", "t2", 2)
	if !strings.Contains(h.out.String(), "blue_app=0") {
		t.Errorf("output does not say what is left:\n%s", h.out)
	}
}

// TestFailedFlipKeepsPrevious: labels go back to what they were, previous included
// (the shell recipe set previous to the active color).
func TestFailedFlipKeepsPrevious(t *testing.T) {
	h := newHarness(t)
	h.deployed("blue", "", "t1", "t0")
	h.nginxAnswers(func() string { return "blue" })
	if err := h.rel.Promote(h.ctx(), "t2"); err == nil {
		t.Fatal("promote succeeded")
	}
	h.expectLabels("blue", "")
	if _, ok := h.fake.Labels(bluegreen.EdgeService)[bluegreen.LabelPrevious]; ok {
		t.Error("previous label made up")
	}
}

func TestPromoteWithoutADeploy(t *testing.T) {
	h := newHarness(t)
	if err := h.rel.Promote(h.ctx(), "t2"); err == nil || !strings.Contains(err.Error(), "run just deploy first") {
		t.Fatalf("promote: %v", err)
	}
	h.fake.SetService(bluegreen.EdgeService, map[string]string{}, ptr(1))
	if err := h.rel.Promote(h.ctx(), "t2"); err == nil || !strings.Contains(err.Error(), "no roomcast.active label") {
		t.Fatalf("promote: %v", err)
	}
	h.expectLabels("", "")
}

func TestLock(t *testing.T) {
	bob := bluegreen.Lock{Holder: "bob@other pid 7 (promote t9)"}
	t.Run("a second release is refused with the holder's name and age", func(t *testing.T) {
		h := newHarness(t)
		h.deployed("blue", "", "t1", "")
		bob.Since = h.clock.Now().Add(-3 * time.Minute)
		h.fake.SetLabel(bluegreen.EdgeService, bluegreen.LabelLock, bob.String())
		for name, op := range map[string]func() error{
			"promote":  func() error { return h.rel.Promote(h.ctx(), "t2") },
			"rollback": func() error { return h.rel.Rollback(h.ctx()) },
			"deploy":   func() error { return h.rel.Deploy(h.ctx()) },
			"scale":    func() error { return h.rel.Scale(h.ctx(), 3) },
			"unlock":   func() error { return h.rel.Unlock(h.ctx(), false) },
		} {
			err := op()
			var le *bluegreen.LockedError
			if !errors.As(err, &le) || !strings.Contains(err.Error(), "held by bob@other pid 7 (promote t9) for 3m0s") {
				t.Errorf("%s: %v", name, err)
			}
		}
		if got := h.fake.Labels(bluegreen.EdgeService)[bluegreen.LabelLock]; got != bob.String() {
			t.Errorf("lock is %q", got)
		}
		if d := h.stacks.Deploys(); len(d) != 0 {
			t.Errorf("deployed %v while locked", d)
		}
		h.expectApp("blue", "t1", 2)
	})
	t.Run("a stale lock is broken only when asked", func(t *testing.T) {
		h := newHarness(t)
		h.deployed("blue", "", "t1", "")
		bob.Since = h.clock.Now().Add(-2 * time.Hour)
		h.fake.SetLabel(bluegreen.EdgeService, bluegreen.LabelLock, bob.String())
		h.fake.SetLabel(bluegreen.EdgeService, bluegreen.LabelPromoting, "true")
		if err := h.rel.Scale(h.ctx(), 3); err == nil || !strings.Contains(err.Error(), "older than 30m0s") {
			t.Fatalf("scale: %v", err)
		}
		h.rel.BreakStaleLock = true
		if err := h.rel.Scale(h.ctx(), 3); err != nil {
			t.Fatalf("scale breaking a stale lock: %v\n%s", err, h.out)
		}
		if !strings.Contains(h.out.String(), "breaking the release lock of bob@other pid 7 (promote t9), held for 2h0m0s") {
			t.Errorf("output:\n%s", h.out)
		}
		h.expectApp("blue", "t1", 3)
	})
	t.Run("unlock breaks a stale lock, a fresh one only with force", func(t *testing.T) {
		h := newHarness(t)
		h.deployed("blue", "", "t1", "")
		bob.Since = h.clock.Now().Add(-time.Minute)
		h.fake.SetLabel(bluegreen.EdgeService, bluegreen.LabelLock, bob.String())
		h.fake.SetLabel(bluegreen.EdgeService, bluegreen.LabelPromoting, "true")
		if err := h.rel.Unlock(h.ctx(), false); err == nil {
			t.Fatal("unlock broke a fresh lock")
		}
		h.clock.Advance(time.Hour)
		if err := h.rel.Unlock(h.ctx(), false); err != nil {
			t.Fatal(err)
		}
		h.expectLabels("blue", "")
		h.fake.SetLabel(bluegreen.EdgeService, bluegreen.LabelLock, bob.String())
		bob.Since = h.clock.Now()
		h.fake.SetLabel(bluegreen.EdgeService, bluegreen.LabelLock, bob.String())
		if err := h.rel.Unlock(h.ctx(), true); err != nil {
			t.Fatal(err)
		}
		h.expectLabels("blue", "")
	})
	t.Run("two takes at once: the version decides, the loser names the winner", func(t *testing.T) {
		h := newHarness(t)
		h.deployed("blue", "", "t1", "")
		carol := h.release("carol@third pid 9", h.rel.Config.EdgeURL, h.rel.Config.JWTSecretFile)
		// Both read the edge service at the same version before either writes, and
		// the winner holds on until the loser has given up.
		var arrived sync.WaitGroup
		arrived.Add(2)
		ended := []chan struct{}{make(chan struct{}), make(chan struct{})}
		for i, r := range []*bluegreen.Release{h.rel, carol} {
			r.Docker = &barrierDocker{Docker: r.Docker, wg: &arrived, other: ended[1-i]}
		}
		errs := make([]error, 2)
		var done sync.WaitGroup
		for i, r := range []*bluegreen.Release{h.rel, carol} {
			done.Go(func() {
				defer close(ended[i])
				errs[i] = r.Scale(h.ctx(), 3)
			})
		}
		done.Wait()
		var le *bluegreen.LockedError
		switch {
		case errs[0] == nil && errors.As(errs[1], &le) && strings.Contains(le.Lock.Holder, "alice@box pid 100"):
		case errs[1] == nil && errors.As(errs[0], &le) && strings.Contains(le.Lock.Holder, "carol@third pid 9"):
		default:
			t.Fatalf("want one winner and one refusal naming it: %v / %v", errs[0], errs[1])
		}
		h.expectLabels("blue", "")
	})
	t.Run("a deploy during a promote is refused", func(t *testing.T) {
		h := newHarness(t)
		h.deployed("blue", "", "t1", "")
		other := h.release("dave@box pid 200", h.rel.Config.EdgeURL, h.rel.Config.JWTSecretFile)
		var during error
		h.stacks.before = func(name string, env map[string]string) error {
			if name == "green" {
				during = other.Deploy(h.ctx())
			}
			return nil
		}
		if err := h.rel.Promote(h.ctx(), "t2"); err != nil {
			t.Fatal(err)
		}
		if during == nil || !strings.Contains(during.Error(), "held by alice@box pid 100 (promote t2)") {
			t.Errorf("deploy during the promote: %v", during)
		}
		h.expectLabels("green", "blue")
	})
}

// barrierDocker holds the first label update until both releases got there, and a
// scale (done under the lock) until the other release has ended (or 5s).
type barrierDocker struct {
	bluegreen.Docker
	wg    *sync.WaitGroup
	once  sync.Once
	other chan struct{}
}

func (b *barrierDocker) Scale(ctx context.Context, name string, n uint64) error {
	select {
	case <-b.other:
	case <-time.After(5 * time.Second):
	}
	return b.Docker.Scale(ctx, name, n)
}

func (b *barrierDocker) UpdateLabels(ctx context.Context, svc bluegreen.Service, set map[string]string, remove []string) error {
	b.once.Do(func() { b.wg.Done(); b.wg.Wait() })
	return b.Docker.UpdateLabels(ctx, svc, set, remove)
}

func TestRollback(t *testing.T) {
	h := newHarness(t)
	h.deployed("green", "blue", "t2", "t1")
	if err := h.rel.Rollback(h.ctx()); err != nil {
		t.Fatalf("rollback: %v\n%s", err, h.out)
	}
	h.expectLabels("blue", "green")
	h.expectApp("blue", "t1", 2)
	h.expectApp("green", "t2", 0)
	if !strings.Contains(h.out.String(), "rolling back from green to blue") {
		t.Errorf("output:\n%s", h.out)
	}

	for _, tt := range []struct{ previous, idle, why string }{
		{"", "t1", "no previous color recorded"},
		{"blue", "", "the previous color blue no longer exists"},
	} {
		h := newHarness(t)
		h.deployed("green", tt.previous, "t2", tt.idle)
		if err := h.rel.Rollback(h.ctx()); err == nil || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("rollback: %v, want %q", err, tt.why)
		}
		h.expectLabels("green", tt.previous)
	}
}

func TestDeploy(t *testing.T) {
	t.Run("first deploy", func(t *testing.T) {
		h := newHarness(t)
		var lockDuring string
		h.stacks.before = func(name string, env map[string]string) error {
			if name == "blue" {
				lockDuring = h.fake.Labels(bluegreen.EdgeService)[bluegreen.LabelLock]
			}
			return nil
		}
		if err := h.rel.Deploy(h.ctx()); err != nil {
			t.Fatalf("deploy: %v\n%s", err, h.out)
		}
		h.expectLabels("blue", "")
		h.expectApp("blue", "t1", 2)
		if !strings.HasPrefix(lockDuring, "alice@box pid 100 (deploy) since ") {
			t.Errorf("lock while deploying: %q", lockDuring)
		}
		if !strings.Contains(h.out.String(), "deployed: blue is active (roomcast/roomcast:t1 × 2)") {
			t.Errorf("output:\n%s", h.out)
		}
	})
	t.Run("a later deploy never undoes a promote", func(t *testing.T) {
		h := newHarness(t)
		h.deployed("green", "blue", "t2", "t1")
		h.fake.SetService(bluegreen.NATSService, map[string]string{bluegreen.LabelNATSCluster: "true"}, ptr(3))
		var lockDuring, natsCluster string
		h.stacks.before = func(name string, env map[string]string) error {
			if name == "edge" {
				lockDuring, natsCluster = env["RELEASE_LOCK"], env["NATS_CLUSTER"]
			}
			return nil
		}
		if err := h.rel.Deploy(h.ctx()); err != nil {
			t.Fatalf("deploy: %v\n%s", err, h.out)
		}
		h.expectLabels("green", "blue")
		h.expectApp("green", "t2", 2)
		h.expectApp("blue", "t1", 0)
		if spec, _ := h.fake.Service(bluegreen.EdgeService); spec.Image != edgeImage+":t1" {
			t.Errorf("edge image %s, want the live one", spec.Image)
		}
		if !strings.HasPrefix(lockDuring, "alice@box pid 100 (deploy)") || natsCluster != "true" {
			t.Errorf("edge deployed with RELEASE_LOCK=%q NATS_CLUSTER=%q", lockDuring, natsCluster)
		}
		if !strings.Contains(h.out.String(), "NATS as a cluster of 3 nodes") {
			t.Errorf("output:\n%s", h.out)
		}
	})
	t.Run("a new NATS cluster starts in one deploy", func(t *testing.T) {
		// Its members find each other by their own names (stack/nats-cluster.yml), so
		// none has to wait for another.
		h := newHarness(t)
		h.rel.Config.NATSCluster = "true"
		var clusterDeploys []string
		h.stacks.before = func(name string, env map[string]string) error {
			if name == "edge" {
				clusterDeploys = append(clusterDeploys, env["NATS_CLUSTER"])
			}
			return nil
		}
		if err := h.rel.Deploy(h.ctx()); err != nil {
			t.Fatalf("deploy: %v\n%s", err, h.out)
		}
		if got := fmt.Sprint(clusterDeploys); got != "[true]" {
			t.Errorf("edge deploys with NATS_CLUSTER %s, want one with true", got)
		}
	})
	t.Run("EDGE_TAG upgrades the edge and the autoscaler", func(t *testing.T) {
		h := newHarness(t)
		h.deployed("blue", "", "t1", "")
		h.rel.Config.EdgeTag = "e2"
		if err := h.rel.Deploy(h.ctx()); err != nil {
			t.Fatalf("deploy: %v\n%s", err, h.out)
		}
		edge, _ := h.fake.Service(bluegreen.EdgeService)
		auto, _ := h.fake.Service("edge_autoscaler")
		if edge.Image != edgeImage+":e2" || auto.Image != appImage+":e2" {
			t.Errorf("edge %s, autoscaler %s", edge.Image, auto.Image)
		}
		h.expectLabels("blue", "")
	})
	t.Run("a named key file that is missing", func(t *testing.T) {
		h := newHarness(t)
		h.rel.Config.JWTSecretFile += ".missing"
		if err := h.rel.Deploy(h.ctx()); err == nil || !strings.Contains(err.Error(), "is missing or empty") {
			t.Fatalf("deploy: %v", err)
		}
	})
	t.Run("the default key file is made", func(t *testing.T) {
		h := newHarness(t)
		h.rel.Config.JWTSecretFile = h.rel.Config.DefaultJWTSecretFile
		if err := h.rel.Deploy(h.ctx()); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(h.out.String(), "creating the app's JWT key in") {
			t.Errorf("output:\n%s", h.out)
		}
	})
}

func TestScale(t *testing.T) {
	h := newHarness(t)
	h.deployed("blue", "", "t1", "")
	if err := h.rel.Scale(h.ctx(), 4); err != nil {
		t.Fatalf("scale: %v\n%s", err, h.out)
	}
	h.expectApp("blue", "t1", 4)
	h.expectLabels("blue", "")
	h.fake.Converge(h.app("blue"), func(image string, n uint64) []swarmtest.Task {
		return append(running(image, n-1), swarmtest.Task{Image: image, State: "starting"})
	})
	if err := h.rel.Scale(h.ctx(), 5); err == nil || !strings.Contains(err.Error(), "blue_app did not reach 5 healthy replicas") {
		t.Fatalf("scale: %v", err)
	}
	h.expectLabels("blue", "")
}

func TestStatus(t *testing.T) {
	h := newHarness(t)
	var out strings.Builder
	if err := h.rel.Status(h.ctx(), &out); err != nil || out.String() != "active: none\nblue   idle    not deployed\ngreen  idle    not deployed\n" {
		t.Fatalf("status: %v\n%s", err, out.String())
	}
	h.deployed("green", "blue", "t2", "t1")
	h.fake.SetLabel(bluegreen.EdgeService, bluegreen.LabelLock, bluegreen.Lock{Holder: "bob", Since: h.clock.Now().Add(-time.Minute)}.String())
	out.Reset()
	if err := h.rel.Status(h.ctx(), &out); err != nil {
		t.Fatal(err)
	}
	want := "active: green (previous: blue)\nrelease lock: held by bob for 1m0s\n" +
		"blue   idle    tag=t1           replicas=0/0\ngreen  active  tag=t2           replicas=2/2\n"
	if out.String() != want {
		t.Errorf("status:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestParseLock(t *testing.T) {
	since := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want bluegreen.Lock
		ok   bool
	}{
		{"", bluegreen.Lock{}, false},
		{"a@b pid 1 (deploy) since 2026-12-06T04:00:00Z", bluegreen.Lock{Holder: "a@b pid 1 (deploy)", Since: since}, true},
		{"by hand", bluegreen.Lock{Holder: "by hand"}, true},
	} {
		got, ok := bluegreen.ParseLock(tt.in)
		if ok != tt.ok || got.Holder != tt.want.Holder || !got.Since.Equal(tt.want.Since) {
			t.Errorf("ParseLock(%q) = %+v, %v", tt.in, got, ok)
		}
	}
}

// TestDrainWaitsForTasksOnTheirWayOut: a task told to shut down still holds
// connections until it has stopped; the drain says so when it outlasts the bound.
func TestDrainWaitsForTasksOnTheirWayOut(t *testing.T) {
	h := newHarness(t)
	h.deployed("blue", "", "t1", "")
	h.fake.Converge(h.app("blue"), func(image string, n uint64) []swarmtest.Task {
		if n == 0 {
			return []swarmtest.Task{{Image: image, DesiredState: "shutdown", State: "running"}}
		}
		return running(image, n)
	})
	if err := h.rel.Promote(h.ctx(), "t2"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"blue is still draining after 10s", "warning: blue still has tasks", "promoted: green is active"} {
		if !strings.Contains(h.out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, h.out)
		}
	}
	h.expectLabels("green", "blue")
}
