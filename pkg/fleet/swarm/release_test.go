package swarm_test

import (
	"errors"
	"strings"
	"testing"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm/swarmtest"
)

func TestUpdateLabelsIsACompareAndSet(t *testing.T) {
	fake := swarmtest.NewServer(t)
	fake.SetService("edge_nginx", map[string]string{"roomcast.active": "blue", "keep": "me"}, ptr(1))
	c := MustClient(t, fake)
	svc, err := c.Service(ctxT(t), "edge_nginx")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateLabels(ctxT(t), svc, map[string]string{"roomcast.active": "green"}, []string{"gone"}); err != nil {
		t.Fatal(err)
	}
	if l := fake.Labels("edge_nginx"); l["roomcast.active"] != "green" || l["keep"] != "me" {
		t.Fatalf("labels %v", l)
	}
	// svc is now out of date: the write is refused, nothing changes.
	err = c.UpdateLabels(ctxT(t), svc, map[string]string{"roomcast.active": "blue"}, nil)
	if !errors.Is(err, bluegreen.ErrConflict) {
		t.Fatalf("update at an old version: %v, want ErrConflict", err)
	}
	if l := fake.Labels("edge_nginx"); l["roomcast.active"] != "green" {
		t.Fatalf("labels %v", l)
	}
	if _, err := c.Service(ctxT(t), "nope"); !errors.Is(err, bluegreen.ErrNotFound) {
		t.Fatalf("missing service: %v", err)
	}
}

func TestRunJob(t *testing.T) {
	fake := swarmtest.NewServer(t)
	c := MustClient(t, fake)
	if err := c.CreateSecret(ctxT(t), "roomcast_jwt_abc", []byte("key"), nil); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		exit int
		out  string
	}{{0, "PASS\n"}, {1, "FAIL message\n"}} {
		fake.SetJob(tt.exit, tt.out)
		res, err := c.RunJob(ctxT(t), bluegreen.Job{Name: "smoke", Image: "app:t1", Command: []string{"/smoke", "-x"},
			Network: "roomcast", Secret: "roomcast_jwt_abc", SecretTarget: "roomcast_jwt"})
		if err != nil || res.ExitCode != tt.exit || string(res.Output) != tt.out {
			t.Errorf("job: %+v %q, %v; want exit %d, output %q", res, res.Output, err, tt.exit, tt.out)
		}
		if _, ok := fake.Service("smoke"); ok {
			t.Error("job not removed")
		}
	}
	if _, err := c.RunJob(ctxT(t), bluegreen.Job{Name: "smoke", Image: "app:t1", Command: []string{"/smoke"}, Secret: "nope"}); !errors.Is(err, bluegreen.ErrNotFound) {
		t.Errorf("job with a missing secret: %v", err)
	}
}

func TestSecretsImagesExecAndStacks(t *testing.T) {
	fake := swarmtest.NewServer(t)
	c := MustClient(t, fake)
	ctx := ctxT(t)
	if err := c.CreateSecret(ctx, "roomcast_jwt_abcdef", []byte("k"), nil); err != nil {
		t.Fatal(err)
	}
	// The daemon's name filter matches prefixes: only the exact name counts.
	for name, want := range map[string]bool{"roomcast_jwt_abcdef": true, "roomcast_jwt_abc": false} {
		if ok, err := c.SecretExists(ctx, name); err != nil || ok != want {
			t.Errorf("SecretExists(%s) = %v, %v", name, ok, err)
		}
	}
	if err := c.CreateSecret(ctx, "roomcast_jwt_abcdef", []byte("k"), nil); err != nil {
		t.Errorf("creating an existing secret: %v", err)
	}
	fake.AddImage("app:t1")
	if ok, err := c.ImageExists(ctx, "app:t1"); !ok || err != nil {
		t.Errorf("ImageExists(app:t1) = %v, %v", ok, err)
	}
	if ok, err := c.ImageExists(ctx, "app:t2"); ok || err != nil {
		t.Errorf("ImageExists(app:t2) = %v, %v", ok, err)
	}
	fake.DeployService("edge_nginx", swarmtest.Spec{Image: "edge:t1", Replicas: ptr(2)})
	fake.SetExec(func(ctr string, cmd []string) int { return len(cmd) })
	codes, err := c.ExecInLocalTasks(ctx, "edge_nginx", []string{"status", "-color", "blue"})
	if err != nil || len(codes) != 2 {
		t.Fatalf("exec: %v, %v", codes, err)
	}
	for _, code := range codes {
		if code != 3 {
			t.Errorf("exit codes %v", codes)
		}
	}
	fake.DeployService("blue_app", swarmtest.Spec{Image: "app:t1", Replicas: ptr(2), Labels: map[string]string{"com.docker.stack.namespace": "blue"}})
	tasks, err := c.Tasks(ctx, "blue_app")
	if err != nil || len(tasks) != 2 || tasks[0].Image != "app:t1" || tasks[0].State != "running" {
		t.Fatalf("tasks %+v, %v", tasks, err)
	}
	if err := c.RemoveStack(ctx, "blue"); err != nil {
		t.Fatal(err)
	}
	if _, ok := fake.Service("blue_app"); ok {
		t.Error("blue_app not removed")
	}
	if _, ok := fake.Service("edge_nginx"); !ok {
		t.Error("another stack's service removed")
	}
	if err := c.Scale(ctx, "edge_nginx", 3); err != nil || !strings.Contains(strings.Join(fake.Requests(), " "), "/update") {
		t.Errorf("scale: %v", err)
	}
}
