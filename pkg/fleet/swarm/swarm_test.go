package swarm_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"roomcast/pkg/fleet/swarm"
	"roomcast/pkg/fleet/swarm/swarmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ptr(n uint64) *uint64 { return &n }

// MustClient is a swarm.Client for the fake, closed in t.Cleanup.
func MustClient(tb testing.TB, fake *swarmtest.Server) *swarm.Client {
	tb.Helper()
	c, err := swarm.New(fake.Host())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNegotiatesDownToAPI141(t *testing.T) {
	fake := swarmtest.NewServer(t)
	fake.SetService("edge_nginx", map[string]string{"roomcast.active": "blue"}, ptr(1))
	c := MustClient(t, fake)
	if _, err := c.ServiceLabels(ctxT(t), "edge_nginx"); err != nil {
		t.Fatal(err)
	}
	if v := c.APIVersion(); v != swarmtest.APIVersion {
		t.Fatalf("client uses API %s, want %s", v, swarmtest.APIVersion)
	}
	for _, r := range fake.Requests() {
		if r != "HEAD /_ping" && r != "GET /_ping" && !strings.Contains(r, "/v"+swarmtest.APIVersion+"/") {
			t.Errorf("request %q is not on API %s", r, swarmtest.APIVersion)
		}
	}
}

func TestServiceLabels(t *testing.T) {
	fake := swarmtest.NewServer(t)
	fake.SetService("edge_nginx", map[string]string{"roomcast.active": "green", "roomcast.previous": "blue"}, ptr(1))
	fake.SetService("nolabels", nil, nil)
	c := MustClient(t, fake)
	tests := []struct {
		name    string
		service string
		want    map[string]string
		wantErr error
	}{
		{"labels", "edge_nginx", map[string]string{"roomcast.active": "green", "roomcast.previous": "blue"}, nil},
		{"no labels is an empty map", "nolabels", map[string]string{}, nil},
		{"missing service", "edge_nope", nil, swarm.ErrServiceNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.ServiceLabels(ctxT(t), tt.service)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && (got == nil || len(got) != len(tt.want)) {
				t.Fatalf("labels %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("label %s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestServerErrorIsNotNotFound(t *testing.T) {
	fake := swarmtest.NewServer(t)
	fake.SetService("edge_nginx", nil, ptr(1))
	fake.Fail(`^/services/`, 500, 1)
	c := MustClient(t, fake)
	_, err := c.ServiceLabels(ctxT(t), "edge_nginx")
	if err == nil || errors.Is(err, swarm.ErrServiceNotFound) || !strings.Contains(err.Error(), "edge_nginx") {
		t.Fatalf("got %v, want a wrapped daemon error naming the service", err)
	}
	if _, err := c.ServiceLabels(ctxT(t), "edge_nginx"); err != nil {
		t.Fatalf("after the failure: %v", err)
	}
}

func TestUnreachableDaemon(t *testing.T) {
	fake := swarmtest.NewServer(t)
	host := fake.Host()
	fake.Close()
	c, err := swarm.New(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.ServiceLabels(ctxT(t), "edge_nginx"); err == nil {
		t.Fatal("no error from a closed daemon")
	}
}

func TestReplicasAndScale(t *testing.T) {
	fake := swarmtest.NewServer(t)
	fake.SetService("blue_app", map[string]string{"com.docker.stack.namespace": "blue"}, ptr(2))
	fake.SetService("edge_global", nil, nil)
	c := MustClient(t, fake)
	ctx := ctxT(t)

	n, err := c.ServiceReplicas(ctx, "blue_app")
	if err != nil || n != 2 {
		t.Fatalf("replicas %d, %v; want 2", n, err)
	}
	if err := c.ScaleService(ctx, "blue_app", 5); err != nil {
		t.Fatal(err)
	}
	if got, _ := fake.Replicas("blue_app"); got != 5 {
		t.Fatalf("fake has %d replicas after scaling to 5", got)
	}
	if n, err := c.ServiceReplicas(ctx, "blue_app"); err != nil || n != 5 {
		t.Fatalf("replicas after scale %d, %v", n, err)
	}
	if l := fake.Labels("blue_app"); l["com.docker.stack.namespace"] != "blue" {
		t.Fatalf("scaling lost the labels: %v", l)
	}
	for _, tt := range []struct {
		name    string
		do      func() error
		wantErr error
	}{
		{"replicas of a global service", func() error { _, err := c.ServiceReplicas(ctx, "edge_global"); return err }, swarm.ErrNotReplicated},
		{"scale a global service", func() error { return c.ScaleService(ctx, "edge_global", 3) }, swarm.ErrNotReplicated},
		{"replicas of a missing service", func() error { _, err := c.ServiceReplicas(ctx, "nope"); return err }, swarm.ErrServiceNotFound},
		{"scale a missing service", func() error { return c.ScaleService(ctx, "nope", 3) }, swarm.ErrServiceNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.do(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestScaleRefusedOnConcurrentUpdate(t *testing.T) {
	fake := swarmtest.NewServer(t)
	fake.SetService("blue_app", nil, ptr(2))
	fake.Fail(`^/services/.*/update$`, 500, 1)
	c := MustClient(t, fake)
	if err := c.ScaleService(ctxT(t), "blue_app", 4); err == nil {
		t.Fatal("a refused update returned no error")
	}
	if got, _ := fake.Replicas("blue_app"); got != 2 {
		t.Fatalf("replicas %d after a refused update", got)
	}
}

func recv(t *testing.T, ch <-chan swarm.ServiceEvent) swarm.ServiceEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("event stream closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return swarm.ServiceEvent{}
}

func TestWatchServiceDeliversOnlyThatService(t *testing.T) {
	fake := swarmtest.NewServer(t)
	fake.SetService("edge_nginx", map[string]string{"roomcast.active": "blue"}, ptr(1))
	fake.SetService("edge_nginx2", nil, ptr(1))
	c := MustClient(t, fake)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, errs := c.WatchService(ctx, "edge_nginx")

	fake.Emit("update", "edge_nginx2") // shares a prefix: the daemon's filter lets it through
	fake.Emit("update", "blue_app")
	fake.SetLabel("edge_nginx", "roomcast.active", "green")
	ev := recv(t, events)
	if ev.Name != "edge_nginx" || ev.Action != "update" || ev.ID == "" {
		t.Fatalf("first event %+v, want the update of edge_nginx", ev)
	}
	fake.RemoveService("edge_nginx")
	if ev := recv(t, events); ev.Action != "remove" {
		t.Fatalf("event %+v, want remove", ev)
	}
	if !strings.Contains(strings.Join(fake.Requests(), " "), "/v1.41/events") {
		t.Fatalf("events not read on API 1.41: %v", fake.Requests())
	}

	cancel()
	for range events {
	}
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %v, want context.Canceled", err)
	}
}

func TestWatchServiceEndsWithTheStreamError(t *testing.T) {
	tests := []struct {
		name  string
		setup func(fake *swarmtest.Server)
		after func(fake *swarmtest.Server)
	}{
		{"daemon refuses the stream", func(fake *swarmtest.Server) { fake.RefuseStreams(true) }, func(*swarmtest.Server) {}},
		{"daemon cuts the stream", func(*swarmtest.Server) {}, func(fake *swarmtest.Server) { fake.CutStreams() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := swarmtest.NewServer(t)
			fake.SetService("edge_nginx", nil, ptr(1))
			tt.setup(fake)
			c := MustClient(t, fake)
			events, errs := c.WatchService(ctxT(t), "edge_nginx")
			tt.after(fake)
			for range events {
			}
			err := <-errs
			if err == nil || errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "edge_nginx") {
				t.Fatalf("stream error %v, want the daemon's error naming the service", err)
			}
		})
	}
}
