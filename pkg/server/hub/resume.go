package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"roomcast/pkg/server/wsframe"
)

// A member that resumes (JoinHeld) gets the stored messages it missed (its replay, sent
// by the gateway with SendMessage) before any live message: the live messages of its
// room are held meanwhile, then Release queues those the replay did not already have.
// Holding is per member and ends with Release; a room's catch-up backlog (catchup.go) is
// another mechanism.

// heldFrame is a live message held for a resuming member.
type heldFrame struct {
	frame    []byte
	seq      uint64
	accepted int64
}

// ErrClosed is returned by SendMessage once the member's connection is closing.
var ErrClosed = errors.New("connection closed")

// SendMessage queues a chat message frame for this member only (a message of its
// replay), counted as a delivery. Unlike fan-out it waits, up to ctx, while the queue is
// three-quarters full, so a long replay is paced by the client instead of making it a
// slow consumer.
func (m *Member) SendMessage(ctx context.Context, frame []byte, accepted time.Time) error {
	var at int64
	if !accepted.IsZero() {
		at = accepted.UnixNano()
	}
	return m.sendPaced(ctx, frame, at)
}

// sendPaced queues a counted frame once the queue is below three-quarters full.
func (m *Member) sendPaced(ctx context.Context, frame []byte, accepted int64) error {
	for {
		m.mu.Lock()
		if m.closing {
			m.mu.Unlock()
			return ErrClosed
		}
		cfg := m.hub.cfg
		if len(m.pending) < cfg.SendQueueFrames-cfg.SendQueueFrames/4 &&
			m.pendingBytes+len(frame) <= cfg.SendQueueBytes-cfg.SendQueueBytes/4 {
			m.mu.Unlock()
			m.enqueue(frame, true, accepted)
			return nil
		}
		if m.space == nil {
			m.space = make(chan struct{})
		}
		space := m.space
		m.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return fmt.Errorf("waiting for room in the send queue: %w", ctx.Err())
		}
	}
}

// Release ends the hold of a resuming member: live messages held meanwhile are queued
// in order, paced like SendMessage, except those with a seq at or below after (already
// replayed). New live messages keep being held until none is left, so the order is kept.
func (m *Member) Release(ctx context.Context, after uint64) error {
	for {
		m.mu.Lock()
		if len(m.held) == 0 {
			m.holding = false
			m.skipThrough = after
			m.mu.Unlock()
			return nil
		}
		held := m.held
		m.held = nil
		m.mu.Unlock()
		for _, f := range held {
			if f.seq != 0 && f.seq <= after {
				continue
			}
			if err := m.sendPaced(ctx, f.frame, f.accepted); err != nil {
				return err
			}
		}
	}
}

// deliverLive queues a fan-out frame, or holds it while the member's replay runs.
func (m *Member) deliverLive(frame []byte, seq uint64, accepted int64) {
	m.mu.Lock()
	if m.holding && !m.closing {
		if len(m.held) >= m.hub.cfg.HoldFrames {
			m.abortLocked(wsframe.CloseTryAgainLater, "slow consumer: too many messages while resuming")
			return
		}
		m.held = append(m.held, heldFrame{frame: frame, seq: seq, accepted: accepted})
		m.mu.Unlock()
		return
	}
	if m.skipThrough != 0 && seq != 0 {
		if seq <= m.skipThrough {
			m.mu.Unlock() // the replay had it
			return
		}
		m.skipThrough = 0 // live is past the replay: nothing more to skip
	}
	m.mu.Unlock()
	m.enqueue(frame, true, accepted)
}
