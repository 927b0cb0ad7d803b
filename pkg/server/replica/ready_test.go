package replica_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/server/replica"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
	"roomcast/pkg/wsclient"
)

// A replica whose history stream cannot be had yet (here: it asks for 3 replicas of a
// single server, which refuses to create it, as a NATS cluster still electing its
// leaders refuses) is not ready and admits nobody, on either listener, until the stream
// appears (here: another replica creates it).
func TestAReplicaIsNotReadyUntilItsHistoryStreamIsFound(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	early := startReplica(t, "early", ns.ClientURL(), func(c *replica.Config) {
		replicatest.History(100)(c)
		c.NATS.History.Replicas = 3
		c.HTTP.ProbeAddr = "127.0.0.1:0"
		c.Gateway.ReadyWait = 0 // refused at once, not after waiting for the stream
	})
	probe := "http://" + early.ProbeAddr().String()
	eventually(t, "early has tried to find its stream", func() bool {
		return testenv.Metric(t, early.Registry(), "roomcast_history_errors_total", "op", "stream") >= 1
	})
	for _, base := range []string{early.URL(), probe} {
		code, body, _ := getJSON(t, base+"/readyz")
		if code != 503 || body["status"] != "not_ready" || !strings.Contains(body["reason"], "history stream") {
			t.Errorf("%s/readyz without the history stream: %d %v, want 503 not_ready naming the history stream", base, code, body)
		}
	}
	if v := testenv.Metric(t, early.Registry(), "roomcast_ready"); v != 0 {
		t.Errorf("roomcast_ready = %v without the history stream", v)
	}
	resp := rawGet(t, early.url("/ws/chat/early/"), upgradeHeader(nil))
	if resp.status != 503 || resp.json["error"] != "not ready" {
		t.Fatalf("upgrade without the history stream: %d %s, want 503 not ready", resp.status, resp.body)
	}
	if v := testenv.Metric(t, early.Registry(), "roomcast_admission_rejected_total", "reason", "not_ready"); v != 1 {
		t.Errorf("admission_rejected_total{reason=not_ready} = %v, want 1", v)
	}

	// The stream appears: early finds it on its next look (every second while it has
	// none) and becomes ready.
	creator := startReplica(t, "creator", ns.ClientURL(), replicatest.History(100))
	historyReady(t, creator)
	for _, base := range []string{early.URL(), probe} {
		eventually(t, base+"/readyz answers ready", func() bool {
			code, body, _ := getJSON(t, base+"/readyz")
			return code == 200 && body["status"] == "ready"
		})
	}
	a, b := early.dial(t, "early"), creator.dial(t, "early")
	if err := a.Send("now"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, b); f.Message != "now" || f.Seq == 0 {
		t.Fatalf("the creator's member got %s, want the message, numbered by the stream", f.Raw)
	}
	if f := next(t, a); f.Message != "now" {
		t.Fatalf("early's member got %s", f.Raw)
	}
}

// An upgrade that arrives while the replica is not ready waits, up to
// ROOMCAST_READY_WAIT, for it to be: here until the history stream appears, as a replica
// whose NATS member left is back on another within a moment.
func TestAnUpgradeWaitsForTheReplicaToBeReady(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	early := startReplica(t, "early", ns.ClientURL(), func(c *replica.Config) {
		replicatest.History(100)(c)
		c.NATS.History.Replicas = 3
		c.Gateway.ReadyWait = 10 * time.Second
	})
	eventually(t, "early has tried to find its stream", func() bool {
		return testenv.Metric(t, early.Registry(), "roomcast_history_errors_total", "op", "stream") >= 1
	})
	dialed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, _, err := wsclient.Dial(ctx, early.wsURL("waits"), wsclient.Options{})
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	// Early finds the stream on its next look (every second while it has none), after the
	// upgrade above has arrived: it could not be admitted before.
	creator := startReplica(t, "creator", ns.ClientURL(), replicatest.History(100))
	historyReady(t, creator)
	if err := <-dialed; err != nil {
		t.Fatalf("an upgrade that arrived while the replica was not ready: %v, want it answered once ready", err)
	}
	if v := testenv.Metric(t, early.Registry(), "roomcast_admission_rejected_total", "reason", "not_ready"); v != 0 {
		t.Errorf("admission_rejected_total{reason=not_ready} = %v, want 0", v)
	}
}
