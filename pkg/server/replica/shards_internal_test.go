package replica

import (
	"testing"

	"roomcast/pkg/server/natsbroker"
)

func TestHistoryShardsAreTheEmbeddedServersEightAsFarAsTheBoundAllows(t *testing.T) {
	least := historyLeast(4096) // 16 envelopes of a 4 KiB message: 400 KiB
	tests := []struct {
		name     string
		url      string
		shards   int
		maxBytes int64
		want     int
	}{
		{"embedded, the default bound", "", 0, 256 << 20, natsbroker.EmbeddedShards},
		{"embedded, 1 MiB", "", 0, 1 << 20, 2},
		{"embedded, room for one shard only", "", 0, least + 1, 1},
		{"embedded, under even one shard's room", "", 0, least - 1, 1},
		{"embedded, configured", "", 3, 256 << 20, 3},
		{"external NATS", "nats://nats:4222", 0, 256 << 20, 1},
		{"external NATS, configured", "nats://nats:4222", 8, 256 << 20, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			c.NATS.URL, c.NATS.History.Shards, c.NATS.History.MaxBytes = tt.url, tt.shards, tt.maxBytes
			c.Gateway.MaxMessageBytes = 4096
			if got := historyShards(c); got != tt.want {
				t.Fatalf("historyShards = %d, want %d", got, tt.want)
			}
		})
	}
}
