package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"roomcast/pkg/chat"
	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
)

// connectHistory connects a broker with history on to url, logging into logs, and waits
// until its history stream (every shard of it) is available.
func connectHistory(t *testing.T, url string, cfg natsbroker.HistoryConfig, logs *testenv.SyncBuffer) *prometheus.Registry {
	t.Helper()
	_, reg := connectHistoryBroker(t, url, cfg, logs)
	return reg
}

// connectHistoryBroker is connectHistory, returning the broker too.
func connectHistoryBroker(t *testing.T, url string, cfg natsbroker.HistoryConfig, logs *testenv.SyncBuffer) (*natsbroker.Broker, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	b, err := natsbroker.Connect(natsbroker.Config{URL: url, Name: "test", ReconnectWait: 50 * time.Millisecond, History: cfg},
		slog.New(slog.NewJSONHandler(logs, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, ok := testenv.LookupMetric(t, reg, "roomcast_history_available"); ok && v == 1 {
			return b, reg
		}
		if time.Now().After(deadline) {
			t.Fatal("the history stream never became available")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func streamConfig(t *testing.T, url string) jetstream.StreamConfig {
	t.Helper()
	return historyStream(t, url).CachedInfo().Config
}

// jetStreamAt is a JetStream client of its own on url, closed at the test's end.
func jetStreamAt(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// historyStream looks the history stream up on url.
func historyStream(t *testing.T, url string) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := jetStreamAt(t, url).Stream(ctx, natsbroker.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var bounded = natsbroker.HistoryConfig{Size: 10, TTL: time.Hour, Replicas: 1, MaxBytes: 2 << 20, MaxMsgSize: natsbroker.EnvelopeLimit(4096)}

func TestTheHistoryStreamIsBoundedInBytesAndItsSizeExported(t *testing.T) {
	url := natstest.Start(t, natstest.JetStream(t)).ClientURL()
	var logs testenv.SyncBuffer
	reg := connectHistory(t, url, bounded, &logs)
	got := streamConfig(t, url)
	if got.MaxBytes != bounded.MaxBytes || got.MaxMsgSize != bounded.MaxMsgSize || got.Discard != jetstream.DiscardOld {
		t.Fatalf("stream max_bytes %d, max_msg_size %d, discard %v; want %d, %d, old",
			got.MaxBytes, got.MaxMsgSize, got.Discard, bounded.MaxBytes, bounded.MaxMsgSize)
	}
	if v := testenv.Metric(t, reg, "roomcast_history_stream_max_bytes"); v != float64(bounded.MaxBytes) {
		t.Errorf("roomcast_history_stream_max_bytes = %v", v)
	}
	if v := testenv.Metric(t, reg, "roomcast_history_stream_bytes"); v != 0 {
		t.Errorf("roomcast_history_stream_bytes = %v, want 0 for a new stream", v)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestAnExistingStreamKeepsItsOwnLimitsAndTheLogSaysSo(t *testing.T) {
	url := natstest.Start(t, natstest.JetStream(t)).ClientURL()
	var first testenv.SyncBuffer
	connectHistory(t, url, natsbroker.HistoryConfig{Size: 10, TTL: time.Hour, Replicas: 1}, &first) // an older release: no byte bound
	var logs testenv.SyncBuffer
	connectHistory(t, url, bounded, &logs)
	if got := streamConfig(t, url); got.MaxBytes != -1 {
		t.Fatalf("the existing stream's max_bytes became %d", got.MaxBytes)
	}
	log := logs.String()
	if !strings.Contains(log, "using the existing history stream with its own limits") ||
		!strings.Contains(log, `"max_bytes":-1`) || !strings.Contains(log, `"configured_max_bytes":2097152`) {
		t.Fatalf("no log line names the differing byte bound:\n%s", log)
	}
}

func TestWithJetStreamAPublishThatFindsNoStreamIsUnavailableNotSentLive(t *testing.T) {
	// A member's replica takes the copy as the acknowledgement, and no copy comes; any
	// other asks JetStream, whose answer is that nothing took the message.
	for _, member := range []bool{false, true} {
		t.Run(fmt.Sprintf("subscribed=%v", member), func(t *testing.T) {
			t.Parallel()
			testPublishFindingNoStream(t, member)
		})
	}
}

func testPublishFindingNoStream(t *testing.T, member bool) {
	ns := natstest.Start(t, natstest.JetStream(t))
	reg := prometheus.NewRegistry()
	b := connectBounded(t, ns.ClientURL(), reg)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if member {
		sub, err := b.Subscribe(ctx, "gap", func(chat.Message) {})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}

	// What reaches the live subject, seen by a plain connection.
	nc, live := watch(t, ns.ClientURL(), natsbroker.LivePrefix+"gap")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, natsbroker.DefaultStream); err != nil {
		t.Fatal(err)
	}
	err = b.Publish(ctx, chat.Message{ID: "refused", Room: "gap", Text: "refused"})
	if !errors.Is(err, chat.ErrUnavailable) {
		t.Fatalf("publish with the stream gone: %v, want chat.ErrUnavailable", err)
	}

	// The broker makes the stream again; the next message that is taken is stored and
	// is the first (and only) one on the live subject: the refused one never went out.
	n := 0
	clitest.Eventually(t, 10*time.Second, "a publish taken again", func() error {
		n++
		return b.Publish(ctx, chat.Message{ID: fmt.Sprintf("stored-%d", n), Room: "gap", Text: "stored"})
	})
	m, err := live.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Data), "stored") || m.Header.Get(jetstream.SequenceHeader) == "" {
		t.Fatalf("first live message %s (headers %v), want the stored one, numbered", m.Data, m.Header)
	}
}

func TestASinceFromTheFutureCountsNothingAsHad(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	b := connectBounded(t, ns.ClientURL(), prometheus.NewRegistry())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, text := range []string{"one", "two"} {
		if err := b.Publish(ctx, chat.Message{Room: "future", Text: text}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := b.History().ReadSince(ctx, "future", 0, "")
	if err != nil || len(all.Messages) != 2 {
		t.Fatalf("ReadSince(0): %+v, %v; want the two messages", all, err)
	}
	newest := all.Last

	// Up to date: nothing replayed, everything up to newest had.
	got, err := b.History().ReadSince(ctx, "future", newest, all.Epoch)
	if err != nil || len(got.Messages) != 0 || got.Last != newest || got.Truncated {
		t.Fatalf("ReadSince(newest): %+v, %v; want nothing replayed, Last %d", got, err, newest)
	}
	// From the future: nothing replayed and nothing counted as had, so that a message
	// stored between the member's join and this read (held for it) is delivered.
	got, err = b.History().ReadSince(ctx, "future", newest+1000, all.Epoch)
	if err != nil || len(got.Messages) != 0 || got.Last != 0 || got.Truncated {
		t.Fatalf("ReadSince(newest+1000): %+v, %v; want nothing replayed, Last 0", got, err)
	}
}

// connectBounded connects a broker with the bounded history to url and waits until it
// has found its stream.
func connectBounded(t *testing.T, url string, reg *prometheus.Registry) *natsbroker.Broker {
	t.Helper()
	b, err := natsbroker.Connect(natsbroker.Config{URL: url, Name: "test", ReconnectWait: 50 * time.Millisecond, History: bounded},
		slog.New(slog.NewJSONHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	clitest.Eventually(t, 10*time.Second, "the history stream found", b.HistoryReady)
	return b
}

// watch subscribes a plain connection to subject and returns once the server has the
// subscription.
func watch(t *testing.T, url, subject string) (*nats.Conn, *nats.Subscription) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return nc, sub
}

func TestAResumeReadsFromTheStreamsLeaderNotByDirectGet(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	b := connectBounded(t, ns.ClientURL(), prometheus.NewRegistry())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, text := range []string{"one", "two", "three"} {
		if err := b.Publish(ctx, chat.Message{Room: "lead", Text: text}); err != nil {
			t.Fatal(err)
		}
	}
	// A plain connection sees the requests: a direct get may be answered by a follower
	// that is behind the leader, which a resume must not rely on.
	_, direct := watch(t, ns.ClientURL(), "$JS.API.DIRECT.GET.>")
	_, leader := watch(t, ns.ClientURL(), "$JS.API.STREAM.MSG.GET.>")
	got, err := b.History().ReadSince(ctx, "lead", 0, "")
	if err != nil || len(got.Messages) != 3 {
		t.Fatalf("ReadSince(0): %+v, %v; want the three messages", got, err)
	}
	if _, err := direct.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatal("the replay asked for a direct get")
	}
	if _, err := leader.NextMsg(time.Second); err != nil {
		t.Fatalf("the replay did not ask the stream's leader: %v", err)
	}
}

func TestLiveMessagesKeepTheStreamsEpochWhileTheStreamCannotBeLookedUp(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	b := connectBounded(t, ns.ClientURL(), prometheus.NewRegistry())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	got := make(chan chat.Message, 2)
	sub, err := b.Subscribe(ctx, "steady", func(m chat.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	deliver := func(id string) chat.Message {
		t.Helper()
		if err := b.Publish(ctx, chat.Message{ID: id, Room: "steady", Text: id}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			return m
		case <-ctx.Done():
			t.Fatalf("%s never came live", id)
			return chat.Message{}
		}
	}

	before := deliver("before")
	if before.Epoch == "" || before.Seq == 0 {
		t.Fatalf("a stored message came as seq %d of epoch %q", before.Seq, before.Epoch)
	}
	// A lookup fails while the stream's leader is replaced; the stream is the same, and
	// a room must still recognise what it delivered: the epoch is kept, not emptied.
	if err := natsbroker.FailStreamLookup(b); err == nil {
		t.Fatal("the failing lookup succeeded")
	}
	during := deliver("during")
	if during.Epoch != before.Epoch || during.Seq <= before.Seq {
		t.Fatalf("with the stream not found: seq %d of epoch %q, want after %d of epoch %q", during.Seq, during.Epoch, before.Seq, before.Epoch)
	}
}

// A replay that finds no stream says whether reading again soon may help: on a server
// with JetStream the stream is being looked up again (its leader replaced), and is found
// within seconds; a server without JetStream never has one.
func TestAReplayWithoutTheStreamSaysWhetherItIsForNow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	withJS := natstest.Start(t, natstest.JetStream(t))
	b := connectBounded(t, withJS.ClientURL(), prometheus.NewRegistry())
	if err := natsbroker.FailStreamLookup(b); err == nil {
		t.Fatal("the failing lookup succeeded")
	}
	_, err := b.History().ReadSince(ctx, "lobby", 1, "")
	if !errors.Is(err, chat.ErrHistoryUnavailable) || !errors.Is(err, chat.ErrHistoryTemporary) {
		t.Fatalf("replay while the stream is looked up again: %v, want unavailable for now", err)
	}

	withoutJS := natstest.Start(t)
	reg := prometheus.NewRegistry()
	plain, err := natsbroker.Connect(natsbroker.Config{URL: withoutJS.ClientURL(), Name: "test", History: bounded},
		slog.New(slog.NewJSONHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(plain.Close)
	clitest.Eventually(t, 10*time.Second, "connected", plain.Ready)
	_, err = plain.History().ReadSince(ctx, "lobby", 1, "")
	if !errors.Is(err, chat.ErrHistoryUnavailable) || errors.Is(err, chat.ErrHistoryTemporary) {
		t.Fatalf("replay on a server without JetStream: %v, want unavailable for good", err)
	}
}

// A read of the stream that goes unanswered (sent to a leader whose node died), or that
// a member without a leader answers with 503, fails within the read's own bound and says
// reading again may help; once the leader answers, the read returns everything.
func TestAReplayReadThatGoesUnansweredGivesUpAfterItsOwnBound(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	cfg := bounded
	cfg.ReadTimeout = 200 * time.Millisecond
	b, err := natsbroker.Connect(natsbroker.Config{URL: ns.ClientURL(), Name: "test", History: cfg},
		slog.New(slog.NewJSONHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	clitest.Eventually(t, 10*time.Second, "the history stream found", b.HistoryReady)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, text := range []string{"one", "two", "three"} {
		if err := b.Publish(ctx, chat.Message{Room: "stalled", Text: text}); err != nil {
			t.Fatal(err)
		}
	}

	all, err := b.History().ReadSince(ctx, "stalled", 0, "")
	if err != nil || len(all.Messages) != 3 {
		t.Fatalf("ReadSince(0): %+v, %v; want the 3 kept", all, err)
	}
	since := all.Messages[0].Seq

	// The reads go to a stand-in for the stream's leader instead: first one that never
	// answers, then one that answers as a member without a leader does.
	const get = "$JS.API.STREAM.MSG.GET." + natsbroker.DefaultStream
	if err := ns.GlobalAccount().AddMapping(get, "standin.get"); err != nil {
		t.Fatal(err)
	}
	nc, standin := watch(t, ns.ClientURL(), "standin.get")
	_, err = b.History().ReadSince(ctx, "stalled", since, "")
	if !errors.Is(err, chat.ErrHistoryTemporary) || !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		t.Fatalf("an unanswered read: %v (caller's context: %v), want it given up after its own bound, for now", err, ctx.Err())
	}
	if _, err := standin.NextMsg(time.Second); err != nil {
		t.Fatalf("the read never reached the stand-in: %v", err)
	}
	if err := standin.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	noLeader, err := nc.Subscribe("standin.get", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	_, err = b.History().ReadSince(ctx, "stalled", since, "")
	if !errors.Is(err, chat.ErrHistoryTemporary) {
		t.Fatalf("a read answered 503: %v, want it unavailable for now", err)
	}
	_ = noLeader.Unsubscribe()

	ns.GlobalAccount().RemoveMapping(get)
	got, err := b.History().ReadSince(ctx, "stalled", since, "")
	if err != nil || len(got.Messages) != 2 || got.Truncated {
		t.Fatalf("the leader back: %+v, %v; want the two messages after the first", got, err)
	}
}

// A room that outruns its bound while a replay reads it loses its oldest messages then:
// when the ones the replay has yet to read go, the replay says so (Truncated) rather than
// skip them silently, and when only the ones it has read go, it says nothing. It used to
// ask once, before reading, whether since was kept, and a resume after a stream leader's
// election (5 s of a busy room's history) lost the messages after since untold.
func TestAReplayThatTheRoomOutrunsWhileItReadsSaysTruncated(t *testing.T) {
	tests := []struct {
		name      string
		at, more  int // after this many reads, this many more messages (10 kept)
		truncated bool
		first     int // index of the first message replayed, of the 10 first kept
	}{
		{name: "nothing dropped", at: -1, first: 2},
		{name: "since and the next dropped before the first read", at: 0, more: 3, truncated: true, first: 3},
		{name: "only messages already read dropped", at: 3, more: 2, first: 2},
		{name: "the drops overtake the reads", at: 2, more: 6, truncated: true, first: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ns := natstest.Start(t, natstest.JetStream(t))
			b := connectBounded(t, ns.ClientURL(), prometheus.NewRegistry()) // 10 kept per room
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			publish := func(n int) {
				for i := range n {
					if err := b.Publish(ctx, chat.Message{Room: "outrun", Text: fmt.Sprint(i)}); err != nil {
						t.Error(err)
					}
				}
			}
			publish(10)
			all, err := b.History().ReadSince(ctx, "outrun", 0, "")
			if err != nil || len(all.Messages) != 10 {
				t.Fatalf("ReadSince(0): %+v, %v; want the 10 kept", all, err)
			}
			since := all.Messages[1].Seq // the client has the first two
			natsbroker.BeforeReplayRead(b, func(read int) {
				if read == tt.at {
					publish(tt.more)
				}
			})
			got, err := b.History().ReadSince(ctx, "outrun", since, all.Epoch)
			if err != nil {
				t.Fatal(err)
			}
			var seqs []uint64
			for _, m := range got.Messages {
				seqs = append(seqs, m.Seq)
			}
			if got.Truncated != tt.truncated || len(seqs) == 0 || seqs[0] != all.Messages[tt.first].Seq {
				t.Fatalf("replayed %v, truncated %v; want truncated %v, from seq %d (of %d kept first)",
					seqs, got.Truncated, tt.truncated, all.Messages[tt.first].Seq, all.Messages[0].Seq)
			}
		})
	}
}
