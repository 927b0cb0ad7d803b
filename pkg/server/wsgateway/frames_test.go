package wsgateway_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/wsgateway"
)

// parseFrame decodes one unmasked server frame.
func parseFrame(t *testing.T, b []byte) (opcode byte, payload []byte) {
	t.Helper()
	if b[0]&0x80 == 0 {
		t.Fatal("FIN bit not set")
	}
	if b[1]&0x80 != 0 {
		t.Fatal("server frame is masked")
	}
	n, rest := int(b[1]&0x7f), b[2:]
	switch n {
	case 126:
		n, rest = int(binary.BigEndian.Uint16(rest)), rest[2:]
		if n < 126 {
			t.Fatalf("non-minimal 16-bit length %d", n)
		}
	case 127:
		n, rest = int(binary.BigEndian.Uint64(rest)), rest[8:]
		if n <= 0xffff {
			t.Fatalf("non-minimal 64-bit length %d", n)
		}
	}
	if len(rest) != n {
		t.Fatalf("frame says %d bytes of payload, has %d", n, len(rest))
	}
	return b[0] & 0x0f, rest
}

func TestEncodeMessageAtEveryLengthBoundary(t *testing.T) {
	base := len(chat.AppendMessageJSON(nil, chat.Message{Room: "r", Accepted: time.Unix(0, 0)}))
	for _, total := range []int{base + 1, 125, 126, 127, 0xffff, 0x10000, 0x10001} {
		text := strings.Repeat("x", total-base)
		msg := chat.Message{Room: "r", Text: text, Accepted: time.Unix(0, 0)}
		op, payload := parseFrame(t, wsgateway.EncodeMessage(msg))
		if op != 0x1 {
			t.Fatalf("opcode %d, want text", op)
		}
		if want := chat.AppendMessageJSON(nil, msg); !bytes.Equal(payload, want) {
			t.Fatalf("payload of %d bytes differs from the message JSON", total)
		}
	}
}

func TestTextFrameAndPing(t *testing.T) {
	if op, p := parseFrame(t, wsgateway.TextFrame([]byte("hello"))); op != 1 || string(p) != "hello" {
		t.Fatalf("TextFrame: opcode %d payload %q", op, p)
	}
	if op, p := parseFrame(t, wsgateway.PingFrame); op != 0x9 || len(p) != 0 {
		t.Fatalf("PingFrame: opcode %d payload %q", op, p)
	}
}

func TestRoomFromPath(t *testing.T) {
	tests := []struct {
		path string
		room string
	}{
		{"/ws/chat/lobby/", "lobby"},
		{"/ws/chat/lobby", "lobby"},
		{"/ws/chat/A-b_9/", "A-b_9"},
		{"/ws/chat/", ""},
		{"/ws/chat//", ""},
		{"/ws/chat", ""},
		{"/ws/chat/a/b", ""},
		{"/ws/chat/lobby//", ""},
		{"/ws/chat/a.b/", ""},
		{"/other/lobby/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			room, err := wsgateway.RoomFromPath(tt.path)
			if tt.room == "" {
				if !errors.Is(err, chat.ErrInvalidRoom) {
					t.Fatalf("RoomFromPath(%q) = %q, %v; want ErrInvalidRoom", tt.path, room, err)
				}
				return
			}
			if err != nil || room != tt.room {
				t.Fatalf("RoomFromPath(%q) = %q, %v; want %q", tt.path, room, err, tt.room)
			}
		})
	}
}

func BenchmarkEncodeMessage(b *testing.B) {
	msg := chat.Message{Room: "room-42", Text: "lg|run1-17-12345|1764620135123456789", Accepted: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		wsgateway.EncodeMessage(msg)
	}
}

// FuzzRoomFromPath: any path either yields a valid room or ErrInvalidRoom.
func FuzzRoomFromPath(f *testing.F) {
	for _, s := range []string{"/ws/chat/lobby/", "/ws/chat/", "/ws/chat//", "/ws/chat", "/ws/chat/a/b", "/ws/chat/a.b/", "/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		room, err := wsgateway.RoomFromPath(path)
		if err != nil {
			if !errors.Is(err, chat.ErrInvalidRoom) {
				t.Fatalf("RoomFromPath(%q): %v", path, err)
			}
			return
		}
		if chat.ValidateRoom(room) != nil || !strings.HasPrefix(path, wsgateway.PathPrefix+room) {
			t.Fatalf("RoomFromPath(%q) = %q", path, room)
		}
	})
}
