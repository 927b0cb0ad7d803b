package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
)

// roomsInEachShard returns, for each of n shards, a room name that b stores there, found
// by the subject b publishes it on.
func roomsInEachShard(t *testing.T, b *natsbroker.Broker, n int) []string {
	t.Helper()
	rooms := make([]string, n)
	for i, found := 0, 0; found < n; i++ {
		if i > 10000 {
			t.Fatalf("no room name found for every one of %d shards", n)
		}
		room := "room" + strconv.Itoa(i)
		shard := 0
		if subject := natsbroker.StoreSubject(b, room); subject != natsbroker.SubjectPrefix+room {
			rest := strings.TrimPrefix(subject, natsbroker.SubjectPrefix)
			var err error
			if shard, err = strconv.Atoi(strings.TrimSuffix(rest, "."+room)); err != nil || shard < 1 || shard >= n {
				t.Fatalf("room %q is stored on %q, not a subject of one of %d shards", room, subject, n)
			}
		}
		if rooms[shard] == "" {
			rooms[shard], found = room, found+1
		}
	}
	return rooms
}

func shardStream(i int) string {
	if i == 0 {
		return natsbroker.DefaultStream
	}
	return natsbroker.DefaultStream + "_" + strconv.Itoa(i)
}

// With shards each room's messages are kept in its shard's stream, within the room's
// bound there; a room is delivered and replayed as with one stream, numbered by its
// shard; the byte bound is shared among the shards, and the metrics add them up.
func TestShardsKeepEachRoomInItsOwnStream(t *testing.T) {
	const shards, keep, sent = 4, 3, 5
	url := natstest.Start(t, natstest.JetStream(t)).ClientURL()
	cfg := natsbroker.HistoryConfig{Size: keep, TTL: time.Hour, Replicas: 1, MaxBytes: 8 << 20, MaxMsgSize: natsbroker.EnvelopeLimit(4096), Shards: shards}
	var logs testenv.SyncBuffer
	b, reg := connectHistoryBroker(t, url, cfg, &logs)
	rooms := roomsInEachShard(t, b, shards)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := jetStreamAt(t, url)

	for i, room := range rooms {
		got := subscribe(t, b, room)
		var delivered []chat.Message
		for j := range sent {
			if err := b.Publish(ctx, chat.Message{ID: fmt.Sprintf("%s-%d", room, j), Room: room, Text: strconv.Itoa(j), Accepted: time.Now().UTC()}); err != nil {
				t.Fatal(err)
			}
			m := next(t, got)
			if m.Text != strconv.Itoa(j) || (j > 0 && m.Seq <= delivered[j-1].Seq) || m.Epoch == "" {
				t.Fatalf("room %q (shard %d): message %d delivered as %+v after %+v", room, i, j, m, delivered)
			}
			delivered = append(delivered, m)
		}

		s, err := js.Stream(ctx, shardStream(i))
		if err != nil {
			t.Fatalf("shard %d's stream: %v", i, err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			t.Fatal(err)
		}
		subject := natsbroker.StoreSubject(b, room)
		if len(info.State.Subjects) != 1 || info.State.Subjects[subject] != keep {
			t.Fatalf("shard %d's stream %s holds %v, want %d messages of %s only", i, shardStream(i), info.State.Subjects, keep, subject)
		}
		if want := cfg.MaxBytes / shards; info.Config.MaxBytes != want {
			t.Errorf("shard %d's stream max_bytes %d, want %d: a part of the bound", i, info.Config.MaxBytes, want)
		}

		res, err := b.History().ReadSince(ctx, room, 0, "")
		if err != nil || len(res.Messages) != keep || res.Truncated {
			t.Fatalf("room %q replayed %+v, %v; want its last %d", room, res, err, keep)
		}
		for k, m := range res.Messages {
			want := delivered[sent-keep+k]
			if m.Text != want.Text || m.Seq != want.Seq || m.Epoch != want.Epoch {
				t.Fatalf("room %q replayed %+v as message %d, delivered %+v", room, m, k, want)
			}
		}
		res, err = b.History().ReadSince(ctx, room, delivered[sent-2].Seq, delivered[sent-2].Epoch)
		if err != nil || len(res.Messages) != 1 || res.Messages[0].Text != delivered[sent-1].Text {
			t.Fatalf("room %q resumed after its last but one: %+v, %v", room, res, err)
		}
	}

	for metric, want := range map[string]float64{
		"roomcast_history_stream_shards":    shards,
		"roomcast_history_stream_messages":  shards * keep,
		"roomcast_history_stream_max_bytes": float64(cfg.MaxBytes),
	} {
		if v := testenv.Metric(t, reg, metric); v != want {
			t.Errorf("%s = %v, want %v", metric, v, want)
		}
	}
	if _, err := js.Stream(ctx, shardStream(shards)); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("a stream beyond the shards: %v", err)
	}
}

// A replica uses the layout of the streams it finds, whatever its own number of shards:
// another release's replicas put each room where the first one did, and a stream made
// before shards stays the only one.
func TestAReplicaUsesTheShardsOfTheStreamsItFinds(t *testing.T) {
	cfg := natsbroker.HistoryConfig{Size: 10, TTL: time.Hour, Replicas: 1, MaxBytes: 8 << 20, MaxMsgSize: natsbroker.EnvelopeLimit(4096)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("a layout of 4 shards", func(t *testing.T) {
		url := natstest.Start(t, natstest.JetStream(t)).ClientURL()
		four := cfg
		four.Shards = 4
		var logs testenv.SyncBuffer
		first, _ := connectHistoryBroker(t, url, four, &logs)
		for _, other := range []int{1, 8} {
			again := cfg
			again.Shards = other
			var logs testenv.SyncBuffer
			b, reg := connectHistoryBroker(t, url, again, &logs)
			if v := testenv.Metric(t, reg, "roomcast_history_stream_shards"); v != 4 {
				t.Fatalf("configured with %d shards: roomcast_history_stream_shards = %v, want the existing 4", other, v)
			}
			if !strings.Contains(logs.String(), "using the existing history stream's shards") {
				t.Errorf("configured with %d shards, no log line says the existing 4 are used:\n%s", other, logs.String())
			}
			for _, room := range roomsInEachShard(t, first, 4) {
				if got, want := natsbroker.StoreSubject(b, room), natsbroker.StoreSubject(first, room); got != want {
					t.Fatalf("configured with %d shards: room %q stored on %q, the first replica on %q", other, room, got, want)
				}
				// A message of one goes to the other's members, numbered alike.
				got := subscribe(t, first, room)
				if err := b.Publish(ctx, chat.Message{ID: room + "-" + strconv.Itoa(other), Room: room, Text: "hi", Accepted: time.Now().UTC()}); err != nil {
					t.Fatal(err)
				}
				if m := next(t, got); m.Text != "hi" || m.Seq == 0 {
					t.Fatalf("room %q: the first replica got %+v", room, m)
				}
			}
		}
	})

	t.Run("a stream made before shards", func(t *testing.T) {
		url := natstest.Start(t, natstest.JetStream(t)).ClientURL()
		js := jetStreamAt(t, url)
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: natsbroker.DefaultStream, Subjects: []string{natsbroker.SubjectPrefix + "*"},
			MaxMsgsPerSubject: 10, Storage: jetstream.MemoryStorage,
			RePublish: &jetstream.RePublish{Source: natsbroker.SubjectPrefix + "*", Destination: natsbroker.LivePrefix + "{{wildcard(1)}}"},
		}); err != nil {
			t.Fatal(err)
		}
		eight := cfg
		eight.Shards = 8
		var logs testenv.SyncBuffer
		b, reg := connectHistoryBroker(t, url, eight, &logs)
		if v := testenv.Metric(t, reg, "roomcast_history_stream_shards"); v != 1 {
			t.Fatalf("roomcast_history_stream_shards = %v, want 1", v)
		}
		for i := range 50 {
			room := "room" + strconv.Itoa(i)
			if got := natsbroker.StoreSubject(b, room); got != natsbroker.SubjectPrefix+room {
				t.Fatalf("room %q stored on %q, want the only stream's %q", room, got, natsbroker.SubjectPrefix+room)
			}
		}
		if _, err := js.Stream(ctx, shardStream(1)); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("a second stream next to one made before shards: %v", err)
		}
	})
}

// Each shard is bounded by its part of the total, and drops its own oldest messages at
// it: the fullest shard's share of its bound is what says history is being lost, not
// the sum over the shards, which a busy shard among quiet ones keeps low.
func TestTheFullestShardIsReported(t *testing.T) {
	const shards = 2
	url := natstest.Start(t, natstest.JetStream(t)).ClientURL()
	cfg := natsbroker.HistoryConfig{Size: 100, TTL: time.Hour, Replicas: 1, MaxBytes: 1 << 20, MaxMsgSize: natsbroker.EnvelopeLimit(4096), Shards: shards}
	var logs testenv.SyncBuffer
	b, reg := connectHistoryBroker(t, url, cfg, &logs)
	rooms := roomsInEachShard(t, b, shards)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, n := range []int{1, 40} { // a quiet room in shard 0, a busy one in shard 1
		got := subscribe(t, b, rooms[i])
		for j := range n {
			if err := b.Publish(ctx, chat.Message{ID: fmt.Sprintf("m%d-%d", i, j), Room: rooms[i], Text: strings.Repeat("x", 4000), Accepted: time.Now().UTC()}); err != nil {
				t.Fatal(err)
			}
			next(t, got)
		}
	}

	js := jetStreamAt(t, url)
	var total, fullest float64
	for i := range shards {
		s, err := js.Stream(ctx, shardStream(i))
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total += float64(info.State.Bytes)
		fullest = max(fullest, float64(info.State.Bytes)/float64(info.Config.MaxBytes))
	}
	if sum := total / float64(cfg.MaxBytes); fullest < 1.5*sum {
		t.Fatalf("the busy shard holds %.3f of its bound, the shards together %.3f of theirs: the test needs them apart", fullest, sum)
	}
	if v := testenv.Metric(t, reg, "roomcast_history_stream_fullest_ratio"); math.Abs(v-fullest) > 1e-9 {
		t.Errorf("roomcast_history_stream_fullest_ratio = %v, want the busy shard's %v", v, fullest)
	}
}
