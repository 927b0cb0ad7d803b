package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
	SendQueueFrames int `env:"ROOMCAST_SEND_QUEUE" envDefault:"256" help:"frames queued per connection before it counts as slow"`
	SendQueueBytes  int `env:"ROOMCAST_SEND_QUEUE_BYTES" envDefault:"1048576" help:"bytes queued per connection before it counts as slow"`
	// HoldFrames bounds the live messages held for a resuming member while its history
	// is replayed (default SendQueueFrames); beyond it the member is slow.
	HoldFrames int
	// PingInterval is how often every member is sent PingFrame; 0 disables pings.
	PingInterval time.Duration `env:"ROOMCAST_PING_INTERVAL" envDefault:"25s" help:"keepalive ping period; silent clients are closed after twice that"`
	PingFrame    []byte
	// Encode turns a message into the frame bytes every member of its room receives.
	Encode func(chat.Message) []byte
	// History, when set, lets CatchUp fill the gap of a broker outage.
	History chat.History
	// CatchUpTimeout bounds how long a room keeps retrying to read its gap from History
	// (default DefaultCatchUpTimeout) while its live messages wait; then it gives up: its members get
	// TruncatedFrame and the messages that waited.
	CatchUpTimeout time.Duration `env:"ROOMCAST_CATCHUP_TIMEOUT" envDefault:"15s" help:"how long a room retries reading what it missed from history (after a NATS reconnect or a gap) while its live messages wait, before it sends history_truncated and goes on"`
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
	closed   bool          // no catch-up starts any more (Close)

	ctx      context.Context // ended by Close: catch-ups in progress give up
	cancel   context.CancelFunc
	catchUps sync.WaitGroup // catch-up goroutines; Add under mu while !closed
	replays  chan struct{}  // a slot per History.Replay in flight
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

	// While a catch-up is in progress, live messages wait in its backlog (guarded by mu).
	catchUp *catchUp
}

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
	if cfg.CatchUpTimeout <= 0 {
		cfg.CatchUpTimeout = DefaultCatchUpTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{
		cfg:     cfg,
		broker:  broker,
		log:     log,
		m:       newMetrics(reg),
		rooms:   make(map[string]*room),
		members: make(map[*Member]struct{}),
		ctx:     ctx,
		cancel:  cancel,
		replays: make(chan struct{}, maxReplays),
	}
}

// Close stops the catch-ups in progress (each gives up: its room gets TruncatedFrame and
// what waited) and waits for their goroutines; no catch-up starts afterwards. Call it
// once the members are gone, after CloseAll. It is idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.catchUps.Wait()
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
		if cu := r.catchUp; cu != nil {
			// Nobody is left to catch up for: stop retrying, drop what waited.
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
	h.holdLocked(r, msg)
}

// holdLocked keeps msg, in order, for after r's catch-up; r.mu is held. When the backlog
// is full the catch-up is given up rather than a message dropped.
func (h *Hub) holdLocked(r *room, msg chat.Message) {
	cu := r.catchUp
	if len(cu.backlog) >= maxBacklog {
		h.finishLocked(r, cu, chat.Replayed{}, fmt.Errorf("%d live messages waiting: %w", len(cu.backlog), errBacklogFull))
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
		h.finishLocked(r, cu, chat.Replayed{}, nil)
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

// DefaultCatchUpTimeout is Config.CatchUpTimeout's default: longer than a JetStream
// cluster usually takes to elect a new stream leader after losing a node, short enough
// that a room does not stay silent for long when history is really gone (JetStream down,
// core NATS up: live messages then have no seq, and no replay can succeed).
const DefaultCatchUpTimeout = 15 * time.Second

const (
	// maxBacklog bounds the live messages a room keeps while it catches up.
	maxBacklog = 10000
	// maxReplays bounds the History.Replay calls in flight, so that a reconnect with
	// many rooms does not flood a store that is just coming back.
	maxReplays = 8
	// catchUpAttemptTimeout bounds one Replay (a request may go to a node that died).
	catchUpAttemptTimeout = 5 * time.Second
	// A failed attempt is retried after a backoff that doubles from the first to the
	// largest, each with jitter so that replicas and rooms do not retry in step.
	catchUpFirstBackoff = 200 * time.Millisecond
	catchUpMaxBackoff   = 3 * time.Second
)

// errBacklogFull: a room's catch-up took so long that maxBacklog live messages waited.
var errBacklogFull = errors.New("catch-up backlog full")

// errHistoryBehind: a replay ended before a message that a live message of the room
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
	backoff := catchUpFirstBackoff
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			h.m.catchUpRetries.WithLabelValues(cu.trigger).Inc()
		}
		res, err := h.replay(cu.ctx, r)
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

		// Full jitter would sometimes retry at once; keep at least half the backoff.
		wait := backoff/2 + rand.N(backoff/2)
		backoff = min(2*backoff, catchUpMaxBackoff)
		h.log.Debug("catch-up attempt failed", "room", r.name, "trigger", cu.trigger,
			"attempts", attempt, "retry_in", wait.String(), "err", err)
		if sleep(cu.ctx, wait) != nil {
			r.mu.Lock()
			if r.catchUp == cu {
				h.finishLocked(r, cu, res, err)
			}
			r.mu.Unlock()
			return
		}
	}
}

// replay is one attempt at reading what r missed, when a Replay slot is free.
func (h *Hub) replay(ctx context.Context, r *room) (chat.Replayed, error) {
	select {
	case h.replays <- struct{}{}:
		defer func() { <-h.replays }()
	case <-ctx.Done():
		return chat.Replayed{}, fmt.Errorf("waiting to replay room %q: %w", r.name, ctx.Err())
	}
	if err := ctx.Err(); err != nil {
		return chat.Replayed{}, fmt.Errorf("waiting to replay room %q: %w", r.name, err)
	}
	last, epoch := r.position()
	ctx, cancel := context.WithTimeout(ctx, catchUpAttemptTimeout)
	defer cancel()
	return h.cfg.History.Replay(ctx, r.name, last, epoch)
}

// behind returns errHistoryBehind when res stops short of what the live messages in
// backlog show was stored: one of them follows a message that neither r has delivered
// nor res holds. A store replica that has not applied the newest messages yet answers
// like that; a later replay has them.
func behind(r *room, res chat.Replayed, backlog []chat.Message) error {
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
			return fmt.Errorf("replaying room %q: up to seq %d, but live seq %d follows %d: %w",
				r.name, last, m.Seq, m.PrevSeq, errHistoryBehind)
		default:
			last = m.Seq
		}
	}
	return nil
}

// finishLocked ends cu, r's catch-up, and delivers in order: TruncatedFrame if history
// could not be read (err) or was cut, the replayed messages, then the backlog. r.mu
// is held.
func (h *Hub) finishLocked(r *room, cu *catchUp, res chat.Replayed, err error) {
	r.catchUp = nil
	cu.cancel()
	backlog := cu.backlog
	cu.backlog = nil
	switch {
	case err != nil && h.ctx.Err() != nil:
		h.log.Debug("catch-up stopped: the hub is closing", "room", r.name, "trigger", cu.trigger, "attempts", cu.attempts, "err", err)
		h.sendTruncated(r)
	case err != nil:
		h.CountError(chat.KindHistory)
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

func (h *Hub) sendTruncated(r *room) {
	if h.cfg.TruncatedFrame == nil {
		return
	}
	for _, m := range r.members {
		m.Send(h.cfg.TruncatedFrame)
	}
}

// fanOutLocked delivers msg to r's members unless it was delivered already; r.mu is held
// (for reading at least).
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
