package replica_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
	"roomcast/pkg/wsclient"
)

func TestRoomsSpanReplicasAndEveryMemberGetsEachMessageOnce(t *testing.T) {
	ns := natstest.Start(t)
	url := ns.ClientURL()
	r1 := startReplica(t, "r1", url, nil)
	r2 := startReplica(t, "r2", url, nil)
	r3 := startReplica(t, "r3", url, nil)

	roomA := []*wsclient.Client{r1.dial(t, "alpha"), r1.dial(t, "alpha"), r2.dial(t, "alpha"), r3.dial(t, "alpha")}
	roomB := []*wsclient.Client{r1.dial(t, "beta"), r3.dial(t, "beta")}
	lonely := r2.dial(t, "gamma")

	before := time.Now().UTC()
	for i, c := range roomA {
		if err := c.Send(fmt.Sprintf("a%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range roomB {
		if err := c.Send(fmt.Sprintf("b%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range roomA {
		if got := collect(t, c, len(roomA)); !slices.Equal(got, texts("a", len(roomA))) {
			t.Errorf("alpha member %d got %q", i, got)
		}
	}
	for i, c := range roomB {
		if got := collect(t, c, len(roomB)); !slices.Equal(got, texts("b", len(roomB))) {
			t.Errorf("beta member %d got %q", i, got)
		}
	}
	if got := collect(t, lonely, 0); len(got) != 0 {
		t.Errorf("a member of another room got %q", got)
	}

	// The frame is the contract's: type, room, message, ts in UTC with fractions.
	if err := roomB[0].Send("shape"); err != nil {
		t.Fatal(err)
	}
	f := next(t, roomB[1])
	if f.Type != "message" || f.Room != "beta" || f.Message != "shape" {
		t.Fatalf("frame %s", f.Raw)
	}
	if f.TS.Before(before.Add(-time.Second)) || f.TS.Location() != time.UTC || !strings.HasSuffix(string(f.Raw), `Z"}`) {
		t.Errorf("ts in %s is not a recent UTC RFC 3339 time", f.Raw)
	}
	next(t, roomB[0])

	// Delivered counts add up across replicas: alpha 4×4, beta 2×2 + 2. A writer counts
	// its batch after the write returns, so the client can read the frame first.
	deliveredTotal := func() float64 {
		total := 0.0
		for _, r := range []*testReplica{r1, r2, r3} {
			total += testenv.Metric(t, r.Registry(), "roomcast_messages_delivered_total")
		}
		return total
	}
	eventually(t, "roomcast_messages_delivered_total over replicas is 22", func() bool { return deliveredTotal() >= 16+4+2 })
	if total := deliveredTotal(); total != 16+4+2 {
		t.Errorf("roomcast_messages_delivered_total over replicas = %v, want 22", total)
	}
	if v := testenv.Metric(t, r1.Registry(), "roomcast_messages_received_total"); v != 3+1 {
		t.Errorf("r1 roomcast_messages_received_total = %v, want 4", v)
	}
}

func TestAReplicaSubscribesToARoomOnlyWhileItHasMembers(t *testing.T) {
	ns := natstest.Start(t)
	r1 := startReplica(t, "r1", ns.ClientURL(), nil)
	subject := natsbroker.SubjectPrefix + "quiet"
	acc := ns.GlobalAccount()
	if acc.SubscriptionInterest(subject) {
		t.Fatal("interest in a room nobody joined")
	}
	c1 := r1.dial(t, "quiet")
	// The upgrade is answered only once the subscription is on the server.
	if !acc.SubscriptionInterest(subject) {
		t.Fatal("no interest on NATS right after the upgrade was answered")
	}
	c2 := r1.dial(t, "quiet")
	if n := acc.Interest(subject); n != 1 {
		t.Errorf("two local members: %d subscriptions on NATS, want one per replica", n)
	}
	c1.Close()
	c2.Close()
	eventually(t, "the replica unsubscribed from the empty room", func() bool { return !acc.SubscriptionInterest(subject) })
	eventually(t, "rooms_active back to 0", func() bool {
		return testenv.Metric(t, r1.Registry(), "roomcast_rooms_active") == 0
	})
}

func TestAMemberReceivesEverythingPublishedAfterItsUpgrade(t *testing.T) {
	ns := natstest.Start(t)
	r1 := startReplica(t, "r1", ns.ClientURL(), nil)
	r2 := startReplica(t, "r2", ns.ClientURL(), nil)
	sender := r1.dial(t, "race")
	// Each join on r2 is immediately followed by a message from r1; every joiner must
	// see it, which only holds if r2 subscribed before answering the upgrade.
	for i := range 20 {
		joiner := r2.dial(t, fmt.Sprintf("race%d", i))
		sender2 := r1.dial(t, fmt.Sprintf("race%d", i))
		if err := sender2.Send("hello"); err != nil {
			t.Fatal(err)
		}
		if f := next(t, joiner); f.Message != "hello" {
			t.Fatalf("joiner %d got %s", i, f.Raw)
		}
		joiner.Close()
		sender2.Close()
	}
	_ = sender
}

func TestMetricsAreExportedAndLintClean(t *testing.T) {
	r := startReplica(t, "solo", "", nil) // embedded NATS
	c := r.dial(t, "lobby")
	if err := c.Send("hi"); err != nil {
		t.Fatal(err)
	}
	next(t, c)
	problems, err := testutil.GatherAndLint(r.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{
		"roomcast_connections_active", "roomcast_connections_total", "roomcast_messages_received_total",
		"roomcast_messages_delivered_total", "roomcast_rooms_active", "roomcast_ready",
	} {
		testenv.Metric(t, r.Registry(), name)
	}
	if v := testenv.Metric(t, r.Registry(), "roomcast_build_info", "version", "v-test", "color", "test", "instance", "solo"); v != 1 {
		t.Errorf("roomcast_build_info = %v", v)
	}
	if v := testenv.Metric(t, r.Registry(), "roomcast_ready"); v != 1 {
		t.Errorf("roomcast_ready = %v, want 1", v)
	}
	for _, kind := range []string{"bad_request", "message_too_large", "rate_limited", "slow_consumer", "broker", "internal"} {
		if _, ok := testenv.LookupMetric(t, r.Registry(), "roomcast_errors_total", "kind", kind); !ok {
			t.Errorf("roomcast_errors_total{kind=%q} not exported from start-up", kind)
		}
	}
}
