package hub_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/hub"
	"roomcast/pkg/server/wsframe"
)

// batchedLines describes a frame a batched member got: its messages, one per line, as
// describe names them ("ping" and the like for the frames that stay alone).
func batchedLines(t *testing.T, frame string) []string {
	t.Helper()
	payload, ok := textPayload([]byte(frame))
	if !ok {
		return []string{describe([]byte(frame))}
	}
	var got []string
	for line := range bytes.SplitSeq(payload, []byte{'\n'}) {
		var f chat.ServerFrame
		if err := json.Unmarshal(line, &f); err != nil || f.Type != "message" {
			t.Fatalf("line %q of a batched frame is not a message frame (%v)", line, err)
		}
		got = append(got, f.Room+":"+f.Message)
	}
	return got
}

func TestABatchedMemberGetsWhatWasQueuedTogetherInOneFrameAndOthersOnePerFrame(t *testing.T) {
	f := newFixture(t, nil)
	pm, plain := f.joinGated(t, "lobby", nil)
	bm, batched := f.joinGated(t, "lobby", (*hub.Member).Batch)
	f.publish(t, "lobby", "first")
	<-plain.inWrite // both writers are now stuck on "first"
	<-batched.inWrite
	for i := range 2 {
		f.publish(t, "lobby", fmt.Sprint(i))
	}
	pm.Send(wsframe.Ping)
	bm.Send(wsframe.Ping)
	for i := 2; i < 5; i++ {
		f.publish(t, "lobby", fmt.Sprint(i))
	}
	close(plain.gate)
	close(batched.gate)
	plain.waitFrames(t, 7)
	batched.waitFrames(t, 2) // "first", then one buffer

	plain.mu.Lock()
	defer plain.mu.Unlock()
	want := []string{"lobby:0", "lobby:1", "ping", "lobby:2", "lobby:3", "lobby:4"}
	if len(plain.writes) != 2 || fmt.Sprint(plain.writes[1]) != fmt.Sprint(want) {
		t.Fatalf("plain member's writes = %q, want [first] then %q, one frame each", plain.writes, want)
	}
	batched.mu.Lock()
	defer batched.mu.Unlock()
	if len(batched.writes) != 2 || fmt.Sprint(batched.writes[0]) != "[lobby:first]" {
		t.Fatalf("batched member's writes = %q, want [lobby:first] (a frame alone is unchanged), then the queued frames", batched.writes)
	}
	// The second write is one buffer: the frames in it, split.
	if got := fmt.Sprint(bufferFrames(t, batched.writes[1][0])); got != "[[lobby:0 lobby:1] [ping] [lobby:2 lobby:3 lobby:4]]" {
		t.Fatalf("batched member's second write = %s, want two frames of messages around the ping", got)
	}
	if d := f.metric(t, "roomcast_messages_delivered_total"); d != 12 {
		t.Fatalf("messages delivered = %v, want 12 (6 per member, counted per message)", d)
	}
}

// bufferFrames splits one buffer a batched member's writer wrote into its frames, each
// described by batchedLines.
func bufferFrames(t *testing.T, buffer string) [][]string {
	t.Helper()
	var frames [][]string
	for rest := []byte(buffer); len(rest) > 0; {
		n := frameLen(t, rest)
		frames = append(frames, batchedLines(t, string(rest[:n])))
		rest = rest[n:]
	}
	return frames
}

// frameLen is the length of the unmasked server frame at the start of b.
func frameLen(t *testing.T, b []byte) int {
	t.Helper()
	n, hdr := int(b[1]&0x7f), 2
	switch n {
	case 126:
		n, hdr = int(b[2])<<8|int(b[3]), 4
	case 127:
		t.Fatal("frame too long for this test")
	}
	return hdr + n
}

// With a batch delay, a batched member's writer waits before it writes, and what was
// queued meanwhile goes out as one frame; a plain member's writer does not wait.
func TestABatchDelayGathersWhatComesMeanwhileIntoOneFrame(t *testing.T) {
	waiting, resume := make(chan time.Duration, 10), make(chan struct{})
	f := newFixture(t, func(c *hub.Config) {
		c.BatchDelay = 20 * time.Millisecond
		c.BatchWait = func(d time.Duration) {
			waiting <- d
			<-resume
		}
	})
	bm, batched := f.joinGated(t, "lobby", (*hub.Member).Batch)
	_, plain := f.join(t, "lobby")
	close(batched.gate)
	f.publish(t, "lobby", "0")
	if d := <-waiting; d != 20*time.Millisecond {
		t.Fatalf("the writer waited %v, want the batch delay", d)
	}
	for i := 1; i < 4; i++ {
		f.publish(t, "lobby", fmt.Sprint(i))
	}
	bm.Send(wsframe.Ping)
	plain.waitFrames(t, 4) // the plain member's writer never waited
	if len(waiting) != 0 {
		t.Fatalf("%d more waits before the first write, want none", len(waiting))
	}
	close(resume)
	batched.waitFrames(t, 1) // one buffer

	batched.mu.Lock()
	defer batched.mu.Unlock()
	if len(batched.writes) != 1 {
		t.Fatalf("batched member's writes = %q, want one write", batched.writes)
	}
	if got := fmt.Sprint(bufferFrames(t, batched.writes[0][0])); got != "[[lobby:0 lobby:1 lobby:2 lobby:3] [ping]]" {
		t.Fatalf("batched member's write = %s, want the four messages in one frame, then the ping", got)
	}
}

// A member that is closing is not held back by the batch delay: what it has queued and
// its close go out at once.
func TestABatchDelayDoesNotHoldBackAClosingMember(t *testing.T) {
	var waits atomic.Int32
	f := newFixture(t, func(c *hub.Config) {
		c.BatchDelay = time.Second
		c.BatchWait = func(time.Duration) {
			if waits.Add(1) > 1 {
				t.Error("the writer of a closing member waited to batch")
			}
		}
	})
	m, s := f.joinGated(t, "lobby", (*hub.Member).Batch)
	f.publish(t, "lobby", "0")
	<-s.inWrite // waited once, now writing "0"
	f.publish(t, "lobby", "1")
	f.publish(t, "lobby", "2")
	m.Close(wsframe.CloseNormal, "bye")
	close(s.gate)
	select {
	case <-s.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the member was not closed")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.writes) != 2 || fmt.Sprint(s.writes[0]) != "[lobby:0]" || len(s.writes[1]) != 1 ||
		fmt.Sprint(batchedLines(t, s.writes[1][0])) != "[lobby:1 lobby:2]" || s.closeCode != wsframe.CloseNormal {
		t.Fatalf("writes %q, close %d; want [lobby:0], then 1 and 2 in one frame, then close %d",
			s.writes, s.closeCode, wsframe.CloseNormal)
	}
}

// A batched member's queue is counted in the frames its client will receive: its
// messages go out joined, wsframe.MaxBatched to a frame, so it holds that many times as
// many before it is slow. A control frame ends a run, as it does on the wire.
func TestABatchedMembersQueueCountsTheFramesItsClientWillReceive(t *testing.T) {
	tests := []struct {
		name string
		fill func(t *testing.T, f *fixture, m *hub.Member) // two frames' worth
	}{
		{"two frames of messages", func(t *testing.T, f *fixture, _ *hub.Member) {
			for i := range 2 * wsframe.MaxBatched {
				f.publish(t, "lobby", fmt.Sprint(i))
			}
		}},
		{"a message and a ping", func(t *testing.T, f *fixture, m *hub.Member) {
			f.publish(t, "lobby", "0")
			m.Send(wsframe.Ping)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *hub.Config) { c.SendQueueFrames = 2 })
			m, s := f.joinGated(t, "lobby", (*hub.Member).Batch)
			f.publish(t, "lobby", "first")
			<-s.inWrite // the writer holds "first" (its client does not read); the rest waits
			tt.fill(t, f, m)
			if v := f.metric(t, "roomcast_errors_total", "kind", "slow_consumer"); v != 0 {
				t.Fatalf("closed as slow with two frames queued, its bound")
			}
			f.publish(t, "lobby", "one too many") // a third frame
			if code := s.waitClosed(t); code != wsframe.CloseTryAgainLater {
				t.Fatalf("closed with %d, want 1013", code)
			}
			if v := f.metric(t, "roomcast_errors_total", "kind", "slow_consumer"); v != 1 {
				t.Fatalf("slow_consumer errors = %v, want 1", v)
			}
		})
	}
}
