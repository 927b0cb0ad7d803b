package loadgen_test

import (
	"testing"

	"roomcast/pkg/load/loadgen"
)

// receipt is one frame arriving: message seq of sender reaches member.
type receipt struct{ member, sender, seq int }

func TestAccounting(t *testing.T) {
	const members = 3 // one room; every member sends
	tests := []struct {
		name     string
		sends    int // per sender: seqs 0..sends-1
		receipts []receipt
		want     loadgen.Counts
		lost     int64
	}{
		{
			name: "nothing sent", sends: 0,
			want: loadgen.Counts{},
		},
		{
			name: "all delivered once", sends: 2,
			receipts: everyReceipt(members, 2),
			want:     loadgen.Counts{Sent: 6, Expected: 18, Delivered: 18},
		},
		{
			name: "one member misses one message", sends: 2,
			receipts: without(everyReceipt(members, 2), receipt{member: 2, sender: 0, seq: 1}),
			want:     loadgen.Counts{Sent: 6, Expected: 18, Delivered: 17}, lost: 1,
		},
		{
			name: "duplicates count once as delivered", sends: 1,
			receipts: append(everyReceipt(members, 1), receipt{0, 1, 0}, receipt{0, 1, 0}, receipt{2, 2, 0}),
			want:     loadgen.Counts{Sent: 3, Expected: 9, Delivered: 9, Duplicated: 3},
		},
		{
			name: "a duplicate does not hide a loss", sends: 1,
			receipts: append(without(everyReceipt(members, 1), receipt{1, 0, 0}), receipt{0, 0, 0}),
			want:     loadgen.Counts{Sent: 3, Expected: 9, Delivered: 8, Duplicated: 1}, lost: 1,
		},
		{
			name: "out of order", sends: 3,
			receipts: []receipt{{0, 0, 2}, {0, 0, 0}, {0, 0, 1}, {0, 0, 2}},
			want:     loadgen.Counts{Sent: 9, Expected: 27, Delivered: 3, Duplicated: 1}, lost: 24,
		},
		{
			name: "nothing arrives", sends: 4,
			want: loadgen.Counts{Sent: 12, Expected: 36}, lost: 36,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got loadgen.Counts
			got.Sent = int64(members * tt.sends)
			got.Expected = got.Sent * members
			inboxes := make([]*loadgen.Inbox, members)
			for i := range inboxes {
				inboxes[i] = loadgen.NewInbox(members)
			}
			for _, r := range tt.receipts {
				if inboxes[r.member].Receive(r.sender, uint64(r.seq)) {
					got.Delivered++
				} else {
					got.Duplicated++
				}
			}
			if got != tt.want {
				t.Fatalf("counts %+v, want %+v", got, tt.want)
			}
			if got.Lost() != tt.lost {
				t.Fatalf("Lost() = %d, want %d", got.Lost(), tt.lost)
			}
		})
	}
}

func everyReceipt(members, sends int) []receipt {
	var out []receipt
	for s := range members {
		for seq := range sends {
			for m := range members {
				out = append(out, receipt{m, s, seq})
			}
		}
	}
	return out
}

func without(rs []receipt, drop receipt) []receipt {
	var out []receipt
	for _, r := range rs {
		if r != drop {
			out = append(out, r)
		}
	}
	return out
}

func TestInboxLongRunAndBounds(t *testing.T) {
	in := loadgen.NewInbox(2)
	// Many in-order messages with one gap: the gap stays missing, everything else counts once.
	for seq := range uint64(100000) {
		if seq == 777 {
			continue
		}
		if !in.Receive(1, seq) {
			t.Fatalf("seq %d: not a first receipt", seq)
		}
	}
	for _, seq := range []uint64{0, 776, 778, 99999} {
		if in.Receive(1, seq) {
			t.Fatalf("seq %d again: counted as first", seq)
		}
	}
	if !in.Receive(1, 777) || in.Receive(1, 777) {
		t.Fatal("the late seq 777 should count once")
	}
	for _, c := range []struct {
		sender int
		seq    uint64
	}{{-1, 0}, {2, 0}, {0, 1 << 40}} {
		if in.Receive(c.sender, c.seq) {
			t.Fatalf("Receive(%d, %d) accepted", c.sender, c.seq)
		}
	}
}

func TestCountsLostNeverNegative(t *testing.T) {
	if l := (loadgen.Counts{Expected: 5, Delivered: 7}).Lost(); l != 0 {
		t.Fatalf("Lost() = %d, want 0", l)
	}
}
