package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/backoff"
	"roomcast/pkg/server/wsframe"
)

// A room catches up when its live stream may have missed messages that history holds:
// after a broker reconnect (CatchUp) or when a live message names a predecessor the room
// never saw (a gap). Meanwhile its live messages wait in the catch-up's backlog; the
// catch-up fetches the gap from History, retrying, then delivers it and the backlog.

// catchUp is one room's fill from history in progress. It ends when the room is
// caught up, or is given up (CatchUpTimeout, a full backlog, Close, the caller's
// context), or is dropped because the room's last member left.
type catchUp struct {
	trigger string
	ctx     context.Context // ends when the catch-up must stop retrying
	cancel  context.CancelFunc
	done    chan struct{} // closed when its goroutine has returned

	// Guarded by room.mu.
	backlog  []chat.Message
	attempts int
	judged   bool // the backlog has a new numbered message, which showed whether history is needed
}

// DefaultCatchUpTimeout is Config.CatchUpTimeout's default: longer than a JetStream
// cluster usually takes to elect a new stream leader after losing a node, short enough
// that a room does not stay silent for long when history is really gone (JetStream down,
// core NATS up: live messages then have no seq, and no fetch can succeed).
const DefaultCatchUpTimeout = 15 * time.Second

const (
	// maxBacklog bounds the live messages a room keeps while it catches up.
	maxBacklog = 10000
	// maxGapFetches bounds the catch-ups' History.Replay calls in flight, so that a
	// reconnect with many rooms does not flood a store that is just coming back.
	maxGapFetches = 8
	// A failed attempt is retried after a backoff that doubles from the first to the
	// largest, each with jitter so that replicas and rooms do not retry in step.
	catchUpFirstBackoff = 200 * time.Millisecond
	catchUpMaxBackoff   = 3 * time.Second
)

// triggerResume labels the fills of resumed members (resume.go) in the catch-up metrics.
const triggerResume = "resume"

// errBacklogFull: a room's catch-up took so long that maxBacklog live messages waited.
var errBacklogFull = errors.New("catch-up backlog full")

// errHistoryBehind: a fetch ended before a message that a live message of the room
// names as its predecessor (a store replica that is behind answered); it is retried.
var errHistoryBehind = errors.New("history is behind the live messages")

// CatchUp delivers, room by room, the stored messages that arrived while the broker was
// unreachable: after a reconnect, live delivery resumes with the next message, and what
// was published meanwhile would be lost for this replica's members. Live messages of a
// room wait while its catch-up runs, and those it already delivered are skipped.
//
// The rooms catch up concurrently, each retrying until it has read its gap (or its first
// new live message shows there is none) or gives up (after Config.CatchUpTimeout, when
// its backlog is full, at Close, or when ctx ends);
// CatchUp returns when each room it started has caught up or given up. A room already
// catching up (after a gap) is left to that catch-up.
func (h *Hub) CatchUp(ctx context.Context) {
	if h.cfg.History == nil {
		return
	}
	h.mu.Lock()
	rooms := make([]*room, 0, len(h.rooms))
	for _, r := range h.rooms {
		rooms = append(rooms, r)
	}
	h.mu.Unlock()
	var started []*catchUp
	for _, r := range rooms {
		r.mu.Lock()
		if cu := h.beginCatchUpLocked(ctx, r, "reconnect"); cu != nil {
			started = append(started, cu)
		}
		r.mu.Unlock()
	}
	for _, cu := range started {
		<-cu.done
	}
}

// beginCatchUpLocked starts a catch-up of r in its own goroutine, unless r is already
// catching up, has no position yet, has no members, or the hub is closed; r.mu is held.
// Live messages of the room then wait in the catch-up's backlog, so the subscription's
// goroutine never blocks on the store. The catch-up stops retrying when ctx or the hub
// ends, or after CatchUpTimeout.
func (h *Hub) beginCatchUpLocked(ctx context.Context, r *room, trigger string) *catchUp {
	if r.catchUp != nil || r.sub == nil {
		return nil
	}
	if last, _ := r.position(); last == 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, h.cfg.CatchUpTimeout)
	stop := context.AfterFunc(h.ctx, cancel)
	cu := &catchUp{trigger: trigger, ctx: cctx, done: make(chan struct{}),
		cancel: func() { stop(); cancel() }}
	r.catchUp = cu
	h.catchUps.Add(1)
	go h.catchUpRoom(r, cu)
	return cu
}

// catchUpRoom reads from history what r missed since its position, retrying with
// backoff, then delivers it and what waited.
func (h *Hub) catchUpRoom(r *room, cu *catchUp) {
	defer h.catchUps.Done()
	defer close(cu.done)
	defer cu.cancel()
	h.m.catchUps.WithLabelValues(cu.trigger).Inc()
	b := newBackoff()
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			h.m.catchUpRetries.WithLabelValues(cu.trigger).Inc()
		}
		res, err := h.fetchGap(cu.ctx, r)
		r.mu.Lock()
		if r.catchUp != cu { // ended meanwhile: the room emptied or its backlog filled up
			r.mu.Unlock()
			return
		}
		cu.attempts = attempt
		if err == nil {
			err = behind(r, res, cu.backlog)
		}
		if err == nil || cu.ctx.Err() != nil {
			h.finishLocked(r, cu, res, err)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()

		h.log.Debug("catch-up attempt failed", "room", r.name, "trigger", cu.trigger, "attempts", attempt, "err", err)
		if b.Wait(cu.ctx) != nil {
			r.mu.Lock()
			if r.catchUp == cu {
				h.finishLocked(r, cu, res, err)
			}
			r.mu.Unlock()
			return
		}
	}
}

// fetchGap is one attempt at reading from history what r missed since its position.
func (h *Hub) fetchGap(ctx context.Context, r *room) (chat.Stored, error) {
	last, epoch := r.position()
	return h.readGap(ctx, r.name, last, epoch)
}

// readGap is one attempt at reading from history what room has after seq since, once a
// fetch slot is free. History bounds each of its requests (one sent to a store node that
// died goes unanswered); the read as a whole is not: a long gap on a loaded machine takes
// a while, and retrying it from the start would never finish it.
func (h *Hub) readGap(ctx context.Context, room string, since uint64, epoch string) (chat.Stored, error) {
	select {
	case h.gapFetches <- struct{}{}:
		defer func() { <-h.gapFetches }()
	case <-ctx.Done():
		return chat.Stored{}, fmt.Errorf("waiting to fetch the gap of room %q: %w", room, ctx.Err())
	}
	if err := ctx.Err(); err != nil {
		return chat.Stored{}, fmt.Errorf("waiting to fetch the gap of room %q: %w", room, err)
	}
	return h.cfg.History.ReadSince(ctx, room, since, epoch)
}

// newBackoff paces the attempts of a catch-up or a fill.
func newBackoff() *backoff.Backoff {
	return &backoff.Backoff{First: catchUpFirstBackoff, Max: catchUpMaxBackoff}
}

// startRefill reserves a refill goroutine (Member.refill), which Close waits for; it
// reports false once the hub is closed.
func (h *Hub) startRefill() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.catchUps.Add(1)
	return true
}

// behind returns errHistoryBehind when res stops short of what the live messages in
// backlog show was stored: one of them follows a message that neither r has delivered
// nor res holds. A store replica that has not applied the newest messages yet answers
// like that; a later fetch has them.
func behind(r *room, res chat.Stored, backlog []chat.Message) error {
	last, epoch := r.position()
	for _, m := range res.Messages {
		switch {
		case m.Seq == 0:
		case m.Epoch != epoch:
			last, epoch = m.Seq, m.Epoch
		case m.Seq > last:
			last = m.Seq
		}
	}
	for _, m := range backlog {
		switch {
		case m.Seq == 0:
		case m.Epoch != epoch:
			return nil // a new stream: nothing to compare with
		case m.Seq <= last:
		case m.PrevSeq > last:
			return fmt.Errorf("fetching the gap of room %q: up to seq %d, but live seq %d follows %d: %w",
				r.name, last, m.Seq, m.PrevSeq, errHistoryBehind)
		default:
			last = m.Seq
		}
	}
	return nil
}

// finishLocked ends cu, r's catch-up, and delivers in order: wsframe.Truncated if
// history could not be read (err) or was cut, the fetched messages, then the backlog.
// r.mu is held.
func (h *Hub) finishLocked(r *room, cu *catchUp, res chat.Stored, err error) {
	r.catchUp = nil
	cu.cancel()
	backlog := cu.backlog
	cu.backlog = nil
	switch {
	case err != nil && h.ctx.Err() != nil:
		h.log.Debug("catch-up stopped: the hub is closing", "room", r.name, "trigger", cu.trigger, "attempts", cu.attempts, "err", err)
		h.sendTruncated(r)
	case err != nil:
		h.errs.Count(chat.KindHistory)
		h.log.Warn("catching up a room failed", "room", r.name, "trigger", cu.trigger, "attempts", cu.attempts, "err", err)
		h.sendTruncated(r)
	case res.Truncated:
		h.sendTruncated(r)
	}
	for _, msg := range res.Messages {
		h.fanOutLocked(r, msg)
	}
	for _, msg := range backlog {
		h.fanOutLocked(r, msg)
	}
	if n := len(res.Messages); n > 0 && err == nil {
		h.log.Info("room caught up", "room", r.name, "trigger", cu.trigger, "messages", n, "attempts", cu.attempts)
	}
}

// addToBacklogLocked keeps msg, in order, in the backlog of r's catch-up; r.mu is held.
// When the backlog is full the catch-up is given up rather than a message dropped.
func (h *Hub) addToBacklogLocked(r *room, msg chat.Message) {
	cu := r.catchUp
	if len(cu.backlog) >= maxBacklog {
		h.finishLocked(r, cu, chat.Stored{}, fmt.Errorf("%d live messages waiting: %w", len(cu.backlog), errBacklogFull))
		h.fanOutLocked(r, msg)
		return
	}
	cu.backlog = append(cu.backlog, msg)
	if cu.judged || msg.Seq == 0 {
		return
	}
	last, epoch := r.position()
	if msg.Epoch == epoch && msg.Seq <= last {
		return // delivered already: it says nothing about what is missing
	}
	cu.judged = true
	if msg.Epoch == epoch && msg.PrevSeq <= last {
		// The first new numbered message follows the room's position: nothing was stored
		// meanwhile (typically a reconnect that missed nothing), so history is not needed.
		h.log.Debug("catch-up not needed: the live stream continues", "room", r.name, "trigger", cu.trigger, "attempts", cu.attempts)
		h.finishLocked(r, cu, chat.Stored{}, nil)
	}
}

// gap reports whether msg says the room had a message after the last one delivered here
// (the stream's per-room previous sequence is newer than it).
func (h *Hub) gap(r *room, msg chat.Message) bool {
	if h.cfg.History == nil || msg.Seq == 0 || msg.PrevSeq == 0 {
		return false
	}
	last, epoch := r.position()
	return last > 0 && epoch == msg.Epoch && msg.PrevSeq > last
}

// sendTruncated tells r's members that their room's catch-up may have missed messages;
// r.mu is held.
func (h *Hub) sendTruncated(r *room) {
	for _, m := range r.members {
		m.Send(wsframe.Truncated)
	}
}
