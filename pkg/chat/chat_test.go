package chat_test

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/chat"
)

func TestValidateRoom(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"lobby", true},
		{"a", true},
		{"A-b_9", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"a.b", false},
		{"a b", false},
		{"a/b", false},
		{"*", false},
		{">", false},
		{"café", false},
		{"tab\t", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := chat.ValidateRoom(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateRoom(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, chat.ErrInvalidRoom) {
				t.Fatalf("error %v does not wrap ErrInvalidRoom", err)
			}
		})
	}
}

func TestDecodeClientFrame(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		text  string
		code  string
	}{
		{"tutorial frame", `{"message":"hi"}`, "hi", ""},
		{"spaced as Python's json.dumps", `{"type": "message", "message": "hi"}`, "hi", ""},
		{"a key in another case, as encoding/json matches", `{"Message":"hi"}`, "hi", ""},
		{"the last of two", `{"message":"no","message":"hi"}`, "hi", ""},
		{"typed frame", `{"type":"message","message":"hi"}`, "hi", ""},
		{"unknown fields ignored", `{"message":"hi","client":"v2"}`, "hi", ""},
		{"escapes decoded", `{"message":"a\"b\n\u00e9"}`, "a\"b\né", ""},
		{"exactly at the limit", `{"message":"` + strings.Repeat("x", 8) + `"}`, strings.Repeat("x", 8), ""},
		{"not JSON", `hello`, "", chat.CodeBadRequest},
		{"array", `["hi"]`, "", chat.CodeBadRequest},
		{"null", `null`, "", chat.CodeBadRequest},
		{"no message", `{}`, "", chat.CodeBadRequest},
		{"number", `{"message":1}`, "", chat.CodeBadRequest},
		{"object", `{"message":{"a":1}}`, "", chat.CodeBadRequest},
		{"empty", `{"message":""}`, "", chat.CodeBadRequest},
		{"bad type", `{"type":"shout","message":"x"}`, "", chat.CodeBadRequest},
		{"refresh without token", `{"type":"refresh"}`, "", chat.CodeBadRequest},
		{"refresh with a number", `{"type":"refresh","token":5}`, "", chat.CodeBadRequest},
		{"type not a string", `{"type":1,"message":"x"}`, "", chat.CodeBadRequest},
		{"trailing garbage", `{"message":"x"} junk`, "", chat.CodeBadRequest},
		{"over the limit", `{"message":"` + strings.Repeat("x", 9) + `"}`, "", chat.CodeMessageTooLarge},
		{"over the limit in UTF-8 bytes", `{"message":"ééééé"}`, "", chat.CodeMessageTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := chat.DecodeClientFrame([]byte(tt.frame), 8)
			text := f.Message
			if tt.code == "" {
				if err != nil || text != tt.text || f.Type != chat.FrameMessage {
					t.Fatalf("got %q, %v; want %q", text, err, tt.text)
				}
				return
			}
			var ie *chat.InputError
			if !errors.As(err, &ie) || ie.Code != tt.code || ie.Reason == "" {
				t.Fatalf("got %q, %v; want an InputError with code %s", text, err, tt.code)
			}
			if string(ie.Kind) != tt.code {
				t.Fatalf("kind %q for code %q", ie.Kind, tt.code)
			}
		})
	}
}

func TestDecodeRefreshFrame(t *testing.T) {
	f, err := chat.DecodeClientFrame([]byte(`{"type":"refresh","token":"abc.def.ghi"}`), 8)
	if err != nil || f.Type != chat.FrameRefresh || f.Token != "abc.def.ghi" {
		t.Fatalf("got %+v, %v", f, err)
	}
}

func TestAppendMessageJSON(t *testing.T) {
	ts := time.Date(2026, 11, 26, 20, 15, 35, 123456789, time.FixedZone("X", 3600))
	msg := chat.Message{Room: "lobby", Text: "hi \"there\" <b>", Accepted: ts}
	got := string(chat.AppendMessageJSON(nil, msg))
	want := `{"type":"message","room":"lobby","message":"hi \"there\" <b>","ts":"2026-11-26T19:15:35.123456Z"}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	msg.Seq, msg.Epoch = 1042, "k3v9"
	var f chat.ServerFrame
	if err := json.Unmarshal(chat.AppendMessageJSON(nil, msg), &f); err != nil {
		t.Fatal(err)
	}
	if f.Type != "message" || f.Seq != 1042 || f.Epoch != "k3v9" || !f.TS.Equal(ts.Truncate(time.Microsecond)) {
		t.Fatalf("decoded %+v", f)
	}
}

// The "ts" field is written without time's layout interpreter; it must say exactly what
// TimestampLayout does, for every time a message can carry.
func TestTimestampIsWrittenAsItsLayoutSays(t *testing.T) {
	times := []time.Time{
		{}, // the zero time: year 1
		time.Unix(0, 0),
		time.Unix(0, 999), // under a microsecond: .000000
		time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.UTC), // truncated, not rounded
		time.Date(2024, 2, 29, 0, 0, 0, 1000, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), // beyond four digits: time's own form
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 26, 20, 15, 35, 123456789, time.FixedZone("X", 3600)).UTC(),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		times = append(times, time.Unix(0, r.Int64N(1<<62)).UTC())
	}
	for _, ts := range times {
		want := ts.AppendFormat([]byte("x"), chat.TimestampLayout)
		if got := chat.AppendTimestamp([]byte("x"), ts); string(got) != string(want) {
			t.Fatalf("%v: got %s, want %s", ts, got, want)
		}
	}
}

func TestErrorJSON(t *testing.T) {
	var f chat.ServerFrame
	if err := json.Unmarshal(chat.ErrorJSON("bad_request", `say "hi"`), &f); err != nil {
		t.Fatal(err)
	}
	if f.Type != "error" || f.Code != "bad_request" || f.Error != `say "hi"` {
		t.Fatalf("decoded %+v", f)
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "\x00\x1f\n\r\t", "é€😀", "\xff\xfe", "\u2028\u2029", "<script>&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := chat.AppendJSONString(nil, s)
		if !json.Valid(enc) {
			t.Fatalf("invalid JSON %q for %q", enc, s)
		}
		var back string
		if err := json.Unmarshal(enc, &back); err != nil {
			t.Fatal(err)
		}
		// encoding/json is the reference: it also turns each invalid byte into U+FFFD.
		ref, _ := json.Marshal(s)
		var want string
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if back != want {
			t.Fatalf("round trip of %q gave %q, want %q", s, back, want)
		}
	})
}

// FuzzDecodeClientFrame: no frame panics; an accepted message obeys the limit and an
// accepted refresh has a token.
func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"message":"hi"}`, `{"type":"message","message":"hi"}`, `{"type":"refresh","token":"a.b.c"}`,
		`hello`, `["message"]`, `{"text":"hi"}`, `{"message":42}`, `{"message":null}`, `{"message":""}`,
		`{"type":"shout","message":"hi"}`, `{"message":"` + strings.Repeat("x", 65) + `"}`,
		`{"message":"\ud800"}`, `{"message":"a","message":"b"}`, `{"message":"x"} junk`, "\xff\xfe", `{}`, ``,
		`{ "type" : "message" , "message" : "hi" } `, `{"message":"caf\xc3"}`, `{"message":"a\tb"}`, `{"token":"t","type":"refresh"}`,
		`{"Message":"hi"}`, `{"message":"x",}`, `{"message":"x"`, `{"type":"x","message":1}`, `{"type":007}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// What the scan reads, encoding/json reads the same.
		if scanned, ok := chat.ScanClientFrame(data); ok {
			if ref, err := chat.DecodeClientFrameJSON(data); err != nil || ref != scanned {
				t.Fatalf("scan %+v, encoding/json %+v, %v", scanned, ref, err)
			}
		}
		frame, err := chat.DecodeClientFrame(data, 64)
		if err != nil {
			var ie *chat.InputError
			if !errors.As(err, &ie) || ie.Code == "" || ie.Kind == "" {
				t.Fatalf("error %v is not a coded InputError", err)
			}
			return
		}
		switch frame.Type {
		case chat.FrameMessage:
			if frame.Message == "" || len(frame.Message) > 64 {
				t.Fatalf("accepted message of %d bytes", len(frame.Message))
			}
		case chat.FrameRefresh:
			if frame.Token == "" {
				t.Fatal("accepted refresh without a token")
			}
		default:
			t.Fatalf("accepted frame of type %q", frame.Type)
		}
	})
}

// FuzzValidateRoom: a name is accepted exactly when it is 1 to 64 characters of
// [A-Za-z0-9_-].
func FuzzValidateRoom(f *testing.F) {
	for _, s := range []string{"lobby", "", "a.b", "a b", "*", ">", strings.Repeat("x", 64), strings.Repeat("x", 65), "café", "A-b_9", "a/b", "\x00"} {
		f.Add(s)
	}
	valid := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	f.Fuzz(func(t *testing.T, name string) {
		if err := chat.ValidateRoom(name); (err == nil) != valid.MatchString(name) {
			t.Fatalf("ValidateRoom(%q) = %v, disagrees with the alphabet", name, err)
		}
	})
}

// BenchmarkDecodeClientFrame: the frame every sent message is, scanned against
// encoding/json.
func BenchmarkDecodeClientFrame(b *testing.B) {
	frame := []byte(`{"message":"a chat message of a typical length, some sixty bytes long"}`)
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := chat.DecodeClientFrame(frame, 4096); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := chat.DecodeClientFrameJSON(frame); err != nil {
				b.Fatal(err)
			}
		}
	})
}
