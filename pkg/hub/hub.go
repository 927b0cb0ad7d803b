package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/chat"
)

// WebSocket close codes the hub uses.
const (
	CloseServiceRestart = 1012
	CloseTryAgainLater  = 1013
	CloseInternalError  = 1011
)

// ErrDraining is returned by Join once the replica has begun to drain.
var ErrDraining = errors.New("replica is draining")

// Socket is the transport side of a member.
type Socket interface {
	// WriteFrames writes encoded frames in order, in as few system calls as it can.
	WriteFrames(frames [][]byte) error
	// Close sends a close frame with code and reason, then closes the connection. It is
	// bounded in time even when the peer does not read, and may be called while a
	// WriteFrames is in progress.
	Close(code uint16, reason string)
}

// Config sizes the hub.
type Config struct {
	// SendQueueFrames and SendQueueBytes bound a member's queue; beyond either it is slow.
	SendQueueFrames int
	SendQueueBytes  int
	// HoldFrames bounds the live messages held for a resuming member while its history
	// is replayed (default SendQueueFrames); beyond it the member is slow.
	HoldFrames int
	// PingInterval is how often every member is sent PingFrame; 0 disables pings.
	PingInterval time.Duration
	PingFrame    []byte
	// Encode turns a message into the frame bytes every member of its room receives.
	Encode func(chat.Message) []byte
	// History, when set, lets CatchUp fill the gap of a broker outage.
	History chat.History
	// TruncatedFrame is sent to a room's members when a catch-up may have missed some.
	TruncatedFrame []byte
	// Sleep waits between two batches of closes while draining; tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock used for delivery latency; tests may replace it.
	Now func() time.Time
}

// Hub is one replica's set of rooms and members.
type Hub struct {
	cfg    Config
	broker chat.Broker
	log    *slog.Logger
	m      *metrics

	mu       sync.Mutex
	rooms    map[string]*room
	members  map[*Member]struct{}
	draining bool
	empty    chan struct{} // closed when draining and the last member has left
}

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

	// While catchingUp, live messages wait in backlog (guarded by mu).
	catchingUp bool
	backlog    []chat.Message
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

func (r *room) position() (uint64, string) {
	r.seqMu.Lock()
	defer r.seqMu.Unlock()
	return r.last, r.epoch
}

// New returns a hub that subscribes through broker and registers its metrics with reg.
func New(cfg Config, broker chat.Broker, log *slog.Logger, reg prometheus.Registerer) *Hub {
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.HoldFrames <= 0 {
		cfg.HoldFrames = cfg.SendQueueFrames
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Hub{
		cfg:     cfg,
		broker:  broker,
		log:     log,
		m:       newMetrics(reg),
		rooms:   make(map[string]*room),
		members: make(map[*Member]struct{}),
	}
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

func (h *Hub) join(ctx context.Context, roomName string, held bool) (*Member, error) {
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
	m := &Member{hub: h, room: r, holding: held}
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
	m.mu.Unlock()

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
	if r.catchingUp {
		r.mu.RUnlock()
		r.mu.Lock()
		if r.catchingUp { // still: keep it for after the catch-up, in order
			if len(r.backlog) < maxBacklog {
				r.backlog = append(r.backlog, msg)
			}
			r.mu.Unlock()
			return
		}
		h.fanOutLocked(r, msg)
		r.mu.Unlock()
		return
	}
	if h.gap(r, msg) {
		// A message of this room was stored but never came live (its stream leader died
		// before republishing it): fetch it from history before going on.
		r.mu.RUnlock()
		r.mu.Lock()
		if h.beginCatchUpLocked(r) {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				h.catchUpRoom(ctx, r, "gap")
			}()
		}
		if r.catchingUp && len(r.backlog) < maxBacklog {
			r.backlog = append(r.backlog, msg)
		} else if !r.catchingUp {
			h.fanOutLocked(r, msg)
		}
		r.mu.Unlock()
		return
	}
	if !r.advance(msg.Seq, msg.Epoch) {
		r.mu.RUnlock()
		return
	}
	frame := h.cfg.Encode(msg)
	var accepted int64
	if !msg.Accepted.IsZero() {
		accepted = msg.Accepted.UnixNano()
	}
	for _, m := range r.members {
		m.deliverLive(frame, msg.Seq, accepted)
	}
	r.mu.RUnlock()
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

// maxBacklog bounds the live messages a room keeps while it catches up.
const maxBacklog = 10000

// CatchUp delivers, room by room, the stored messages that arrived while the broker was
// unreachable: after a reconnect, live delivery resumes with the next message, and what
// was published meanwhile would be lost for this replica's members. Live messages of a
// room wait while its catch-up runs, and those it already delivered are skipped.
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
	for _, r := range rooms {
		r.mu.Lock()
		started := h.beginCatchUpLocked(r)
		r.mu.Unlock()
		if started {
			h.catchUpRoom(ctx, r, "reconnect")
		}
	}
}

// beginCatchUpLocked marks r as catching up, unless it is already or has no position
// yet; r.mu is held. Live messages of the room then wait in r.backlog, so the
// subscription's goroutine never blocks on the store.
func (h *Hub) beginCatchUpLocked(r *room) bool {
	if r.catchingUp {
		return false
	}
	if last, _ := r.position(); last == 0 {
		return false
	}
	r.catchingUp = true
	return true
}

// catchUpRoom replays what r missed since its position, then delivers what waited.
func (h *Hub) catchUpRoom(ctx context.Context, r *room, trigger string) {
	last, epoch := r.position()
	h.m.catchUps.WithLabelValues(trigger).Inc()
	var res chat.Replayed
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		res, err = h.cfg.History.Replay(actx, r.name, last, epoch)
		cancel()
		h.log.Debug("catch-up attempt", "room", r.name, "attempt", attempt, "err", err)
		if err == nil || ctx.Err() != nil {
			break
		}
		select { // the store may still be starting after the outage
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	backlog := r.backlog
	r.catchingUp, r.backlog = false, nil
	switch {
	case err != nil:
		h.CountError(chat.KindHistory)
		h.log.Warn("catching up a room failed", "room", r.name, "trigger", trigger, "err", err)
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
	if n := len(res.Messages); n > 0 {
		h.log.Info("room caught up", "room", r.name, "trigger", trigger, "messages", n)
	}
}

func (h *Hub) sendTruncated(r *room) {
	if h.cfg.TruncatedFrame == nil {
		return
	}
	for _, m := range r.members {
		m.Send(h.cfg.TruncatedFrame)
	}
}

// fanOutLocked delivers msg to r's members unless it was delivered already; r.mu is held.
func (h *Hub) fanOutLocked(r *room, msg chat.Message) {
	if !r.advance(msg.Seq, msg.Epoch) {
		return
	}
	frame := h.cfg.Encode(msg)
	var accepted int64
	if !msg.Accepted.IsZero() {
		accepted = msg.Accepted.UnixNano()
	}
	for _, m := range r.members {
		m.deliverLive(frame, msg.Seq, accepted)
	}
}

// CountError counts one error of kind in roomcast_errors_total.
func (h *Hub) CountError(kind chat.ErrorKind) { h.m.errors.WithLabelValues(string(kind)).Inc() }

// Len returns the number of members, attached or joining.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.members)
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

// Run sends a ping to every attached member each PingInterval until ctx ends.
func (h *Hub) Run(ctx context.Context) {
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
				m.enqueue(h.cfg.PingFrame, false, 0)
			}
		}
	}
}

func (h *Hub) snapshot() []*Member {
	h.mu.Lock()
	defer h.mu.Unlock()
	all := make([]*Member, 0, len(h.members))
	for m := range h.members {
		all = append(all, m)
	}
	return all
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

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
