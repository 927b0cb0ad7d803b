package wsframe_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/wsframe"
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
		op, payload := parseFrame(t, wsframe.EncodeMessage(msg))
		if op != 0x1 {
			t.Fatalf("opcode %d, want text", op)
		}
		if want := chat.AppendMessageJSON(nil, msg); !bytes.Equal(payload, want) {
			t.Fatalf("payload of %d bytes differs from the message JSON", total)
		}
	}
}

func TestTextFrameAndPing(t *testing.T) {
	if op, p := parseFrame(t, wsframe.Text([]byte("hello"))); op != 1 || string(p) != "hello" {
		t.Fatalf("Text: opcode %d payload %q", op, p)
	}
	if op, p := parseFrame(t, wsframe.Ping); op != 0x9 || len(p) != 0 {
		t.Fatalf("Ping: opcode %d payload %q", op, p)
	}
}

// TestFramesAreByteForByteWhatClientsGot pins every frame the server writes to the bytes
// recorded in testdata/frames.golden, so that moving or refactoring the encoders cannot
// change what clients receive.
func TestFramesAreByteForByteWhatClientsGot(t *testing.T) {
	frames := map[string][]byte{
		"ping":              wsframe.Ping,
		"truncated":         wsframe.Truncated,
		"close restart":     wsframe.Close(wsframe.CloseServiceRestart, "server restarting"),
		"close long reason": wsframe.Close(wsframe.CloseTryAgainLater, strings.Repeat("r", 200)),
		"pong":              wsframe.Pong([]byte("abc")),
		"pong empty":        wsframe.Pong(nil),
		"text":              wsframe.Text([]byte("hello")),
		"message": wsframe.EncodeMessage(chat.Message{Room: "lobby", Text: "héllo \"x\"\n<", Seq: 42, Epoch: "e1",
			Accepted: time.Unix(1764620135, 123456789)}),
		"message no seq":   wsframe.EncodeMessage(chat.Message{Room: "r", Text: strings.Repeat("y", 300), Accepted: time.Unix(0, 0)}),
		"rate limited":     wsframe.RateLimited(2.5, 7),
		"unavailable":      wsframe.Unavailable,
		"read only":        wsframe.ReadOnly,
		"no tokens":        wsframe.NoTokens,
		"refresh refused":  wsframe.RefreshRefused(errors.New("token expired")),
		"replay failed":    wsframe.ReplayFailed(errors.New("no stream")),
		"replay truncated": wsframe.ReplayTruncated(17),
	}
	golden := readGolden(t, "testdata/frames.golden")
	for name, got := range frames {
		t.Run(name, func(t *testing.T) {
			want, ok := golden[name]
			if !ok {
				t.Fatalf("no golden bytes for %q", name)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("got  %x\nwant %x", got, want)
			}
			parseFrame(t, got)
		})
	}
	if len(golden) != len(frames) {
		t.Errorf("%d golden frames, %d checked", len(golden), len(frames))
	}
}

// readGolden reads lines of "name<TAB>hex bytes".
func readGolden(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	golden := map[string][]byte{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, hexBytes, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			t.Fatalf("%s: line %q has no tab", path, sc.Text())
		}
		b, err := hex.DecodeString(hexBytes)
		if err != nil {
			t.Fatalf("%s: %s: %v", path, name, err)
		}
		golden[name] = b
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return golden
}

func BenchmarkEncodeMessage(b *testing.B) {
	msg := chat.Message{Room: "room-42", Text: "lg|run1-17-12345|1764620135123456789", Accepted: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		wsframe.EncodeMessage(msg)
	}
}
