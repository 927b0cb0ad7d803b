package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv/natstest"
)

// BenchmarkPublishWithHistory is one message through JetStream and back live, history
// on: waiting for each acknowledgement (Publish, what a connection's reader did first)
// against a window of them (PublishAsync), with JetStream's acknowledgements and with
// the republished copy as the acknowledgement (what a member's replica does now). It
// reports the CPU of the whole process, the in-process nats-server included, per
// message.
func BenchmarkPublishWithHistory(b *testing.B) {
	b.Run("wait-each", func(b *testing.B) {
		benchmarkPublish(b, false, func(br *natsbroker.Broker, msg chat.Message, done func(error)) error {
			done(br.Publish(context.Background(), msg))
			return nil
		})
	})
	window := func(br *natsbroker.Broker, msg chat.Message, done func(error)) error {
		// A full window refuses; a sender would be told unavailable, the benchmark
		// waits for room instead.
		for {
			err := br.PublishAsync(msg, done)
			if !errors.Is(err, chat.ErrUnavailable) {
				return err
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	b.Run("window", func(b *testing.B) { benchmarkPublish(b, false, window) })
	b.Run("window-copy-acks", func(b *testing.B) { benchmarkPublish(b, true, window) })
}

func benchmarkPublish(b *testing.B, copyAcks bool, publish func(*natsbroker.Broker, chat.Message, func(error)) error) {
	ns := natstest.Start(b, natstest.JetStream(b))
	br, err := natsbroker.Connect(natsbroker.Config{URL: ns.ClientURL(), Name: "bench",
		History: natsbroker.HistoryConfig{Size: 100, TTL: time.Hour, Memory: true, Replicas: 1, MaxBytes: 64 << 20}},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Close)
	if !copyAcks {
		natsbroker.AskJetStreamForEveryAck(br)
	}
	for br.Ready() != nil || br.History() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	var got atomic.Int64
	arrived := make(chan struct{}, 1)
	var want atomic.Int64
	sub, err := br.Subscribe(context.Background(), "bench", func(m chat.Message) {
		if m.ID == "" {
			return // the warm-up's copy, which may come after its acknowledgement
		}
		if got.Add(1) == want.Load() {
			arrived <- struct{}{}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	// The stream is found in the background: wait until a message comes back numbered.
	for {
		if err := br.Publish(context.Background(), chat.Message{Room: "bench", Text: "warm up"}); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	got.Store(0)
	want.Store(int64(b.N))
	// IDs made before the clock starts: each message's own, as a replica's are.
	msgs := make([]chat.Message, b.N)
	for i := range msgs {
		msgs[i] = chat.Message{ID: "0a1b2c3d4e5f-" + strconv.FormatInt(int64(i), 36), Room: "bench",
			Text: "a chat message of a typical length, some sixty bytes long", Accepted: time.Now()}
	}
	var answered, failed atomic.Int64
	done := func(err error) {
		if err != nil {
			failed.Add(1)
		}
		answered.Add(1)
	}
	b.ResetTimer()
	before := cpuTime(b)
	for _, msg := range msgs {
		if err := publish(br, msg, done); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		b.Fatalf("%d of %d messages came back", got.Load(), b.N)
	}
	// Every publish answered too: an acknowledgement may come after the copy.
	for deadline := time.Now().Add(30 * time.Second); answered.Load() < int64(b.N); time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d publishes answered", answered.Load(), b.N)
		}
	}
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d publishes failed", n, b.N)
	}
	b.ReportMetric(float64((cpuTime(b)-before).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHistoryStoreByRooms is what storing one message costs the NATS server (in
// this process) as the number of rooms at their history bound grows, with the stream as
// a replica makes it, in memory (the embedded default) and on disk (the stacks'). Each
// message goes to the next room in turn, every room already holds its 100, so each
// store also drops that room's oldest. Run it with a fixed count: every round fills the
// rooms first.
//
// The stream then finds the room's next oldest message by scanning what was stored
// after the one dropped, from the stream's first message at the earliest. With every
// room alike, the dropped message is the stream's first and the scan is short. One
// quiet room, whose message is older than all the busy rooms' (as any stream of a
// running system has), keeps the stream's first message where it is: then each scan
// passes a message of every other room ("one-quiet-room": one in each shard). Shards
// (shard.go) divide the rooms among streams, and so the scan.
//
//	go test -run XXX -bench HistoryStoreByRooms -benchtime 20000x ./pkg/server/natsbroker
func BenchmarkHistoryStoreByRooms(b *testing.B) {
	for _, storage := range []string{"memory", "file"} {
		for _, rooms := range []int{100, 1000, 10000} {
			for _, quiet := range []bool{false, true} {
				for _, shards := range []int{1, natsbroker.EmbeddedShards} {
					name := fmt.Sprintf("%s/rooms=%d", storage, rooms)
					if quiet {
						name += "/one-quiet-room"
					}
					name += fmt.Sprintf("/shards=%d", shards)
					b.Run(name, func(b *testing.B) {
						benchmarkStoreByRooms(b, storage == "memory", rooms, quiet, shards)
					})
				}
			}
		}
	}
}

func benchmarkStoreByRooms(b *testing.B, memory bool, rooms int, quiet bool, shards int) {
	const keep = 100
	ns := natstest.Start(b, natstest.JetStream(b))
	br, err := natsbroker.Connect(natsbroker.Config{URL: ns.ClientURL(), Name: "bench",
		History: natsbroker.HistoryConfig{Stream: "BENCH", Size: keep, TTL: time.Hour, Memory: memory, Replicas: 1, MaxBytes: int64(shards) << 30, Shards: shards}},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Close)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	// The broker makes the streams in the background.
	for deadline := time.Now().Add(30 * time.Second); br.HistoryReady() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("the history streams were never made: %v", br.HistoryReady())
		}
	}
	streams := make([]jetstream.Stream, shards)
	for i := range streams {
		name := "BENCH"
		if i > 0 {
			name += "_" + strconv.Itoa(i)
		}
		if streams[i], err = js.Stream(context.Background(), name); err != nil {
			b.Fatal(err)
		}
	}
	subjects := make([]string, rooms)
	for i := range subjects {
		subjects[i] = natsbroker.StoreSubject(br, "r"+strconv.Itoa(i))
	}
	envelope := []byte(`{"id":"0a1b2c3d4e5f-1a","room":"r1","text":"a chat message of a typical length, some sixty bytes long","accepted":1765000000000000000}`)
	var sent uint64
	// stored waits until the streams have every message sent, and returns how many they
	// keep.
	stored := func() (msgs uint64) {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
			var last uint64
			msgs = 0
			for _, s := range streams {
				info, err := s.Info(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				last, msgs = last+info.State.LastSeq, msgs+info.State.Msgs
			}
			if last >= sent {
				return msgs
			}
			if time.Now().After(deadline) {
				b.Fatalf("the streams stopped short of %d messages", sent)
			}
		}
	}
	// Published without acknowledgements, as a member's replica does, but paced: a
	// publisher that outruns the stream gets its messages dropped.
	publish := func(n int) {
		for range n {
			if err := nc.Publish(subjects[sent%uint64(rooms)], envelope); err != nil {
				b.Fatal(err)
			}
			if sent++; sent%1000 == 0 {
				stored()
			}
		}
	}
	kept := uint64(rooms * keep)
	if quiet {
		// One quiet room in each shard: a running system has them in all.
		seen := make(map[string]bool)
		for i := 0; len(seen) < shards; i++ {
			room := "quiet" + strconv.Itoa(i)
			subject := natsbroker.StoreSubject(br, room)
			if shard := subject[:len(subject)-len(room)]; !seen[shard] {
				seen[shard] = true
				if err := nc.Publish(subject, envelope); err != nil {
					b.Fatal(err)
				}
				sent++
				kept++
			}
		}
	}
	// One more round after the fill: a room's first message beyond its bound drops a
	// message whose successor is known; from its second on, every store looks for it,
	// as in a stream that has been running.
	publish(rooms*keep + rooms)
	stored()
	b.ResetTimer()
	before := cpuTime(b)
	publish(b.N)
	if msgs := stored(); msgs != kept {
		b.Fatalf("%d messages kept, want %d: the rooms' bound is not what is measured", msgs, kept)
	}
	b.ReportMetric(float64((cpuTime(b)-before).Nanoseconds())/float64(b.N), "cpu-ns/op")
}
