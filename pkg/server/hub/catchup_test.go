package hub_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/hub"
)

// These tests run in a synctest bubble: the catch-up's backoff and CatchUpTimeout pass in
// fake time, at once, and synctest.Wait says when every goroutine is waiting.

// flakyHistory is a store that cannot be read for its first failures replays (every one
// when failures < 0), then answers the next stale ones like a store replica that has not
// applied the messages the room missed yet (nothing newer than since), then answers from
// stored.
type flakyHistory struct {
	mu       sync.Mutex
	stored   []chat.Message
	failures int
	stale    int
	hang     bool // a failing replay goes unanswered for a while instead of failing at once
	calls    int
}

func (h *flakyHistory) ReadSince(ctx context.Context, room string, since uint64, _ string) (chat.Stored, error) {
	h.mu.Lock()
	h.calls++
	fail := h.failures < 0 || h.calls <= h.failures
	stale := !fail && h.calls <= h.failures+h.stale
	stored := slices.Clone(h.stored)
	h.mu.Unlock()
	if fail && h.hang {
		// As the store does with a request sent to a node that died: it waits out its
		// own bound per request (not the caller's context), then fails.
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		<-rctx.Done()
		return chat.Stored{}, fmt.Errorf("replaying room %q: %w: no answer (%w): %w", room, chat.ErrHistoryUnavailable, chat.ErrHistoryTemporary, rctx.Err())
	}
	if fail {
		return chat.Stored{}, fmt.Errorf("replaying room %q: %w: no stream leader", room, chat.ErrHistoryUnavailable)
	}
	if stale {
		return chat.Stored{Last: since, Epoch: "e"}, nil
	}
	res := chat.Stored{Last: since, Epoch: "e"}
	for _, m := range stored {
		if m.Room == room && m.Seq > since {
			res.Messages = append(res.Messages, m)
			res.Last = m.Seq
		}
	}
	return res, nil
}

func (h *flakyHistory) replays() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

// numbered is message seq of the stream (epoch "e") of lobby, following prev.
func numbered(seq, prev uint64) chat.Message {
	return chat.Message{Room: "lobby", Text: fmt.Sprint(seq), Seq: seq, PrevSeq: prev, Epoch: "e"}
}

func (f *fixture) publishNumbered(t *testing.T, seq, prev uint64) {
	t.Helper()
	if err := f.broker.Publish(context.Background(), numbered(seq, prev)); err != nil {
		t.Fatal(err)
	}
}

func withHistory(h chat.History, timeout time.Duration) func(*hub.Config) {
	return func(c *hub.Config) {
		c.History, c.CatchUpTimeout = h, timeout
	}
}

// outage is what a member has before the catch-up: seq 1 delivered, then 2 and 3
// stored while the room saw nothing of them.
func outage(t *testing.T, hist *flakyHistory, timeout time.Duration) (*fixture, *fakeSocket) {
	t.Helper()
	f := newFixture(t, withHistory(hist, timeout))
	_, s := f.join(t, "lobby")
	f.publishNumbered(t, 1, 0)
	synctest.Wait()
	if got := s.got(); !slices.Equal(got, []string{"lobby:1"}) {
		t.Fatalf("before the outage: %q", got)
	}
	hist.mu.Lock()
	hist.stored = []chat.Message{numbered(1, 0), numbered(2, 1), numbered(3, 2)}
	hist.mu.Unlock()
	return f, s
}

func TestAFailedCatchUpIsRetriedAndDeliversTheGapThenWhatWaitedOnce(t *testing.T) {
	tests := []struct {
		name            string
		trigger         string
		failures, stale int
		hang            bool
		retries         float64
	}{
		{name: "gap/store unavailable 4 times", trigger: "gap", failures: 4, retries: 4},
		{name: "gap/store replica behind twice", trigger: "gap", stale: 2, retries: 2},
		{name: "gap/replays that hang", trigger: "gap", failures: 2, hang: true, retries: 2},
		{name: "reconnect/store unavailable 4 times", trigger: "reconnect", failures: 4, retries: 4},
		{name: "reconnect/store replica behind once", trigger: "reconnect", failures: 1, stale: 1, retries: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hist := &flakyHistory{failures: tt.failures, stale: tt.stale, hang: tt.hang}
				f, s := outage(t, hist, time.Minute)
				caughtUp := make(chan struct{})
				if tt.trigger == "reconnect" {
					go func() { defer close(caughtUp); f.hub.CatchUp(context.Background()) }()
					synctest.Wait()
					f.publishNumbered(t, 3, 2) // the live path is back; 2 came before it
				} else {
					close(caughtUp)
					f.publishNumbered(t, 3, 2) // live again, after 2 which never came live
				}
				f.publishNumbered(t, 4, 3)
				synctest.Wait()
				if got := s.got(); !slices.Equal(got, []string{"lobby:1"}) {
					t.Fatalf("while history cannot be read, the live messages must wait: got %q", got)
				}
				time.Sleep(time.Minute - time.Second) // fake time: the retries happen meanwhile
				<-caughtUp
				f.publishNumbered(t, 5, 4)
				synctest.Wait()
				want := []string{"lobby:1", "lobby:2", "lobby:3", "lobby:4", "lobby:5"}
				if got := s.got(); !slices.Equal(got, want) {
					t.Fatalf("got %q\nwant %q (the gap, then what waited, each once)", got, want)
				}
				if v := f.metric(t, "roomcast_room_catchup_retries_total", "trigger", tt.trigger); v != tt.retries {
					t.Errorf("retries{trigger=%s} = %v, want %v", tt.trigger, v, tt.retries)
				}
				if v := f.metric(t, "roomcast_room_catchups_total", "trigger", tt.trigger); v != 1 {
					t.Errorf("catch-ups{trigger=%s} = %v, want 1", tt.trigger, v)
				}
				if v := f.metric(t, "roomcast_errors_total", "kind", "history"); v != 0 {
					t.Errorf("history errors = %v for a catch-up that succeeded", v)
				}
			})
		})
	}
}

func TestACatchUpThatNeverSucceedsGivesUpAfterCatchUpTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 20 * time.Second
		hist := &flakyHistory{failures: -1}
		f, s := outage(t, hist, timeout)
		start := time.Now()
		f.publishNumbered(t, 3, 2)
		f.publishNumbered(t, 4, 3)
		time.Sleep(timeout - time.Millisecond)
		synctest.Wait()
		if got := s.got(); !slices.Equal(got, []string{"lobby:1"}) {
			t.Fatalf("gave up before CatchUpTimeout: got %q", got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		want := []string{"lobby:1", "truncated", "lobby:3", "lobby:4"}
		if got := s.got(); !slices.Equal(got, want) {
			t.Fatalf("after %v: got %q\nwant %q (truncated, then what waited)", time.Since(start), got, want)
		}
		if v := f.metric(t, "roomcast_errors_total", "kind", "history"); v != 1 {
			t.Errorf("history errors = %v, want 1", v)
		}
		// It kept retrying, with a backoff (between 10 and 17 attempts in 20 s), not a spin.
		if n := hist.replays(); n < 5 || n > 40 {
			t.Errorf("%d replays in %v", n, timeout)
		}
		if v := f.metric(t, "roomcast_room_catchup_retries_total", "trigger", "gap"); v != float64(hist.replays()-1) {
			t.Errorf("retries = %v for %d replays", v, hist.replays())
		}
		// The room is live again, and the next gap starts a new catch-up.
		f.publishNumbered(t, 5, 4)
		synctest.Wait()
		if got := s.got(); len(got) != len(want)+1 || got[len(want)] != "lobby:5" {
			t.Fatalf("after the give-up: got %q", got)
		}
		f.publishNumbered(t, 7, 6)
		synctest.Wait()
		if v := f.metric(t, "roomcast_room_catchups_total", "trigger", "gap"); v != 2 {
			t.Errorf("gap catch-ups = %v, want 2", v)
		}
	})
}

func TestACatchUpGivesUpWhenItsBacklogIsFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const backlog = 10000 // the hub's maxBacklog
		hist := &flakyHistory{failures: -1}
		f := newFixture(t, func(c *hub.Config) {
			withHistory(hist, time.Hour)(c)
			c.SendQueueFrames, c.SendQueueBytes = 2*backlog, 1<<30
		})
		_, s := f.join(t, "lobby")
		f.publishNumbered(t, 1, 0)
		for seq := uint64(3); seq < 3+backlog; seq++ {
			f.publishNumbered(t, seq, seq-1) // 3 follows 2, which never came live
		}
		synctest.Wait()
		if got := s.got(); len(got) != 1 {
			t.Fatalf("%d frames before the backlog is full, want 1", len(got))
		}
		f.publishNumbered(t, 3+backlog, 2+backlog)
		synctest.Wait()
		got := s.got()
		if len(got) != 2+backlog+1 || got[1] != "truncated" {
			t.Fatalf("got %d frames starting %q, want 1, truncated, then the %d+1 live messages", len(got), got[:min(3, len(got))], backlog)
		}
		for i, frame := range got[2:] {
			if want := fmt.Sprintf("lobby:%d", 3+i); frame != want {
				t.Fatalf("frame %d is %q, want %q: out of order", 2+i, frame, want)
			}
		}
		if v := f.metric(t, "roomcast_errors_total", "kind", "history"); v != 1 {
			t.Errorf("history errors = %v, want 1", v)
		}
	})
}

func TestACatchUpStopsRetrying(t *testing.T) {
	tests := []struct {
		name   string
		hang   bool
		stop   func(*fixture, *hub.Member, context.CancelFunc)
		frames []string // after the stop
		errors float64
	}{
		{
			name:   "when the hub closes",
			stop:   func(f *fixture, _ *hub.Member, _ context.CancelFunc) { f.hub.Close() },
			frames: []string{"lobby:1", "truncated", "lobby:3"},
		},
		{
			name:   "when the hub closes during a replay that hangs",
			hang:   true,
			stop:   func(f *fixture, _ *hub.Member, _ context.CancelFunc) { f.hub.Close() },
			frames: []string{"lobby:1", "truncated", "lobby:3"},
		},
		{
			name:   "when the last member leaves",
			stop:   func(f *fixture, m *hub.Member, _ context.CancelFunc) { f.hub.Leave(m) },
			frames: []string{"lobby:1"},
		},
		{
			name:   "when the context of CatchUp ends",
			stop:   func(_ *fixture, _ *hub.Member, cancel context.CancelFunc) { cancel() },
			frames: []string{"lobby:1", "truncated", "lobby:3"},
			errors: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hist := &flakyHistory{failures: -1, hang: tt.hang}
				f := newFixture(t, withHistory(hist, time.Hour))
				m, s := f.join(t, "lobby")
				f.publishNumbered(t, 1, 0)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				caughtUp := make(chan struct{})
				go func() { defer close(caughtUp); f.hub.CatchUp(ctx) }()
				synctest.Wait() // the catch-up has begun, as after a reconnect
				f.publishNumbered(t, 3, 2)
				time.Sleep(10 * time.Second)
				synctest.Wait()
				replays := hist.replays()
				if replays < 2 {
					t.Fatalf("%d replays in 10s, want retries", replays)
				}
				tt.stop(f, m, cancel)
				<-caughtUp // CatchUp returns once the room's catch-up has ended
				synctest.Wait()
				if got := s.got(); !slices.Equal(got, tt.frames) {
					t.Fatalf("got %q, want %q", got, tt.frames)
				}
				time.Sleep(time.Hour)
				synctest.Wait()
				if n := hist.replays(); n != replays {
					t.Fatalf("%d more replays after the stop", n-replays)
				}
				if v := f.metric(t, "roomcast_errors_total", "kind", "history"); v != tt.errors {
					t.Errorf("history errors = %v, want %v", v, tt.errors)
				}
			})
		})
	}
}

func TestNoCatchUpStartsOnceTheHubIsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hist := &flakyHistory{failures: -1}
		f, s := outage(t, hist, time.Minute)
		f.hub.Close()
		f.publishNumbered(t, 3, 2)
		f.hub.CatchUp(context.Background())
		synctest.Wait()
		if got := s.got(); !slices.Equal(got, []string{"lobby:1", "lobby:3"}) {
			t.Fatalf("got %q, want live delivery without a catch-up", got)
		}
		if n := hist.replays(); n != 0 {
			t.Fatalf("%d replays after Close", n)
		}
	})
}

func TestACatchUpEndsWithoutHistoryWhenTheLiveStreamShowsNothingWasMissed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hist := &flakyHistory{failures: -1}
		f := newFixture(t, withHistory(hist, time.Minute))
		_, s := f.join(t, "lobby")
		f.publishNumbered(t, 1, 0)
		caughtUp := make(chan struct{})
		go func() { defer close(caughtUp); f.hub.CatchUp(context.Background()) }()
		synctest.Wait() // reconnected; the store cannot be read yet
		// Sent live only (not stored): it proves nothing, so it waits.
		if err := f.broker.Publish(context.Background(), chat.Message{Room: "lobby", Text: "live only"}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := s.got(); !slices.Equal(got, []string{"lobby:1"}) {
			t.Fatalf("before a numbered message: got %q", got)
		}
		f.publishNumbered(t, 2, 1) // follows 1: nothing was stored meanwhile
		<-caughtUp
		synctest.Wait()
		if got, want := s.got(), []string{"lobby:1", "lobby:live only", "lobby:2"}; !slices.Equal(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
		if v := f.metric(t, "roomcast_errors_total", "kind", "history"); v != 0 {
			t.Errorf("history errors = %v, want 0", v)
		}
		if n := hist.replays(); n != 1 {
			t.Errorf("%d replays, want only the first attempt", n)
		}
	})
}
