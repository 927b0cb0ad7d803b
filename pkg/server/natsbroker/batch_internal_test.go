package natsbroker

import (
	"slices"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/chat"
)

func TestABatchUnpacksIntoItsMessagesInOrderAndABadOneKeepsTheOthersIndexes(t *testing.T) {
	at := time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)
	msgs := []chat.Message{
		{ID: "a", Room: "r", Text: "one", Accepted: at},
		{ID: "b", Room: "r", Text: "two\nlines \"quoted\" \\ é", Accepted: at},
		{ID: "c", Room: "r", Text: "three", Accepted: at},
	}
	envelopes := make([][]byte, len(msgs))
	for i, m := range msgs {
		envelopes[i] = encode(m)
	}
	tests := []struct {
		name    string
		data    []byte
		want    []indexed
		n       uint64
		bad     int
		wantErr bool
	}{
		{name: "one envelope, as earlier releases store", data: envelopes[1], want: []indexed{{0, msgs[1]}}, n: 1},
		{name: "a batch", data: packBatch(envelopes), want: []indexed{{0, msgs[0]}, {1, msgs[1]}, {2, msgs[2]}}, n: 3},
		{name: "a batch of one", data: packBatch(envelopes[:1]), want: []indexed{{0, msgs[0]}}, n: 1},
		{
			name: "a bad envelope in the middle", data: packBatch([][]byte{envelopes[0], []byte("{not json"), envelopes[2]}),
			want: []indexed{{0, msgs[0]}, {2, msgs[2]}}, n: 3, bad: 1, wantErr: true,
		},
		{name: "not an envelope", data: []byte("hello"), n: 1, bad: 1, wantErr: true},
		{name: "an empty batch", data: batchMarker, n: 1, bad: 1, wantErr: true},
		{
			name: "more than a batch holds", data: packBatch(slices.Repeat(envelopes[:1], maxBatchMessages+1)),
			want: each(msgs[0], maxBatchMessages), n: maxBatchMessages, bad: 1, wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var all []indexed
			n, bad, err := unpack(tt.data, func(i uint64, msg chat.Message) { all = append(all, indexed{i, msg}) })
			if n != tt.n || bad != tt.bad || (err != nil) != tt.wantErr {
				t.Fatalf("unpack = %d, %d bad, %v; want %d, %d bad, error %v", n, bad, err, tt.n, tt.bad, tt.wantErr)
			}
			if got := batchLen(tt.data); got != n {
				t.Fatalf("batchLen = %d, unpack counted %d", got, n)
			}
			if len(all) != len(tt.want) {
				t.Fatalf("unpacked %d messages, want %d: %+v", len(all), len(tt.want), all)
			}
			for k := range all {
				if all[k].i != tt.want[k].i || all[k].msg != tt.want[k].msg {
					t.Fatalf("message %d: %+v, want %+v", k, all[k], tt.want[k])
				}
			}
		})
	}
}

// indexed is a message unpacked with its index in the batch.
type indexed struct {
	i   uint64
	msg chat.Message
}

func each(m chat.Message, n int) []indexed {
	out := make([]indexed, n)
	for i := range out {
		out[i] = indexed{uint64(i), m}
	}
	return out
}

func TestABatchIsNeverLargerThanOneMessageMayBe(t *testing.T) {
	tests := []struct {
		maxMsgSize int32
		maxPayload int64
		want       int
	}{
		{0, 0, defaultBatchBytes},
		{-1, 1 << 20, defaultBatchBytes},
		{25600, 1 << 20, 25600},
		{0, 8192, 8192 - 1024},
		{25600, 8192, 8192 - 1024},
	}
	for _, tt := range tests {
		if got := batchBytes(tt.maxMsgSize, tt.maxPayload); got != tt.want {
			t.Errorf("batchBytes(%d, %d) = %d, want %d", tt.maxMsgSize, tt.maxPayload, got, tt.want)
		}
	}
	if !strings.HasSuffix(string(batchMarker), "\n") {
		t.Fatal("the marker must end its line")
	}
}
