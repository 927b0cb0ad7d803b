package natsbroker_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv/natstest"
)

// BenchmarkPublishWithHistory is one message through JetStream and back live, history
// on: waiting for each acknowledgement (Publish, what a connection's reader did before)
// against a window of them (PublishAsync, what it does now). It reports the CPU of the
// whole process, the in-process nats-server included, per message.
func BenchmarkPublishWithHistory(b *testing.B) {
	ns := natstest.Start(b, natstest.JetStream(b))
	br, err := natsbroker.Connect(natsbroker.Config{URL: ns.ClientURL(), Name: "bench",
		History: natsbroker.HistoryConfig{Size: 100, TTL: time.Hour, Memory: true, Replicas: 1, MaxBytes: 64 << 20}},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Close)
	for br.Ready() != nil || br.History() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	var got atomic.Int64
	arrived := make(chan struct{}, 1)
	var want atomic.Int64
	sub, err := br.Subscribe(context.Background(), "bench", func(chat.Message) {
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
	msg := chat.Message{ID: "0a1b2c3d4e5f-1k", Room: "bench", Text: "a chat message of a typical length, some sixty bytes long", Accepted: time.Now()}
	run := func(b *testing.B, publish func() error) {
		got.Store(0)
		want.Store(int64(b.N))
		before := cpuTime(b)
		defer func() {
			b.ReportMetric(float64((cpuTime(b)-before).Nanoseconds())/float64(b.N), "cpu-ns/op")
		}()
		for range b.N {
			if err := publish(); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-arrived:
		case <-time.After(30 * time.Second):
			b.Fatalf("%d of %d messages came back", got.Load(), b.N)
		}
	}
	b.Run("wait-each", func(b *testing.B) {
		run(b, func() error { return br.Publish(context.Background(), msg) })
	})
	b.Run("window", func(b *testing.B) {
		failed := func(err error) {
			if err != nil {
				b.Error(err)
			}
		}
		run(b, func() error {
			// A full window refuses; a sender would be told unavailable, the benchmark
			// waits for room instead.
			for {
				err := br.PublishAsync(msg, failed)
				if !errors.Is(err, chat.ErrUnavailable) {
					return err
				}
				time.Sleep(100 * time.Microsecond)
			}
		})
	})
}

// cpuTime is the CPU the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
