package hub_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/hub"
	"roomcast/pkg/server/servermetrics"
	"roomcast/pkg/server/wsframe"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/localbroker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSocket records writes; when gated, WriteFrames waits for the gate (a peer that does
// not read) until Close, which ends a stuck write as a write deadline would.
type fakeSocket struct {
	mu        sync.Mutex
	frames    []string // described
	raw       [][]byte
	writes    [][]string
	closed    chan struct{}
	closeCode uint16
	gate      chan struct{}
	inWrite   chan struct{} // receives once per WriteFrames call, if not nil
	once      sync.Once
}

func newSocket() *fakeSocket { return &fakeSocket{closed: make(chan struct{})} }

func (s *fakeSocket) WriteFrames(frames [][]byte) error {
	if s.inWrite != nil {
		s.inWrite <- struct{}{}
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-s.closed:
			return errors.New("write deadline exceeded")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var w []string
	for _, f := range frames {
		s.frames = append(s.frames, describe(f))
		s.raw = append(s.raw, f)
		w = append(w, describe(f))
	}
	s.writes = append(s.writes, w)
	return nil
}

func (s *fakeSocket) Close(code uint16, _ string) {
	s.once.Do(func() {
		s.mu.Lock()
		s.closeCode = code
		s.mu.Unlock()
		close(s.closed)
	})
}

// describe names a frame the hub wrote, for comparisons: "room:text" for a chat message,
// "ping" and "truncated" for those frames, and anything else (a frame a test queued
// itself) as it is.
func describe(frame []byte) string {
	switch {
	case bytes.Equal(frame, wsframe.Ping):
		return "ping"
	case bytes.Equal(frame, wsframe.Truncated):
		return "truncated"
	}
	if payload, ok := textPayload(frame); ok {
		var f chat.ServerFrame
		if json.Unmarshal(payload, &f) == nil && f.Type == "message" {
			return f.Room + ":" + f.Message
		}
	}
	return string(frame)
}

// textPayload returns the payload of an unmasked, final text frame.
func textPayload(frame []byte) ([]byte, bool) {
	if len(frame) < 2 || frame[0] != 0x81 {
		return nil, false
	}
	n, rest := int(frame[1]), frame[2:]
	switch {
	case n == 126 && len(rest) >= 2:
		n, rest = int(binary.BigEndian.Uint16(rest)), rest[2:]
	case n == 127 && len(rest) >= 8:
		n, rest = int(binary.BigEndian.Uint64(rest)), rest[8:]
	}
	if len(rest) != n {
		return nil, false
	}
	return rest, true
}

func (s *fakeSocket) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.frames)
}

func (s *fakeSocket) waitClosed(t *testing.T) uint16 {
	t.Helper()
	select {
	case <-s.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("socket was not closed")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeCode
}

func (s *fakeSocket) waitFrames(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if got := s.got(); len(got) >= n {
			return got
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("socket got %d frames, want %d", len(s.got()), n)
	return nil
}

func (s *fakeSocket) rawFrames() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.raw)
}

type fixture struct {
	hub    *hub.Hub
	broker *localbroker.Broker
	reg    *prometheus.Registry
}

func newFixture(t *testing.T, mod func(*hub.Config)) *fixture {
	t.Helper()
	f := &fixture{broker: localbroker.New(), reg: prometheus.NewRegistry()}
	cfg := hub.Config{
		SendQueueFrames: 64,
		SendQueueBytes:  1 << 20,
	}
	if mod != nil {
		mod(&cfg)
	}
	f.hub = hub.New(cfg, f.broker, servermetrics.NewErrors(f.reg), slog.New(slog.NewTextHandler(io.Discard, nil)), f.reg)
	t.Cleanup(f.hub.Close) // registered first, so it runs after the members have left
	return f
}

func (f *fixture) join(t *testing.T, room string) (*hub.Member, *fakeSocket) {
	t.Helper()
	m, err := f.hub.Join(context.Background(), room)
	if err != nil {
		t.Fatalf("joining %s: %v", room, err)
	}
	s := newSocket()
	m.Attach(s)
	t.Cleanup(func() { s.Close(wsframe.CloseNormal, ""); f.hub.Leave(m) })
	return m, s
}

// joinHeld joins a resuming member (live messages held until Release) with a fake socket.
func (f *fixture) joinHeld(t *testing.T, room string) (*hub.Member, *fakeSocket) {
	t.Helper()
	m, err := f.hub.JoinHeld(context.Background(), room)
	if err != nil {
		t.Fatalf("joining %s held: %v", room, err)
	}
	s := newSocket()
	m.Attach(s)
	t.Cleanup(func() { s.Close(wsframe.CloseNormal, ""); f.hub.Leave(m) })
	return m, s
}

// joinGated joins a member whose socket's writes wait for s.gate, after before (if
// set) has been applied to the member.
func (f *fixture) joinGated(t *testing.T, room string, before func(*hub.Member)) (*hub.Member, *fakeSocket) {
	t.Helper()
	s := newSocket()
	s.gate = make(chan struct{})
	s.inWrite = make(chan struct{}, 10)
	m, err := f.hub.Join(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(m)
	}
	m.Attach(s)
	t.Cleanup(func() { s.Close(wsframe.CloseNormal, ""); f.hub.Leave(m) })
	return m, s
}

func (f *fixture) publish(t *testing.T, room, text string) {
	t.Helper()
	if err := f.broker.Publish(context.Background(), chat.Message{Room: room, Text: text, Accepted: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return testenv.Metric(t, f.reg, name, labels...)
}

// waitMetric waits up to 10 s for the metric to reach at least want and returns its value
// then, so that a test can still see a value over want.
func (f *fixture) waitMetric(t *testing.T, name string, want float64) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v := f.metric(t, name)
		if v >= want || time.Now().After(deadline) {
			return v
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMessageIsEncodedOnceAndReachesEveryMemberOnce(t *testing.T) {
	f := newFixture(t, nil)
	var sockets []*fakeSocket
	for range 5 {
		_, s := f.join(t, "lobby")
		sockets = append(sockets, s)
	}
	_, other := f.join(t, "other")
	f.publish(t, "lobby", "hi")
	for i, s := range sockets {
		if got := s.waitFrames(t, 1); !slices.Equal(got, []string{"lobby:hi"}) {
			t.Errorf("member %d got %q", i, got)
		}
	}
	// Encoded once: every member was given the very same bytes.
	first := sockets[0].rawFrames()[0]
	for i, s := range sockets[1:] {
		if f := s.rawFrames()[0]; &f[0] != &first[0] {
			t.Errorf("member %d got a frame of its own: the message was encoded more than once", i+1)
		}
	}
	if got := other.got(); len(got) != 0 {
		t.Errorf("member of another room got %q", got)
	}
	// The writer counts its batch after WriteFrames returns, so wait for it (bounded).
	if v := f.waitMetric(t, "roomcast_messages_delivered_total", 5); v != 5 {
		t.Errorf("roomcast_messages_delivered_total = %v, want 5", v)
	}
}

func TestRoomIsSubscribedOnlyWhileItHasMembers(t *testing.T) {
	f := newFixture(t, nil)
	if n := f.broker.Subscriptions("lobby"); n != 0 {
		t.Fatalf("subscribed before any member: %d", n)
	}
	m1, _ := f.join(t, "lobby")
	m2, _ := f.join(t, "lobby")
	if n := f.broker.Subscriptions("lobby"); n != 1 {
		t.Fatalf("two members: %d subscriptions, want 1", n)
	}
	if v := f.metric(t, "roomcast_rooms_active"); v != 1 {
		t.Errorf("roomcast_rooms_active = %v, want 1", v)
	}
	f.hub.Leave(m1)
	if n := f.broker.Subscriptions("lobby"); n != 1 {
		t.Fatalf("one member left: %d subscriptions, want 1", n)
	}
	f.hub.Leave(m2)
	if n := f.broker.Subscriptions("lobby"); n != 0 {
		t.Fatalf("no member left: %d subscriptions, want 0", n)
	}
	if v := f.metric(t, "roomcast_rooms_active"); v != 0 {
		t.Errorf("roomcast_rooms_active = %v, want 0", v)
	}
	f.join(t, "lobby")
	if n := f.broker.Subscriptions("lobby"); n != 1 {
		t.Fatalf("member rejoined: %d subscriptions, want 1", n)
	}
}

func TestJoinFailsCleanlyWhenTheBrokerCannotSubscribe(t *testing.T) {
	f := newFixture(t, nil)
	f.broker.FailSubscriptions(fmt.Errorf("nats down: %w", chat.ErrUnavailable))
	if _, err := f.hub.Join(context.Background(), "lobby"); !errors.Is(err, chat.ErrUnavailable) {
		t.Fatalf("Join: got %v, want ErrUnavailable", err)
	}
	if n := f.hub.Len(); n != 0 {
		t.Fatalf("a failed join left %d members behind", n)
	}
	f.broker.FailSubscriptions(nil)
	f.join(t, "lobby")
	if n := f.broker.Subscriptions("lobby"); n != 1 {
		t.Fatalf("after recovery: %d subscriptions, want 1", n)
	}
}

func TestSlowMemberIsClosedWith1013AndNobodyElseWaits(t *testing.T) {
	f := newFixture(t, func(c *hub.Config) { c.SendQueueFrames = 4 })
	slow := newSocket()
	slow.gate = make(chan struct{}) // never opened: the peer does not read
	m, err := f.hub.Join(context.Background(), "lobby")
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(slow)
	t.Cleanup(func() { f.hub.Leave(m) })
	var fast []*fakeSocket
	for range 3 {
		_, s := f.join(t, "lobby")
		fast = append(fast, s)
	}
	// The fast members keep up (each message is written before the next is sent);
	// the slow one never reads, so its queue of 4 overflows.
	const n = 20
	for i := range n {
		f.publish(t, "lobby", fmt.Sprint(i))
		for _, s := range fast {
			s.waitFrames(t, i+1)
		}
	}
	if code := slow.waitClosed(t); code != wsframe.CloseTryAgainLater {
		t.Fatalf("slow member closed with %d, want 1013", code)
	}
	for i, s := range fast {
		if got := s.waitFrames(t, n); len(got) != n {
			t.Errorf("fast member %d got %d of %d", i, len(got), n)
		}
	}
	if v := f.metric(t, "roomcast_errors_total", "kind", "slow_consumer"); v != 1 {
		t.Errorf("slow_consumer errors = %v, want 1", v)
	}
}

func TestQueueIsAlsoBoundedInBytes(t *testing.T) {
	f := newFixture(t, func(c *hub.Config) { c.SendQueueFrames = 1000; c.SendQueueBytes = 100 })
	slow := newSocket()
	slow.gate = make(chan struct{})
	m, err := f.hub.Join(context.Background(), "lobby")
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(slow)
	t.Cleanup(func() { f.hub.Leave(m) })
	for range 10 {
		f.publish(t, "lobby", strings.Repeat("x", 40))
	}
	if code := slow.waitClosed(t); code != wsframe.CloseTryAgainLater {
		t.Fatalf("closed with %d, want 1013", code)
	}
}

func TestFramesQueuedDuringAWriteGoOutInOneBatch(t *testing.T) {
	f := newFixture(t, nil)
	_, s := f.joinGated(t, "lobby", nil)
	f.publish(t, "lobby", "first")
	<-s.inWrite // the writer is now stuck on "first"
	for i := range 5 {
		f.publish(t, "lobby", fmt.Sprint(i))
	}
	close(s.gate)
	s.waitFrames(t, 6)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.writes) != 2 || len(s.writes[1]) != 5 {
		t.Fatalf("writes = %q, want [first] then the 5 queued frames in one call", s.writes)
	}
}

func TestCloseWritesWhatIsQueuedFirst(t *testing.T) {
	f := newFixture(t, nil)
	s := newSocket()
	s.gate = make(chan struct{})
	s.inWrite = make(chan struct{}, 10)
	m, err := f.hub.Join(context.Background(), "lobby")
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(s)
	t.Cleanup(func() { f.hub.Leave(m) })
	f.publish(t, "lobby", "a")
	<-s.inWrite
	f.publish(t, "lobby", "b")
	m.Close(wsframe.CloseServiceRestart, "server restarting")
	f.publish(t, "lobby", "after close")
	close(s.gate)
	if code := s.waitClosed(t); code != wsframe.CloseServiceRestart {
		t.Fatalf("closed with %d, want 1012", code)
	}
	if got := s.got(); !slices.Equal(got, []string{"lobby:a", "lobby:b"}) {
		t.Fatalf("frames before the close: %q, want a and b only", got)
	}
}

func TestSendIsNotCountedAsDelivery(t *testing.T) {
	f := newFixture(t, nil)
	m, s := f.join(t, "lobby")
	m.Send([]byte("error frame"))
	s.waitFrames(t, 1)
	if v := f.metric(t, "roomcast_messages_delivered_total"); v != 0 {
		t.Errorf("an error frame counted as a delivered message: %v", v)
	}
}

func TestJoinIsRefusedOnceDraining(t *testing.T) {
	f := newFixture(t, nil)
	f.hub.StopAccepting()
	if !f.hub.Draining() {
		t.Fatal("Draining() = false after StopAccepting")
	}
	if _, err := f.hub.Join(context.Background(), "lobby"); !errors.Is(err, hub.ErrDraining) {
		t.Fatalf("Join while draining: %v, want ErrDraining", err)
	}
}

func TestDrainBatchesSpreadEvenly(t *testing.T) {
	tests := []struct {
		n       int
		window  time.Duration
		batches int
		gap     time.Duration
	}{
		{n: 1, window: 20 * time.Second, batches: 1, gap: 20 * time.Second},
		{n: 4, window: 20 * time.Second, batches: 4, gap: 5 * time.Second},
		{n: 10000, window: 20 * time.Second, batches: 2000, gap: 10 * time.Millisecond},
		{n: 7, window: 0, batches: 1, gap: 0},
		{n: 0, window: time.Second, batches: 0, gap: 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d_over_%v", tt.n, tt.window), func(t *testing.T) {
			sizes, gap := hub.DrainBatches(tt.n, tt.window)
			if len(sizes) != tt.batches || gap != tt.gap {
				t.Fatalf("got %d batches %v apart, want %d batches %v apart", len(sizes), gap, tt.batches, tt.gap)
			}
			total := 0
			for _, s := range sizes {
				total += s
				if s < tt.n/max(tt.batches, 1) || s > tt.n/max(tt.batches, 1)+1 {
					t.Fatalf("uneven batch of %d in %v", s, sizes)
				}
			}
			if total != tt.n {
				t.Fatalf("batches hold %d connections, want %d", total, tt.n)
			}
		})
	}
}

func TestCloseAllClosesEveryoneWith1012SpreadOverTheWindow(t *testing.T) {
	var mu sync.Mutex
	var sockets []*fakeSocket
	closedAtSleep := []int{}
	var gaps []time.Duration
	f := newFixture(t, func(c *hub.Config) {
		c.Sleep = func(_ context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			gaps = append(gaps, d)
			n := 0
			for _, s := range sockets {
				select {
				case <-s.closed:
					n++
				default:
				}
			}
			closedAtSleep = append(closedAtSleep, n)
			return nil
		}
	})
	members := map[*hub.Member]*fakeSocket{}
	for range 4 {
		m, err := f.hub.Join(context.Background(), "lobby")
		if err != nil {
			t.Fatal(err)
		}
		s := newSocket()
		m.Attach(s)
		members[m] = s
		sockets = append(sockets, s)
	}
	// The transport calls Leave when a connection ends; do it as it would.
	for m, s := range members {
		go func() { <-s.closed; f.hub.Leave(m) }()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.hub.CloseAll(ctx, wsframe.CloseServiceRestart, "server restarting", 20*time.Second); err != nil {
		t.Fatalf("CloseAll: %v", err)
	}
	for i, s := range sockets {
		if code := s.waitClosed(t); code != wsframe.CloseServiceRestart {
			t.Errorf("member %d closed with %d, want 1012", i, code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(gaps, []time.Duration{5 * time.Second, 5 * time.Second, 5 * time.Second}) {
		t.Errorf("waits between closes: %v, want three of 5s", gaps)
	}
	// Closing is asynchronous (after the queue is flushed), so at the k-th wait at
	// most k members may be closed; all of them are closed only after the last wait.
	for i, n := range closedAtSleep {
		if n > i+1 {
			t.Errorf("at wait %d, %d members already closed: not spread", i, n)
		}
	}
	if f.hub.Len() != 0 {
		t.Errorf("%d members left after CloseAll", f.hub.Len())
	}
}

func TestCloseAllStopsWhenItsContextEnds(t *testing.T) {
	f := newFixture(t, func(c *hub.Config) {
		c.Sleep = func(ctx context.Context, _ time.Duration) error { <-ctx.Done(); return ctx.Err() }
	})
	f.join(t, "lobby")
	f.join(t, "lobby")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.hub.CloseAll(ctx, wsframe.CloseServiceRestart, "", time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("CloseAll with a cancelled context: %v", err)
	}
}

func TestNoDeliveryAfterLeave(t *testing.T) {
	f := newFixture(t, nil)
	m, s := f.join(t, "lobby")
	_, keep := f.join(t, "lobby")
	f.hub.Leave(m)
	f.publish(t, "lobby", "after")
	keep.waitFrames(t, 1)
	if got := s.got(); len(got) != 0 {
		t.Fatalf("a member that left got %q", got)
	}
}

func TestOnLeaveRunsOnceWhenTheMemberLeavesOrAtOnceIfItHas(t *testing.T) {
	f := newFixture(t, nil)
	m, _ := f.join(t, "lobby")
	var calls atomic.Int32
	m.OnLeave(func() { calls.Add(1) })
	if n := calls.Load(); n != 0 {
		t.Fatalf("called %d times before the member left", n)
	}
	f.hub.Leave(m)
	f.hub.Leave(m) // idempotent, and so is the call
	if n := calls.Load(); n != 1 {
		t.Fatalf("called %d times after the member left, want 1", n)
	}
	m.OnLeave(func() { calls.Add(1) })
	if n := calls.Load(); n != 2 {
		t.Fatalf("a func given after the member left was called %d times, want at once", n-1)
	}
}

func TestPingsReachEveryAttachedMember(t *testing.T) {
	f := newFixture(t, func(c *hub.Config) {
		c.PingInterval = 10 * time.Millisecond
	})
	_, s1 := f.join(t, "a")
	_, s2 := f.join(t, "b")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.hub.Keepalive(ctx) }()
	defer func() { cancel(); <-done }()
	for _, s := range []*fakeSocket{s1, s2} {
		if got := s.waitFrames(t, 2); got[0] != "ping" {
			t.Fatalf("got %q, want pings", got)
		}
	}
	if v := f.metric(t, "roomcast_messages_delivered_total"); v != 0 {
		t.Errorf("pings counted as delivered messages: %v", v)
	}
}

func TestConnectionMetricsAndLint(t *testing.T) {
	f := newFixture(t, nil)
	m, _ := f.join(t, "lobby")
	f.join(t, "lobby")
	if v := f.metric(t, "roomcast_connections_active"); v != 2 {
		t.Errorf("roomcast_connections_active = %v, want 2", v)
	}
	f.hub.Leave(m)
	f.hub.Leave(m) // idempotent
	if v := f.metric(t, "roomcast_connections_active"); v != 1 {
		t.Errorf("after a leave: roomcast_connections_active = %v, want 1", v)
	}
	if v := f.metric(t, "roomcast_connections_total"); v != 2 {
		t.Errorf("roomcast_connections_total = %v, want 2", v)
	}
	for _, kind := range chat.ErrorKinds {
		if v := f.metric(t, "roomcast_errors_total", "kind", string(kind)); v != 0 {
			t.Errorf("errors{kind=%s} = %v at start", kind, v)
		}
	}
	problems, err := testutil.GatherAndLint(f.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
}

func TestDeliveryLatencyIsObservedOncePerWrittenMessage(t *testing.T) {
	f := newFixture(t, nil)
	var sockets []*fakeSocket
	for range 3 {
		m, s := f.join(t, "lobby")
		m.Send([]byte("an error frame is not a delivery"))
		sockets = append(sockets, s)
	}
	f.publish(t, "lobby", "timed")
	for _, s := range sockets {
		s.waitFrames(t, 2)
	}
	var count uint64
	eventually := time.Now().Add(5 * time.Second)
	for time.Now().Before(eventually) {
		count, _ = testenv.Histogram(t, f.reg, "roomcast_delivery_latency_seconds")
		if count == 3 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("delivery latency observed %d times for 3 written messages", count)
}

func TestAHeldMemberGetsItsReplayThenTheLiveMessagesItDidNotHave(t *testing.T) {
	f := newFixture(t, nil)
	m, s := f.joinHeld(t, "lobby")
	_, other := f.join(t, "lobby")
	// Live messages 2..4 arrive while the history (1..3) is replayed; 0 has no seq.
	for _, seq := range []uint64{2, 3, 0, 4} {
		if err := f.broker.Publish(context.Background(), chat.Message{Room: "lobby", Text: fmt.Sprint("live", seq), Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	other.waitFrames(t, 4)
	if got := s.got(); len(got) != 0 {
		t.Fatalf("a held member got %q before its replay", got)
	}
	for _, seq := range []uint64{1, 2, 3} {
		if err := m.SendMessage(context.Background(), []byte(fmt.Sprint("replay", seq)), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Release(context.Background(), 3, ""); err != nil {
		t.Fatal(err)
	}
	f.publish(t, "lobby", "after")
	want := []string{"replay1", "replay2", "replay3", "lobby:live0", "lobby:live4", "lobby:after"}
	if got := s.waitFrames(t, len(want)); !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestALateLiveCopyOfAReplayedMessageIsDroppedAfterTheHold(t *testing.T) {
	// The replay read seq 3 from the stream before the stream's live copy of it arrived:
	// the hold ends with nothing held, then the copy comes live.
	f := newFixture(t, nil)
	m, s := f.joinHeld(t, "lobby")
	for _, seq := range []uint64{2, 3} {
		if err := m.SendMessage(context.Background(), []byte(fmt.Sprint("replay", seq)), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Release(context.Background(), 3, ""); err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{3, 0, 4, 5} {
		if err := f.broker.Publish(context.Background(), chat.Message{Room: "lobby", Text: fmt.Sprint("live", seq), Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"replay2", "replay3", "lobby:live0", "lobby:live4", "lobby:live5"}
	if got := s.waitFrames(t, len(want)); !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestSendMessageWaitsForRoomInsteadOfOverflowing(t *testing.T) {
	f := newFixture(t, func(c *hub.Config) { c.SendQueueFrames = 8 })
	s := newSocket()
	s.gate = make(chan struct{})
	m, err := f.hub.Join(context.Background(), "lobby")
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(s)
	t.Cleanup(func() { s.Close(wsframe.CloseNormal, ""); f.hub.Leave(m) })
	done := make(chan error, 1)
	go func() {
		for i := range 50 {
			if err := m.SendMessage(context.Background(), []byte(fmt.Sprint(i)), time.Time{}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		t.Fatalf("50 paced sends into a queue of 8 with a stuck socket returned early: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(s.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := s.waitFrames(t, 50); len(got) != 50 {
		t.Fatalf("got %d frames", len(got))
	}
	if v := f.metric(t, "roomcast_errors_total", "kind", "slow_consumer"); v != 0 {
		t.Fatalf("a paced replay counted as a slow consumer")
	}
}

// fakeHistory serves ReadSince from a fixed list of stored messages.
type fakeHistory struct {
	mu     sync.Mutex
	stored []chat.Message
	calls  int
}

func (f *fakeHistory) ReadSince(_ context.Context, room string, since uint64, _ string) (chat.Stored, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	res := chat.Stored{Last: since}
	for _, m := range f.stored {
		if m.Room == room && m.Seq > since {
			res.Messages = append(res.Messages, m)
			res.Last = m.Seq
		}
	}
	return res, nil
}

func TestAGapInTheLiveStreamIsFilledFromHistory(t *testing.T) {
	hist := &fakeHistory{}
	f := newFixture(t, func(c *hub.Config) { c.History = hist })
	_, s := f.join(t, "lobby")
	pub := func(seq, prev uint64) {
		if err := f.broker.Publish(context.Background(), chat.Message{Room: "lobby", Text: fmt.Sprint(seq), Seq: seq, PrevSeq: prev, Epoch: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	pub(1, 0)
	s.waitFrames(t, 1)
	// Seq 2 was stored but never came live; 3 says its predecessor is 2.
	hist.stored = []chat.Message{{Room: "lobby", Text: "2", Seq: 2, PrevSeq: 1, Epoch: "e"}, {Room: "lobby", Text: "3", Seq: 3, PrevSeq: 2, Epoch: "e"}}
	pub(3, 2)
	pub(4, 3)
	want := []string{"lobby:1", "lobby:2", "lobby:3", "lobby:4"}
	if got := s.waitFrames(t, 4); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if v := f.metric(t, "roomcast_room_catchups_total", "trigger", "gap"); v != 1 {
		t.Errorf("gap catch-ups = %v, want 1", v)
	}
	if got := collectQuiet(s, 4); len(got) != 4 {
		t.Fatalf("duplicates after the catch-up: %q", got)
	}
}

// collectQuiet waits a moment and returns everything the socket has.
func collectQuiet(s *fakeSocket, _ int) []string {
	time.Sleep(50 * time.Millisecond)
	return s.got()
}
