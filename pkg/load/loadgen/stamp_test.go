package loadgen_test

import (
	"strconv"
	"testing"

	"roomcast/pkg/chat"
	"roomcast/pkg/load/loadgen"
)

func TestTextRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		run  string
		conn int
		seq  uint64
		sent int64
	}{
		{"zeros", "a", 0, 0, 0},
		{"typical", "k3v9xz", 1999, 42, 1764188135123456789},
		{"large", "abc123", 1<<20 - 1, 1<<63 + 5, 1<<63 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := loadgen.AppendText(nil, tt.run, tt.conn, tt.seq, tt.sent)
			want := "lg|" + tt.run + "-" + strconv.Itoa(tt.conn) + "-" + strconv.FormatUint(tt.seq, 10) + "|" + strconv.FormatInt(tt.sent, 10)
			if string(text) != want {
				t.Fatalf("AppendText = %q, want %q", text, want)
			}
			s, ok := loadgen.ParseText(text)
			if !ok {
				t.Fatalf("ParseText(%q) failed", text)
			}
			if string(s.Run) != tt.run || s.Conn != tt.conn || s.Seq != tt.seq || s.Sent != tt.sent {
				t.Fatalf("ParseText(%q) = %+v (run %q)", text, s, s.Run)
			}
		})
	}
}

func TestParseTextRejects(t *testing.T) {
	for _, text := range []string{
		"",
		"hello",
		"lg|",
		"lg|-1-2|3",                       // no run
		"lg|run1-2|3",                     // no seq
		"lg|run-1-2",                      // no time
		"lg|run-1-2|",                     // empty time
		"lg|run-x-2|3",                    // conn not a number
		"lg|run-1-2|3x",                   // trailing bytes
		"lg|run-1-2|3|4",                  // extra field
		"lg|run-+1-2|3",                   // sign
		"lg|run-1-2|99999999999999999999", // 20 digits: overflow
		"lg|run-1-2|9223372036854775808",  // over int64
		"xx|run-1-2|3",
	} {
		t.Run(strconv.Quote(text), func(t *testing.T) {
			if s, ok := loadgen.ParseText([]byte(text)); ok {
				t.Fatalf("ParseText(%q) = %+v, want failure", text, s)
			}
		})
	}
}

func TestMessageText(t *testing.T) {
	ours := "lg|r1-3-7|1700000000000000000"
	tests := []struct {
		name  string
		frame string
		want  string // "" means not found
	}{
		{"server frame", `{"type":"message","room":"lg-r1-0","message":"` + ours + `","ts":"2026-11-26T20:15:35.123456Z"}`, ours},
		{"with history fields", `{"type":"message","room":"r","message":"` + ours + `","seq":1042,"epoch":"k3v9","ts":"x"}`, ours},
		{"message first", `{"message":"` + ours + `","type":"message"}`, ours},
		{"someone else's text", `{"type":"message","room":"r","message":"hi","ts":"x"}`, ""},
		{"escaped look-alike", `{"type":"message","room":"r","message":"lg|a\"b","ts":"x"}`, ""},
		{"unterminated", `{"type":"message","message":"lg|r1-3-7|17`, ""},
		{"error frame", `{"type":"error","code":"rate_limited","error":"too many"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := loadgen.MessageText([]byte(tt.frame))
			if ok != (tt.want != "") || string(got) != tt.want {
				t.Fatalf("MessageText = %q, %v; want %q", got, ok, tt.want)
			}
		})
	}
}

func TestMessageTextOfServerEncoding(t *testing.T) {
	text := string(loadgen.AppendText(nil, "abc", 12, 34, 56))
	frame := chat.AppendMessageJSON(nil, chat.Message{Room: "lg-abc-1", Text: text, Seq: 9, Epoch: "e"})
	got, ok := loadgen.MessageText(frame)
	if !ok || string(got) != text {
		t.Fatalf("MessageText(%s) = %q, %v", frame, got, ok)
	}
}

func TestErrorCode(t *testing.T) {
	tests := []struct {
		name, frame, want string
	}{
		{"rate limited", string(chat.ErrorJSON("rate_limited", "too many messages")), "rate_limited"},
		{"bad request", `{"type":"error","code":"bad_request","error":"x"}`, "bad_request"},
		{"message", `{"type":"message","room":"r","message":"code","ts":"x"}`, ""},
		{"no code", `{"type":"error","error":"x"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := loadgen.ErrorCode([]byte(tt.frame))
			if ok != (tt.want != "") || string(got) != tt.want {
				t.Fatalf("ErrorCode = %q, %v; want %q", got, ok, tt.want)
			}
		})
	}
}

func TestScanningDoesNotAllocate(t *testing.T) {
	frame := chat.AppendMessageJSON(nil, chat.Message{Room: "lg-abc-1", Text: string(loadgen.AppendText(nil, "abc", 12, 34, 56))})
	allocs := testing.AllocsPerRun(100, func() {
		text, _ := loadgen.MessageText(frame)
		if _, ok := loadgen.ParseText(text); !ok {
			t.Fatal("not parsed")
		}
	})
	if allocs != 0 {
		t.Fatalf("MessageText + ParseText allocate %v times per frame, want 0", allocs)
	}
}
