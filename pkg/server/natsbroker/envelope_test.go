package natsbroker

import (
	"encoding/json"
	"testing"
	"time"

	"roomcast/pkg/chat"
)

// The scan must agree with encoding/json whenever it takes an envelope.
func checkScan(t *testing.T, data []byte) {
	t.Helper()
	got, ok := scanEnvelope(data)
	if !ok {
		return
	}
	var want envelope
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatalf("scan took %q, which encoding/json refuses: %v", data, err)
	}
	if got != want {
		t.Fatalf("scan of %q = %+v, encoding/json = %+v", data, got, want)
	}
}

func TestEnvelopeRoundTripsAndTheScanAgreesWithEncodingJSON(t *testing.T) {
	at := time.Date(2026, 12, 6, 7, 0, 0, 123456789, time.UTC)
	for _, msg := range []chat.Message{
		{ID: "a-1", Room: "lobby", Text: "hi", Accepted: at},
		{ID: "a-2", Room: "lobby", Text: `quote " backslash \ newline
 tab	 <script> & é ✓ \u2028`, Accepted: at, Seq: 42, Epoch: "k3v9"},
		{ID: "", Room: "r", Text: "", Accepted: time.Unix(0, 0).UTC()},
	} {
		data := encode(msg)
		checkScan(t, data)
		var ref envelope
		if err := json.Unmarshal(data, &ref); err != nil || ref.Text != msg.Text || ref.TS != msg.Accepted.UnixNano() {
			t.Fatalf("encode(%+v) = %s: encoding/json reads %+v, %v", msg, data, ref, err)
		}
		got, err := decode(data)
		if err != nil || got != msg {
			t.Fatalf("decode(encode(%+v)) = %+v, %v", msg, got, err)
		}
	}
}

func TestTheScanLeavesAnythingUnusualToEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{"v":1,"id":"x","room":"r","msg":"m","ts":5}`,
		`{"v":2,"id":"x","room":"mixed","msg":"from v2","ts":1,"reactions":["+1"],"thread":{"id":7}}`,
		`{"v":1, "room":"r"}`,
		`{"v":1.5,"room":"r"}`,
		`{"v":1,"room":"r","msg":null}`,
		`{"v":1,"room":"r","seq":-1}`,
		`{"v":1,"room":"r"}trailing`,
		`{"room":"r","room":"s","v":1}`,
		`{"v":1,"room":"r","msg":"\u00e9"}`,
		`{"v":1,"room":"r",}`,
		`{"v":1e3,"room":"r"}`,
		`{"v":99999999999999999999,"room":"r"}`,
		`{"v":1,"room":"r","ts":9999999999999999999}`,
		`{"v":1,"room":"r","seq":9999999999999999999}`,
		`{"v":01,"room":"r"}`,
		"{\"v\":1,\"room\":\"r\xff\"}",
		`{`, `{}`, `not an envelope`, ``,
	} {
		checkScan(t, []byte(in))
	}
}

func FuzzScanEnvelope(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":"x","room":"r","msg":"m","ts":5,"seq":3,"epoch":"e"}`))
	f.Fuzz(func(t *testing.T, data []byte) { checkScan(t, data) })
}

func BenchmarkEnvelope(b *testing.B) {
	msg := chat.Message{ID: "0a1b2c3d4e5f-1k", Room: "room-7", Text: "a chat message of a typical length, some sixty bytes long",
		Accepted: time.Now(), Seq: 123456, Epoch: "k3v9x2"}
	data := encode(msg)
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encode(msg)
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
