package hub_test

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/hub"
	"roomcast/pkg/server/wsframe"
)

// A resumed member's replay read the stream through seq 3; seq 4 was stored after that
// read but was republished before the replica's new subscription reached the stream
// leader's server, so it never comes live; 5 (whose predecessor is 4) does. These run in
// a synctest bubble like the catch-up tests: the fill's backoff passes in fake time.
func TestAResumedMemberGetsAStoredMessageThatNeverCameLive(t *testing.T) {
	tests := []struct {
		name string
		// liveWhileHeld: 5 comes while the replay runs (held); otherwise after Release,
		// when the hold has ended with nothing held.
		liveWhileHeld   bool
		failures, stale int
		retries         float64
		// gaveUp: history never answers; the member is told its history is truncated.
		gaveUp bool
	}{
		{name: "held", liveWhileHeld: true},
		{name: "after the hold", liveWhileHeld: false},
		{name: "held/store unavailable twice", liveWhileHeld: true, failures: 2, retries: 2},
		{name: "after the hold/store replica behind once", stale: 1, retries: 1},
		{name: "after the hold/store never answers", failures: -1, gaveUp: true},
		{name: "held/store never answers", liveWhileHeld: true, failures: -1, gaveUp: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hist := &flakyHistory{failures: tt.failures, stale: tt.stale,
					stored: []chat.Message{numbered(1, 0), numbered(2, 1), numbered(3, 2), numbered(4, 3)}}
				f := newFixture(t, withHistory(hist, 20*time.Second))
				m, s := f.joinHeld(t, "lobby")
				replay(t, m, numbered(2, 1), numbered(3, 2))
				if tt.liveWhileHeld {
					f.publishNumbered(t, 5, 4)
				}
				released := make(chan error, 1)
				go func() { released <- m.Release(context.Background(), 3, "e") }()
				synctest.Wait()
				if !tt.liveWhileHeld {
					if err := <-released; err != nil {
						t.Fatal(err)
					}
					f.publishNumbered(t, 5, 4)
				}
				time.Sleep(time.Minute) // fake time: the retries happen meanwhile
				if tt.liveWhileHeld {
					if err := <-released; err != nil {
						t.Fatal(err)
					}
				}
				f.publishNumbered(t, 6, 5)
				synctest.Wait()
				want := []string{"lobby:2", "lobby:3", "lobby:4", "lobby:5", "lobby:6"}
				if tt.gaveUp {
					want = []string{"lobby:2", "lobby:3", "truncated", "lobby:5", "lobby:6"}
				}
				if got := s.got(); !slices.Equal(got, want) {
					t.Fatalf("got %q\nwant %q", got, want)
				}
				if v := f.metric(t, "roomcast_room_catchups_total", "trigger", "resume"); v != 1 {
					t.Errorf("catch-ups{trigger=resume} = %v, want 1", v)
				}
				if tt.gaveUp {
					if v := f.metric(t, "roomcast_errors_total", "kind", "history"); v != 1 {
						t.Errorf("history errors = %v for a fill that gave up, want 1", v)
					}
					return
				}
				if v := f.metric(t, "roomcast_room_catchup_retries_total", "trigger", "resume"); v != tt.retries {
					t.Errorf("retries{trigger=resume} = %v, want %v", v, tt.retries)
				}
			})
		})
	}
}

// Nothing is read from history when the live messages show nothing was missed, or when
// the member's position cannot be compared with them.
func TestAResumedMemberReadsNoHistoryWithoutAGap(t *testing.T) {
	tests := []struct {
		name  string
		after uint64
		epoch string
		live  chat.Message
	}{
		{name: "the next message follows the replay", after: 3, epoch: "e", live: numbered(4, 3)},
		{name: "the replay failed: its epoch is unknown", after: 3, epoch: "", live: numbered(5, 4)},
		{name: "another epoch", after: 3, epoch: "old", live: numbered(5, 4)},
		{name: "the replay read nothing (a since from the future)", after: 0, epoch: "e", live: numbered(5, 4)},
		{name: "no seq (history off on the publisher)", after: 3, epoch: "e", live: chat.Message{Room: "lobby", Text: "5"}},
	}
	for _, tt := range tests {
		for _, held := range []bool{true, false} {
			name := tt.name + map[bool]string{true: "/held", false: "/after the hold"}[held]
			t.Run(name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					hist := &flakyHistory{stored: []chat.Message{numbered(3, 2), numbered(4, 3), numbered(5, 4)}}
					f := newFixture(t, withHistory(hist, 20*time.Second))
					m, s := f.joinHeld(t, "lobby")
					publish := func() {
						if err := f.broker.Publish(context.Background(), tt.live); err != nil {
							t.Fatal(err)
						}
					}
					if held {
						publish()
					}
					if err := m.Release(context.Background(), tt.after, tt.epoch); err != nil {
						t.Fatal(err)
					}
					if !held {
						publish()
					}
					synctest.Wait()
					if got, want := s.got(), []string{"lobby:" + tt.live.Text}; !slices.Equal(got, want) {
						t.Fatalf("got %q, want %q", got, want)
					}
					if n := hist.replays(); n != 0 {
						t.Errorf("history was read %d times", n)
					}
				})
			})
		}
	}
}

// A member that closes while its fill waits for history ends the fill; nothing is left
// running (goleak checks at the end).
func TestAFillEndsWhenItsMemberLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hist := &flakyHistory{failures: -1}
		f := newFixture(t, withHistory(hist, time.Hour))
		m, s := f.joinHeld(t, "lobby")
		if err := m.Release(context.Background(), 3, "e"); err != nil {
			t.Fatal(err)
		}
		f.publishNumbered(t, 5, 4)
		synctest.Wait()
		if hist.replays() == 0 {
			t.Fatal("no fill started")
		}
		s.Close(wsframe.CloseNormal, "")
		f.hub.Leave(m)
		f.hub.Close()
		if got := s.got(); len(got) > 1 || len(got) == 1 && got[0] != "truncated" {
			t.Fatalf("a member that left got %q", got)
		}
	})
}

// replay sends msgs to m as the gateway sends a resuming member its replay.
func replay(t *testing.T, m *hub.Member, msgs ...chat.Message) {
	t.Helper()
	for _, msg := range msgs {
		if err := m.SendMessage(context.Background(), wsframe.EncodeMessage(msg), msg.Accepted); err != nil {
			t.Fatal(err)
		}
	}
}
