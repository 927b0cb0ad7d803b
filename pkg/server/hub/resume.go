package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/wsframe"
)

// A member that resumes (JoinHeld) gets the stored messages it missed (its replay, sent
// by the gateway with SendMessage) before any live message: the live messages of its
// room are held meanwhile, then Release queues those the replay did not already have.
// Holding is per member and ends with Release; a room's catch-up backlog (catchup.go) is
// another mechanism.
//
// The replay reads the stream up to some seq, and the live subscription was made just
// before: in a NATS cluster the subscription's interest reaches the stream leader's server
// a moment later, so a message stored after the replay's read can be republished before
// it and never come live on this replica. When the room is new here (its first member
// is resuming), nothing else notices: the room's own gap check needs a position it does
// not have yet. So a resuming member checks the first live message beyond its replay
// (held, or the first after the hold): when its predecessor in the stream is newer than
// what the replay read, the member holds again, reads the missing messages from history
// (fill) and goes on.

// heldFrame is a live message held for a resuming member.
type heldFrame struct {
	frame    []byte
	seq      uint64
	prevSeq  uint64
	epoch    string
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
		if m.pendingFrames < cfg.SendQueueFrames-cfg.SendQueueFrames/4 &&
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
// epoch is the stream's epoch that after belongs to ("" when unknown, such as after a
// failed replay): with it, a held message that follows a stored message the member
// never got makes Release read the missing ones from history first.
func (m *Member) Release(ctx context.Context, after uint64, epoch string) error {
	for {
		m.mu.Lock()
		if len(m.held) == 0 {
			m.holding = false
			m.skipThrough, m.skipEpoch = after, epoch
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
			if m.missed(after, epoch, f) {
				var err error
				if after, err = m.fill(ctx, after, epoch, f.prevSeq); err != nil {
					return err
				}
				if f.seq <= after {
					continue
				}
			}
			if err := m.sendPaced(ctx, f.frame, f.accepted); err != nil {
				return err
			}
			if f.seq != 0 && f.epoch == epoch {
				after = f.seq
			}
		}
	}
}

// missed reports whether the live message f shows that the member, which has the room's
// messages through seq after of epoch, lacks a stored one: f's predecessor in the stream.
func (m *Member) missed(after uint64, epoch string, f heldFrame) bool {
	return m.hub.cfg.History != nil && epoch != "" && after > 0 &&
		f.epoch == epoch && f.seq > after && f.prevSeq > after
}

// fill sends the member, paced, what history holds after seq after: the messages it
// missed, through at least seq through. It returns the seq it now has everything
// through. It retries while history cannot be read or is behind, for up to
// CatchUpTimeout; then the member gets wsframe.Truncated and goes on with the live
// messages, as a room's members do when its catch-up gives up. Only a send error (the
// member closed, or did not read in time) is returned.
func (m *Member) fill(ctx context.Context, after uint64, epoch string, through uint64) (uint64, error) {
	h := m.hub
	h.m.catchUps.WithLabelValues(triggerResume).Inc()
	fctx, cancel := context.WithTimeout(ctx, h.cfg.CatchUpTimeout)
	defer cancel()
	b := newBackoff()
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			h.m.catchUpRetries.WithLabelValues(triggerResume).Inc()
		}
		res, err := h.readGap(fctx, m.room.name, after, epoch)
		switch {
		case err != nil:
		case res.Epoch != epoch:
			// The stream was made anew: its seqs say nothing of what the member has.
			m.Send(wsframe.Truncated)
			return after, nil
		case res.Last < through && !res.Truncated:
			err = fmt.Errorf("reading what a resumed member of room %q missed: up to seq %d, but live messages follow %d: %w",
				m.room.name, res.Last, through, errHistoryBehind)
		default:
			if res.Truncated {
				m.Send(wsframe.Truncated)
			}
			for _, msg := range res.Messages {
				if msg.Seq <= after {
					continue
				}
				if err := m.SendMessage(ctx, wsframe.EncodeMessage(msg), msg.Accepted); err != nil {
					return after, err
				}
				after = msg.Seq
			}
			h.log.Debug("resumed member filled from history", "room", m.room.name, "messages", len(res.Messages), "attempts", attempt)
			return max(after, res.Last), nil
		}
		if b.Wait(fctx) != nil {
			h.errs.Count(chat.KindHistory)
			h.log.Warn("filling a resumed member from history failed", "room", m.room.name, "attempts", attempt, "err", err)
			m.Send(wsframe.Truncated)
			return after, nil
		}
	}
}

// refill is fill for a member whose hold has ended: it runs in its own goroutine while
// the member holds its live messages again, then releases them.
func (m *Member) refill(after uint64, epoch string) {
	defer m.hub.catchUps.Done()
	ctx, cancel := context.WithTimeout(m.hub.ctx, 2*m.hub.cfg.CatchUpTimeout)
	defer cancel()
	if err := m.Release(ctx, after, epoch); err != nil && !errors.Is(err, ErrClosed) {
		m.hub.errs.Count(chat.KindSlowConsumer)
		m.Close(wsframe.CloseTryAgainLater, "slow consumer: backlog after resume not read")
	}
}

// deliverLive queues a fan-out frame, or holds it while the member's replay runs.
func (m *Member) deliverLive(frame []byte, msg *chat.Message, accepted int64) {
	f := heldFrame{frame: frame, seq: msg.Seq, prevSeq: msg.PrevSeq, epoch: msg.Epoch, accepted: accepted}
	m.mu.Lock()
	if m.holding && !m.closing {
		m.holdLocked(f)
		return
	}
	if m.skipThrough != 0 && f.seq != 0 {
		if f.seq <= m.skipThrough {
			m.mu.Unlock() // the replay had it
			return
		}
		after, epoch := m.skipThrough, m.skipEpoch
		m.skipThrough = 0 // live is past the replay: nothing more to skip
		if m.missed(after, epoch, f) && !m.closing && m.hub.startRefill() {
			m.holding = true
			m.holdLocked(f)
			go m.refill(after, epoch)
			return
		}
	}
	m.mu.Unlock()
	m.enqueue(frame, true, accepted)
}

// holdLocked keeps f until Release, or closes a member that has too many held. It
// unlocks m.mu.
func (m *Member) holdLocked(f heldFrame) {
	if len(m.held) >= m.hub.cfg.HoldFrames {
		m.abortLocked(wsframe.CloseTryAgainLater, "slow consumer: too many messages while resuming")
		return
	}
	m.held = append(m.held, f)
	m.mu.Unlock()
}
