package natsbroker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/chat"
	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
)

func TestARoomsOwnReplicaTakesTheCopyAsTheAcknowledgementOthersAskJetStream(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	reg := prometheus.NewRegistry()
	b := connectBounded(t, ns.ClientURL(), reg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A plain connection sees each publish to the stream, with its reply subject.
	_, published := watch(t, ns.ClientURL(), natsbroker.SubjectPrefix+"*")
	got := make(chan chat.Message, 4)
	sub, err := b.Subscribe(ctx, "member", func(m chat.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	for i, c := range []struct {
		room      string
		wantReply bool
	}{
		{room: "member", wantReply: false}, // the copy comes to this replica anyway
		{room: "elsewhere", wantReply: true},
		{room: "member", wantReply: false},
	} {
		id := fmt.Sprintf("ack-%d", i)
		if err := b.Publish(ctx, chat.Message{ID: id, Room: c.room, Text: "hi"}); err != nil {
			t.Fatalf("publish %s to %s: %v", id, c.room, err)
		}
		m, err := published.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("publish %s not seen: %v", id, err)
		}
		if (m.Reply != "") != c.wantReply {
			t.Errorf("publish %s to %s has reply subject %q; want one: %v", id, c.room, m.Reply, c.wantReply)
		}
	}
	for _, want := range []string{"ack-0", "ack-2"} {
		select {
		case m := <-got:
			if m.ID != want || m.Seq == 0 {
				t.Fatalf("delivered %+v, want %s numbered", m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s not delivered", want)
		}
	}
	if n := testenv.Metric(t, reg, "roomcast_history_errors_total", "op", "publish"); n != 0 {
		t.Fatalf("%v publish errors, want 0", n)
	}
}

func TestAMemberThatLeavesRightAfterSendingIsToldItsMessageWasStored(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	reg := prometheus.NewRegistry()
	b := connectBounded(t, ns.ClientURL(), reg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	subscriptions := ns.NumSubscriptions()

	// The room's subscription ends before the copy that answers the publish is back:
	// it is kept, delivering nothing, until the copy has come.
	const n = 10 // what the bounded history keeps per room
	for i := range n {
		delivered := make(chan chat.Message, 1)
		sub, err := b.Subscribe(ctx, "brief", func(m chat.Message) { delivered <- m })
		if err != nil {
			t.Fatal(err)
		}
		res := make(chan error, 1)
		msg := chat.Message{ID: fmt.Sprintf("brief-%d", i), Room: "brief", Text: "bye"}
		if err := b.PublishAsync(msg, func(err error) { res <- err }); err != nil {
			t.Fatal(err)
		}
		if err := sub.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-res:
			if err != nil {
				t.Fatalf("message %d: %v, want stored", i, err)
			}
		case <-ctx.Done():
			t.Fatalf("message %d never answered", i)
		}
	}
	stored, err := b.History().ReadSince(ctx, "brief", 0, "")
	if err != nil || len(stored.Messages) != n {
		t.Fatalf("history of the room: %d messages, %v; want %d", len(stored.Messages), err, n)
	}
	if v := testenv.Metric(t, reg, "roomcast_history_errors_total", "op", "publish"); v != 0 {
		t.Fatalf("%v publish errors, want 0", v)
	}
	clitest.Eventually(t, 5*time.Second, "the kept subscriptions ended", func() error {
		if got := ns.NumSubscriptions(); got != subscriptions {
			return fmt.Errorf("the server has %d subscriptions, want %d as before", got, subscriptions)
		}
		return nil
	})
}
