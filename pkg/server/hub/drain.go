package hub

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Draining is the lame-duck end of a replica: StopAccepting refuses new members, then
// CloseAll closes the connections spread over a window, so that the clients' reconnects
// do not all land on the other replicas at once.

// ErrDraining is returned by Join once the replica has begun to drain.
var ErrDraining = errors.New("replica is draining")

// Draining reports whether StopAccepting has been called.
func (h *Hub) Draining() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.draining
}

// StopAccepting makes every later Join fail with ErrDraining. Members stay connected.
func (h *Hub) StopAccepting() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.draining = true
}

// minDrainGap keeps the drain from waking up more often than is useful.
const minDrainGap = 10 * time.Millisecond

// DrainBatches splits n connections into batches closed one gap apart so that the
// closes are spread evenly over window: batch i holds connections [sizes[:i]...).
func DrainBatches(n int, window time.Duration) (sizes []int, gap time.Duration) {
	if n <= 0 {
		return nil, 0
	}
	batches := n
	if limit := int(window / minDrainGap); limit < batches {
		batches = max(limit, 1)
	}
	sizes = make([]int, batches)
	for i := range sizes {
		sizes[i] = (i+1)*n/batches - i*n/batches
	}
	return sizes, window / time.Duration(batches)
}

// CloseAll stops accepting members, then closes every member with code (after its
// queued frames are written), spreading the closes evenly over window, and waits until
// every member has left or ctx ends.
func (h *Hub) CloseAll(ctx context.Context, code uint16, reason string, window time.Duration) error {
	h.mu.Lock()
	h.draining = true
	if len(h.members) == 0 {
		h.mu.Unlock()
		return nil
	}
	empty := h.empty
	if empty == nil {
		empty = make(chan struct{})
		h.empty = empty
	}
	h.mu.Unlock()

	all := h.snapshot()
	sizes, gap := DrainBatches(len(all), window)
	next := 0
	for i, size := range sizes {
		for _, m := range all[next : next+size] {
			m.Close(code, reason)
		}
		next += size
		if i < len(sizes)-1 {
			if err := h.cfg.Sleep(ctx, gap); err != nil {
				return fmt.Errorf("closing connections: %w", err)
			}
		}
	}
	select {
	case <-empty:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %d connections to close: %w", h.Len(), ctx.Err())
	}
}
