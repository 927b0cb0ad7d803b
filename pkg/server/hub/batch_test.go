package hub_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

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
	var frames [][]string
	for rest := []byte(batched.writes[1][0]); len(rest) > 0; {
		n := frameLen(t, rest)
		frames = append(frames, batchedLines(t, string(rest[:n])))
		rest = rest[n:]
	}
	if got := fmt.Sprint(frames); got != "[[lobby:0 lobby:1] [ping] [lobby:2 lobby:3 lobby:4]]" {
		t.Fatalf("batched member's second write = %s, want two frames of messages around the ping", got)
	}
	if d := f.metric(t, "roomcast_messages_delivered_total"); d != 12 {
		t.Fatalf("messages delivered = %v, want 12 (6 per member, counted per message)", d)
	}
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
