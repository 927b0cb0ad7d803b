package natsbroker

import (
	"hash/fnv"
	"math/rand/v2"
	"testing"
)

// A room's shard is part of the history's layout: replicas of two releases must put a
// room in the same stream, so the hash may never change. These pin it to FNV-1a.
func TestAShardIsFNV1aOfTheRoomsNameModuloTheShards(t *testing.T) {
	pinned := []struct {
		room   string
		shards int
		want   int
	}{
		{"lobby", 1, 0},
		{"lobby", 8, 3},
		{"general", 8, 3},
		{"r1", 8, 4},
		{"r2", 16, 5},
		{"", 8, 5},
	}
	for _, tt := range pinned {
		if got := shardIndex(tt.room, tt.shards); got != tt.want {
			t.Errorf("shardIndex(%q, %d) = %d, want %d", tt.room, tt.shards, got, tt.want)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_"
	for range 1000 {
		name := make([]byte, 1+rng.IntN(64))
		for i := range name {
			name[i] = alphabet[rng.IntN(len(alphabet))]
		}
		n := 1 + rng.IntN(MaxShards)
		h := fnv.New32a()
		h.Write(name)
		if got, want := shardIndex(string(name), n), int(h.Sum32()%uint32(n)); got != want {
			t.Fatalf("shardIndex(%q, %d) = %d, FNV-1a says %d", name, n, got, want)
		}
	}
}

func TestLayoutShardsReadsTheRootStreamsMetadata(t *testing.T) {
	for _, tt := range []struct {
		meta map[string]string
		want int
	}{
		{nil, 1}, // a stream of a release before shards
		{map[string]string{batchMetadataKey: batchMetadataValue}, 1},
		{map[string]string{shardsMetadataKey: "8"}, 8},
		{map[string]string{shardsMetadataKey: "16"}, 16},
		{map[string]string{shardsMetadataKey: "17"}, 1},
		{map[string]string{shardsMetadataKey: "0"}, 1},
		{map[string]string{shardsMetadataKey: "eight"}, 1},
	} {
		if got := layoutShards(tt.meta); got != tt.want {
			t.Errorf("layoutShards(%v) = %d, want %d", tt.meta, got, tt.want)
		}
	}
}
