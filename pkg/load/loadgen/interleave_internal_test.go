package loadgen

import (
	"fmt"
	"slices"
	"testing"
)

func TestInterleaveSpreadsEachRoomsSendsOverThePeriod(t *testing.T) {
	tests := []struct {
		senders, members int
		interleave       bool
		want             []int // slot of each sender, by id
		slots            int
	}{
		{12, 4, false, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 12},
		// Room 0 (ids 0-3) takes slots 0, 3, 6, 9: a quarter of the period apart.
		{12, 4, true, []int{0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11}, 12},
		// The last room is not full: its missing member's slot stays empty.
		{10, 4, true, []int{0, 3, 6, 9, 1, 4, 7, 10, 2, 5}, 12},
		{3, 1, true, []int{0, 1, 2}, 3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d senders, %d per room, interleave %v", tt.senders, tt.members, tt.interleave), func(t *testing.T) {
			r := &runner{cfg: Config{Members: tt.members, Interleave: tt.interleave}}
			for i := range tt.senders {
				r.senders = append(r.senders, &member{id: i, room: i / tt.members})
			}
			var got []int
			for _, m := range r.senders {
				got = append(got, r.sendSlot(m))
			}
			if !slices.Equal(got, tt.want) || r.sendSlots() != tt.slots {
				t.Fatalf("slots %v of %d, want %v of %d", got, r.sendSlots(), tt.want, tt.slots)
			}
			seen := map[int]bool{}
			for _, s := range got {
				if seen[s] || s < 0 || s >= r.sendSlots() {
					t.Fatalf("slot %d taken twice or out of range in %v", s, got)
				}
				seen[s] = true
			}
		})
	}
}
