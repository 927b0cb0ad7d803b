package hub_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/hub"
	"roomcast/pkg/server/servermetrics"
	"roomcast/pkg/testenv/localbroker"
)

type countingSocket struct {
	mu     sync.Mutex
	frames int
	writes int
}

func (s *countingSocket) WriteFrames(frames [][]byte) error {
	s.mu.Lock()
	s.frames += len(frames)
	s.writes++
	s.mu.Unlock()
	return nil
}

func (s *countingSocket) Close(uint16, string) {}

// BenchmarkFanout is one message to a room of 1, 20 or 200 local members: the hub's
// share of the cost of the deliveries (encode once, a queue append per member, writer
// wake-ups).
func BenchmarkFanout(b *testing.B) {
	for _, members := range []int{1, 20, 200} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			broker := localbroker.New()
			reg := prometheus.NewRegistry()
			h := hub.New(hub.Config{SendQueueFrames: 1 << 20, SendQueueBytes: 1 << 30},
				broker, servermetrics.NewErrors(reg), slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
			var sockets []*countingSocket
			for range members {
				m, err := h.Join(context.Background(), "bench")
				if err != nil {
					b.Fatal(err)
				}
				s := &countingSocket{}
				m.Attach(s)
				sockets = append(sockets, s)
				defer h.Leave(m)
			}
			msg := chat.Message{Room: "bench", Text: "hello", Accepted: time.Now()}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				_ = broker.Publish(context.Background(), msg)
			}
			b.StopTimer()
			writes, frames := 0, 0
			for _, s := range sockets {
				s.mu.Lock()
				writes += s.writes
				frames += s.frames
				s.mu.Unlock()
			}
			if writes > 0 {
				b.ReportMetric(float64(frames)/float64(writes), "frames/write")
			}
		})
	}
}
