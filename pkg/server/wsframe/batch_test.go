package wsframe_test

import (
	"bytes"
	"strings"
	"testing"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/wsframe"
)

func TestAppendBatchedJoinsRunsOfTextFramesOnly(t *testing.T) {
	msg := func(text string) []byte { return wsframe.EncodeMessage(chat.Message{Room: "r", Text: text}) }
	payloadOf := func(frame []byte) string {
		_, p := parseFrame(t, frame)
		return string(p)
	}
	long := strings.Repeat("x", 200) // a 16-bit length alone, and joined
	a, b, c := msg("a"), msg(long), wsframe.Unavailable
	// A run longer than a frame holds: 2*MaxBatched+1 messages.
	run := make([][]byte, 2*wsframe.MaxBatched+1)
	var first, second []string
	for i := range run {
		run[i] = msg(strings.Repeat("y", i%3))
		if i < wsframe.MaxBatched {
			first = append(first, payloadOf(run[i]))
		} else if i < 2*wsframe.MaxBatched {
			second = append(second, payloadOf(run[i]))
		}
	}
	tests := []struct {
		name   string
		frames [][]byte
		want   [][]byte // the frames the batched client reads
	}{
		{"one text frame is unchanged", [][]byte{a}, [][]byte{a}},
		{"control frames are unchanged", [][]byte{wsframe.Ping, wsframe.Close(1000, "")}, [][]byte{wsframe.Ping, wsframe.Close(1000, "")}},
		{"a run becomes one frame, a line each", [][]byte{a, b, c},
			[][]byte{wsframe.Text([]byte(payloadOf(a) + "\n" + payloadOf(b) + "\n" + payloadOf(c)))}},
		{"a control frame splits runs", [][]byte{a, b, wsframe.Ping, c},
			[][]byte{wsframe.Text([]byte(payloadOf(a) + "\n" + payloadOf(b))), wsframe.Ping, c}},
		{"a longer run than MaxBatched makes frames of MaxBatched", run, [][]byte{
			wsframe.Text([]byte(strings.Join(first, "\n"))), wsframe.Text([]byte(strings.Join(second, "\n"))), run[len(run)-1]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := wsframe.AppendBatched([]byte("kept"), tt.frames)
			if want := append([]byte("kept"), bytes.Join(tt.want, nil)...); !bytes.Equal(got, want) {
				t.Fatalf("AppendBatched = %q, want %q", got, want)
			}
		})
	}
}

func TestIsTextTellsTheFramesABatchedClientGetsJoined(t *testing.T) {
	for _, tt := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"a message", wsframe.EncodeMessage(chat.Message{Room: "r", Text: "hi"}), true},
		{"an error frame", wsframe.Unavailable, true},
		{"a ping", wsframe.Ping, false},
		{"a close", wsframe.Close(1000, ""), false},
	} {
		if got := wsframe.IsText(tt.frame); got != tt.want {
			t.Errorf("IsText(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}
