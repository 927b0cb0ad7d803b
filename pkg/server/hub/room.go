package hub

import (
	"context"
	"fmt"
	"sync"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/wsframe"
)

// room is one room with local members: its broker subscription, its members (the fan-out
// list) and its position in the room's stream.
type room struct {
	name string
	refs int // members and joins in progress; guarded by Hub.mu

	mu      sync.RWMutex
	sub     chat.Subscription
	gen     uint64 // which subscription's messages are current
	members []*Member

	// The newest numbered message delivered, so that a catch-up after a broker outage
	// knows where to start and live messages it already delivered are not repeated.
	seqMu sync.Mutex
	last  uint64
	epoch string

	// While a catch-up is in progress, live messages wait in its backlog (guarded by mu);
	// see catchup.go.
	catchUp *catchUp
}

// advance records seq/epoch as delivered; it reports false for a message already
// delivered (by a catch-up). A new epoch starts over.
func (r *room) advance(seq uint64, epoch string) bool {
	if seq == 0 {
		return true
	}
	r.seqMu.Lock()
	defer r.seqMu.Unlock()
	if epoch == r.epoch && seq <= r.last {
		return false
	}
	r.last, r.epoch = seq, epoch
	return true
}

// position is the newest numbered message delivered: where a catch-up starts.
func (r *room) position() (uint64, string) {
	r.seqMu.Lock()
	defer r.seqMu.Unlock()
	return r.last, r.epoch
}

// Join adds a member to room, subscribing the room on the broker first if it is the
// room's first local member. Once Join returns, the member is queued every message
// published to the room; frames wait in its queue until Attach.
func (h *Hub) Join(ctx context.Context, roomName string) (*Member, error) {
	return h.join(ctx, roomName, false)
}

// JoinHeld is Join for a member that resumes: live messages are held, not queued, until
// Release, so that its history can be replayed first.
func (h *Hub) JoinHeld(ctx context.Context, roomName string) (*Member, error) {
	return h.join(ctx, roomName, true)
}

func (h *Hub) join(ctx context.Context, roomName string, hold bool) (*Member, error) {
	h.mu.Lock()
	if h.draining {
		h.mu.Unlock()
		return nil, ErrDraining
	}
	r := h.rooms[roomName]
	if r == nil {
		r = &room{name: roomName}
		h.rooms[roomName] = r
	}
	r.refs++
	m := &Member{hub: h, room: r, holding: hold}
	h.members[m] = struct{}{}
	h.mu.Unlock()

	r.mu.Lock()
	if r.sub == nil {
		r.gen++
		gen := r.gen
		sub, err := h.broker.Subscribe(ctx, roomName, func(msg chat.Message) { h.deliver(r, gen, msg) })
		if err != nil {
			r.mu.Unlock()
			h.forget(m)
			return nil, fmt.Errorf("joining room %q: %w", roomName, err)
		}
		r.sub = sub
		h.m.roomsActive.Inc()
	}
	m.index = len(r.members)
	r.members = append(r.members, m)
	r.mu.Unlock()
	return m, nil
}

// Leave removes m from its room (unsubscribing the room when it was the last local
// member) and from the hub. The transport calls it once the connection has ended; it
// is idempotent.
func (h *Hub) Leave(m *Member) {
	m.mu.Lock()
	if m.left {
		m.mu.Unlock()
		return
	}
	m.left, m.closing, m.closeSent = true, true, true
	m.pending = nil
	attached := m.socket != nil
	onLeave := m.onLeave
	m.onLeave = nil
	m.mu.Unlock()
	if onLeave != nil {
		onLeave()
	}

	r := m.room
	r.mu.Lock()
	last := len(r.members) - 1
	if m.index <= last && r.members[m.index] == m {
		r.members[m.index] = r.members[last]
		r.members[m.index].index = m.index
		r.members[last] = nil
		r.members = r.members[:last]
	}
	var sub chat.Subscription
	if len(r.members) == 0 && r.sub != nil {
		sub, r.sub = r.sub, nil
		r.gen++ // messages still in flight on the old subscription are dropped
		if cu := r.catchUp; cu != nil {
			// Nobody is left to catch up for: stop retrying, drop the backlog.
			r.catchUp = nil
			cu.cancel()
		}
	}
	r.mu.Unlock()
	if sub != nil {
		h.m.roomsActive.Dec()
		if err := sub.Unsubscribe(); err != nil {
			h.log.Warn("unsubscribing room", "room", r.name, "err", err)
		}
	}
	if attached {
		h.m.connectionsActive.Dec()
	}
	h.forget(m)
}

// forget drops m from the hub's bookkeeping and its room's reference count.
func (h *Hub) forget(m *Member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.members, m)
	m.room.refs--
	if m.room.refs == 0 {
		delete(h.rooms, m.room.name)
	}
	if h.draining && len(h.members) == 0 && h.empty != nil {
		close(h.empty)
		h.empty = nil
	}
}

// deliver queues msg, encoded once, for every member of r. It runs on the broker's
// goroutine for the subscription gen.
func (h *Hub) deliver(r *room, gen uint64, msg chat.Message) {
	r.mu.RLock()
	if r.gen != gen {
		r.mu.RUnlock()
		return
	}
	if r.catchUp == nil && !h.gap(r, msg) {
		h.fanOutLocked(r, msg)
		r.mu.RUnlock()
		return
	}
	r.mu.RUnlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != gen {
		return
	}
	if r.catchUp == nil && h.gap(r, msg) {
		// A message of this room was stored but never came live (its stream leader died
		// before republishing it): fetch it from history before going on.
		h.beginCatchUpLocked(h.ctx, r, "gap")
	}
	if r.catchUp == nil {
		h.fanOutLocked(r, msg)
		return
	}
	h.addToBacklogLocked(r, msg)
}

// fanOutLocked delivers msg to r's members unless it was delivered already; r.mu is held
// (for reading at least).
func (h *Hub) fanOutLocked(r *room, msg chat.Message) {
	if !r.advance(msg.Seq, msg.Epoch) {
		return
	}
	frame := wsframe.EncodeMessage(msg)
	var accepted int64
	if !msg.Accepted.IsZero() {
		accepted = msg.Accepted.UnixNano()
	}
	for _, m := range r.members {
		m.deliverLive(frame, &msg, accepted)
	}
}

// RoomSize returns the number of local members of room.
func (h *Hub) RoomSize(room string) int {
	h.mu.Lock()
	r := h.rooms[room]
	h.mu.Unlock()
	if r == nil {
		return 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.members)
}
