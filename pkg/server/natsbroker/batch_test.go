package natsbroker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/chat"
	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
)

// storedCount is how many messages the history stream holds.
func storedCount(t *testing.T, url string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := historyStream(t, url).Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// subscribe joins room on b and returns what it delivers.
func subscribe(t *testing.T, b *natsbroker.Broker, room string) <-chan chat.Message {
	t.Helper()
	got := make(chan chat.Message, 256)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, room, func(m chat.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return got
}

// publishHeld publishes texts to room on b while its batcher is held, as a loaded
// replica's senders queue theirs, and waits for every acknowledgement.
func publishHeld(t *testing.T, b *natsbroker.Broker, room string, texts []string) {
	t.Helper()
	release := natsbroker.HoldBatches(b)
	defer release()
	done := make(chan error, len(texts))
	for i, text := range texts {
		msg := chat.Message{ID: fmt.Sprintf("%s-%d-%d", room, time.Now().UnixNano(), i), Room: room, Text: text, Accepted: time.Now().UTC()}
		if err := b.PublishAsync(msg, func(err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
	}
	release()
	for range texts {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("a publish of the batch: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a publish of the batch was never answered")
		}
	}
}

func next(t *testing.T, got <-chan chat.Message) chat.Message {
	t.Helper()
	select {
	case m := <-got:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message delivered")
		return chat.Message{}
	}
}

// A room's messages published while the replica's publisher is busy are stored as one
// message of the stream, and every replica, a resume included, numbers them alike and
// strictly increasing.
func TestARoomsQueuedMessagesAreStoredTogetherAndNumberedAlikeEverywhere(t *testing.T) {
	url := natstest.Start(t, natstest.JetStream(t)).ClientURL()
	reg := prometheus.NewRegistry()
	a := connectBounded(t, url, reg)
	other := connectBounded(t, url, prometheus.NewRegistry())
	atA, atOther := subscribe(t, a, "batched"), subscribe(t, other, "batched")

	texts := []string{"one", "two\nlines", "three", "four", "five"}
	publishHeld(t, a, "batched", texts)
	if n := storedCount(t, url); n != 1 {
		t.Fatalf("the stream holds %d messages, want the 5 in one", n)
	}
	publishHeld(t, a, "batched", []string{"six"})

	var live []chat.Message
	for i := range len(texts) + 1 {
		m, o := next(t, atA), next(t, atOther)
		if m.Seq != o.Seq || m.Text != o.Text || m.Epoch == "" || m.Epoch != o.Epoch {
			t.Fatalf("message %d: %+v on one replica, %+v on the other; want the same seq and epoch", i, m, o)
		}
		if i > 0 && (m.Seq <= live[i-1].Seq || m.PrevSeq > live[i-1].Seq || m.PrevSeq == 0) {
			t.Fatalf("message %d: seq %d, prev %d after seq %d; want it increasing, its prev at most the one before",
				i, m.Seq, m.PrevSeq, live[i-1].Seq)
		}
		live = append(live, m)
	}
	if got := live[len(texts)].Text; got != "six" {
		t.Fatalf("the last message is %q, want six", got)
	}
	if n, sum := testenv.Histogram(t, reg, "roomcast_history_batch_messages"); n != 2 || sum != 6 {
		t.Fatalf("roomcast_history_batch_messages: %d stored, %v messages; want 2 and 6", n, sum)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, since := range []int{-1, 0, 1, 3, 4, 5} {
		from := uint64(0)
		if since >= 0 {
			from = live[since].Seq
		}
		res, err := other.History().ReadSince(ctx, "batched", from, live[0].Epoch)
		if err != nil || res.Truncated {
			t.Fatalf("ReadSince(%d): %+v, %v", from, res, err)
		}
		want := live[since+1:]
		if len(res.Messages) != len(want) || res.Last != live[len(live)-1].Seq {
			t.Fatalf("ReadSince(seq of message %d) = %d messages, last %d; want %d, last %d", since, len(res.Messages), res.Last, len(want), live[len(live)-1].Seq)
		}
		for i, m := range res.Messages {
			if m.Seq != want[i].Seq || m.Text != want[i].Text || m.ID != want[i].ID {
				t.Fatalf("ReadSince(seq of message %d), message %d: %+v, want %+v", since, i, m, want[i])
			}
		}
	}
}

// A batch is never larger than one message may be: messages that together are larger
// than the stream's bound on a message are stored in several.
func TestABatchStaysWithinTheStreamsBoundOnAMessage(t *testing.T) {
	url := natstest.Start(t, natstest.JetStream(t)).ClientURL()
	b := connectBounded(t, url, prometheus.NewRegistry()) // 25,600 bytes a message
	got := subscribe(t, b, "large")
	texts := make([]string, 8)
	for i := range texts {
		texts[i] = fmt.Sprint(i, strings.Repeat("x", 4000))
	}
	publishHeld(t, b, "large", texts)
	for i := range texts {
		if m := next(t, got); m.Text != texts[i] {
			t.Fatalf("message %d: %.10q..., want %.10q...", i, m.Text, texts[i])
		}
	}
	if n := storedCount(t, url); n < 2 || n >= uint64(len(texts)) {
		t.Fatalf("the stream holds %d messages for 8 of 4 KB (6 fit in one), want 2", n)
	}
}

// A stream made by an earlier release keeps one message per stored message, numbered by
// its sequence: this release uses it that way, so both serve it side by side.
func TestAStreamOfAnEarlierReleaseKeepsItsNumbering(t *testing.T) {
	url := natstest.Start(t, natstest.JetStream(t)).ClientURL()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := jetStreamAt(t, url).CreateStream(ctx, jetstream.StreamConfig{
		Name: natsbroker.DefaultStream, Subjects: []string{natsbroker.SubjectPrefix + "*"},
		MaxMsgsPerSubject: 10, Storage: jetstream.MemoryStorage,
		RePublish: &jetstream.RePublish{Source: natsbroker.SubjectPrefix + "*", Destination: natsbroker.LivePrefix + "{{wildcard(1)}}"},
	}); err != nil {
		t.Fatal(err)
	}
	b, err := natsbroker.Connect(natsbroker.Config{URL: url, Name: "test", History: bounded},
		slog.New(slog.NewJSONHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	clitest.Eventually(t, 10*time.Second, "the history stream found", b.HistoryReady)
	got := subscribe(t, b, "earlier")
	for _, text := range []string{"one", "two", "three"} {
		if err := b.Publish(ctx, chat.Message{Room: "earlier", Text: text}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if m := next(t, got); m.Seq != uint64(i+1) {
			t.Fatalf("message %d has seq %d, want the stream's sequence %d", i, m.Seq, i+1)
		}
	}
	res, err := b.History().ReadSince(ctx, "earlier", 1, "")
	if err != nil || len(res.Messages) != 2 || res.Messages[0].Seq != 2 || res.Last != 3 {
		t.Fatalf("ReadSince(1) = %+v, %v; want seqs 2 and 3", res, err)
	}
}
