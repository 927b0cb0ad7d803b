package hub

import (
	"context"
	"time"

	"roomcast/pkg/server/wsframe"
)

// Keepalive sends wsframe.Ping to every member each PingInterval until ctx ends: the
// pongs keep idle connections from timing out, in proxies and in the gateway. It does
// nothing else; the replica runs it for as long as it serves.
func (h *Hub) Keepalive(ctx context.Context) {
	if h.cfg.PingInterval <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(h.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, m := range h.snapshot() {
				m.enqueue(wsframe.Ping, false, 0)
			}
		}
	}
}
