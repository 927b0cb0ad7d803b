// Package backoff paces the attempts of an operation tried again until it succeeds or
// its context ends: the wait doubles from the first to the largest, with jitter so that
// replicas, rooms and clients do not try again in step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the wait before each next attempt; the zero value of its state starts at
// First. It is not safe for concurrent use.
type Backoff struct {
	First, Max time.Duration
	next       time.Duration
}

// Wait sleeps for the next backoff, or until ctx ends (its error).
func (b *Backoff) Wait(ctx context.Context) error {
	if b.next == 0 {
		b.next = b.First
	}
	// Full jitter would sometimes try again at once; keep at least half the backoff.
	d := b.next/2 + rand.N(b.next/2)
	b.next = min(2*b.next, b.Max)
	return Sleep(ctx, d)
}

// Sleep waits for d, or until ctx ends (its error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
