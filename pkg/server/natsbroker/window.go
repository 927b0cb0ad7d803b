package natsbroker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"roomcast/pkg/chat"
)

// A publish to the history stream is asynchronous: the message goes out with a reply
// subject of this replica's acknowledgement inbox and the sender's goroutine moves on;
// JetStream's answer (or its absence) is matched to it later. The window of unanswered
// publishes is bounded: when it is full, or an answer does not come within
// publishTimeout, or it is an error, the sender is told (chat.ErrUnavailable), so no
// message is dropped silently. This replaces a blocking round trip per message on the
// client's read goroutine, and a context, a timer and a reply subscription per message,
// with one subscription, one map entry and one sweeper per replica.
//
// When the sender's replica is subscribed to the room, which it is while the sender is
// a member, JetStream is not asked for an acknowledgement at all: the stream
// republishes every stored message on the room's live subject, so the copy this replica
// receives anyway says the message is stored, and is matched to its publish by the
// message's ID. That saves the acknowledgement's encoding, routing and decoding, one
// message per publish for the server and the replica. A copy that does not come within
// publishTimeout (no stream leader, the stream deleted) fails the publish as an
// unanswered acknowledgement does. A room's subscription that ends while such publishes
// are pending is kept (delivering nothing) until they are answered, so that the end of
// a connection does not turn its last stored messages into failures.

// maxPendingPublishes bounds the window: at the rates one replica sustains, a publish
// is answered in about a millisecond, so this is seconds of stall before senders are
// refused.
const maxPendingPublishes = 8192

// sweepEvery is how often unanswered publishes are checked against publishTimeout.
const sweepEvery = 250 * time.Millisecond

// errWindowFull is returned when maxPendingPublishes are unanswered.
var errWindowFull = errors.New("too many publishes awaiting the history stream's acknowledgement")

// errNoAck is given to the sender of a publish not answered within publishTimeout: it
// may or may not be stored.
var errNoAck = errors.New("no acknowledgement from the history stream in time")

type pendingPublish struct {
	room  string
	data  []byte
	done  func(error)
	at    int64  // Unix ns when it was sent
	msgID string // set when the republished copy is the acknowledgement
}

// window is a replica's set of publishes awaiting JetStream's acknowledgement.
type window struct {
	h      *history
	prefix string // the reply subject is prefix + the publish's number

	mu      sync.Mutex
	next    uint64
	pending map[uint64]pendingPublish
	sub     *nats.Subscription
	// byCopy finds the publishes their republished copy acknowledges by message ID;
	// copies counts them, so that replicas with none skip the lock on every copy.
	byCopy map[string]uint64
	copies atomic.Int64
	// live counts this broker's subscriptions per room; perRoom its publishes awaiting
	// their copy; parked the subscriptions ended while some were.
	live    map[string]int
	perRoom map[string]int
	parked  map[string][]*nats.Subscription
	// noCopyAcks asks JetStream for every acknowledgement (tests and benchmarks).
	noCopyAcks bool

	// batch sends the publishes when the stream keeps batches.
	batch *batcher

	quit chan struct{}
	done chan struct{}
}

func newWindow(h *history) (*window, error) {
	w := &window{
		h: h, prefix: h.b.nc.NewRespInbox() + ".",
		pending: make(map[uint64]pendingPublish), byCopy: make(map[string]uint64),
		live: make(map[string]int), perRoom: make(map[string]int), parked: make(map[string][]*nats.Subscription),
		quit: make(chan struct{}), done: make(chan struct{}),
	}
	sub, err := h.b.nc.Subscribe(w.prefix+"*", w.answer)
	if err != nil {
		return nil, fmt.Errorf("subscribing to the history stream's acknowledgements: %w", err)
	}
	w.sub = sub
	w.batch = newBatcher(w)
	go w.sweep()
	return w, nil
}

// publish sends data, the envelope of the message msgID, to the room's stream subject;
// done is called once, from another goroutine, with nil when it is stored (or, with no
// stream, sent live) or with an error wrapping chat.ErrUnavailable. An error returned
// here means done will not be called.
func (w *window) publish(room, msgID string, data []byte, done func(error)) error {
	w.mu.Lock()
	if len(w.pending) >= maxPendingPublishes {
		w.mu.Unlock()
		w.h.errors.WithLabelValues("publish").Inc()
		return fmt.Errorf("publishing to room %q: %w: %w", room, chat.ErrUnavailable, errWindowFull)
	}
	sh := w.h.shardOf(room)
	w.next++
	id := w.next
	p := pendingPublish{room: room, data: data, done: done, at: time.Now().UnixNano()}
	// Without a known stream, JetStream's answer (no responders) says at once what the
	// copy's absence would only say after publishTimeout.
	if msgID != "" && w.live[room] > 0 && w.byCopy[msgID] == 0 && !w.noCopyAcks && sh.known.Load() {
		p.msgID = msgID
		w.byCopy[msgID] = id
		w.perRoom[room]++
		w.copies.Add(1)
	}
	w.pending[id] = p
	w.mu.Unlock()
	if sh.batched.Load() {
		w.batch.add(room, queued{id: id, data: data, copy: p.msgID != ""})
		return nil
	}
	var err error
	if p.msgID != "" {
		err = w.h.b.nc.Publish(sh.subject+room, data)
	} else {
		err = w.h.b.nc.PublishRequest(sh.subject+room, w.replySubject(id), data)
	}
	if err != nil {
		w.take(id)
		w.h.errors.WithLabelValues("publish").Inc()
		return fmt.Errorf("publishing to room %q: %w: %w", room, chat.ErrUnavailable, err)
	}
	return nil
}

func (w *window) replySubject(id uint64) string { return w.prefix + strconv.FormatUint(id, 10) }

// sent is the batcher's report of publish id: a failed send fails it at once.
func (w *window) sent(room string, id uint64, err error) {
	if err == nil {
		return
	}
	p, ok := w.take(id)
	if !ok {
		return // failed already (the window's stop)
	}
	w.h.errors.WithLabelValues("publish").Inc()
	p.done(fmt.Errorf("publishing to room %q: %w: %w", room, chat.ErrUnavailable, err))
}

func (w *window) take(id uint64) (pendingPublish, bool) {
	w.mu.Lock()
	p, ok := w.pending[id]
	var unpark []*nats.Subscription
	if ok {
		unpark = w.removeLocked(id, p)
	}
	w.mu.Unlock()
	unsubscribe(unpark)
	return p, ok
}

// removeLocked forgets the pending publish id and returns the parked subscriptions
// that waited only for it.
func (w *window) removeLocked(id uint64, p pendingPublish) []*nats.Subscription {
	delete(w.pending, id)
	if p.msgID == "" {
		return nil
	}
	delete(w.byCopy, p.msgID)
	w.copies.Add(-1)
	if w.perRoom[p.room]--; w.perRoom[p.room] > 0 {
		return nil
	}
	delete(w.perRoom, p.room)
	unpark := w.parked[p.room]
	delete(w.parked, p.room)
	return unpark
}

func unsubscribe(subs []*nats.Subscription) {
	for _, s := range subs {
		_ = s.Unsubscribe() // a closed connection has dropped it anyway
	}
}

// copied answers the publish of msgID, if this replica is waiting for its copy: it is
// stored.
func (w *window) copied(msgID string) {
	if w.copies.Load() == 0 {
		return
	}
	w.mu.Lock()
	id, ok := w.byCopy[msgID]
	var p pendingPublish
	var unpark []*nats.Subscription
	if ok {
		p = w.pending[id]
		unpark = w.removeLocked(id, p)
	}
	w.mu.Unlock()
	unsubscribe(unpark)
	if ok {
		p.done(nil)
	}
}

// subscribed counts a live subscription to room, made after the server confirmed it:
// the subscriptions parked for the room are no longer needed for its copies.
func (w *window) subscribed(room string) {
	w.mu.Lock()
	w.live[room]++
	unpark := w.parked[room]
	delete(w.parked, room)
	w.mu.Unlock()
	unsubscribe(unpark)
}

// unsubscribed ends sub, one of room's live subscriptions, or parks it while publishes
// to room await their copy.
func (w *window) unsubscribed(room string, sub *nats.Subscription) error {
	w.mu.Lock()
	if w.live[room]--; w.live[room] <= 0 {
		delete(w.live, room)
	}
	if w.perRoom[room] > 0 {
		w.parked[room] = append(w.parked[room], sub)
		w.mu.Unlock()
		return nil
	}
	w.mu.Unlock()
	return sub.Unsubscribe()
}

var errorField = []byte(`"error"`)

// answer matches JetStream's answer to its publish. No responders from a server without
// JetStream sends the message live, unnumbered, so rooms keep working with history
// unavailable. From a server with JetStream it means the stream has no leader for now
// (an election, or the stream deleted and not yet made again): the sender is told
// unavailable rather than the message sent live unstored, which a deployment's NATS
// permissions refuse anyway (only the stream may publish on the live subjects), and
// which would leave a gap no resume can fill.
func (w *window) answer(m *nats.Msg) {
	id, err := strconv.ParseUint(m.Subject[len(w.prefix):], 10, 64)
	if err != nil {
		return
	}
	p, ok := w.take(id)
	if !ok {
		return // timed out already: the sender was told
	}
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		w.h.errors.WithLabelValues("publish").Inc()
		w.h.kickRefresh()
		if js, _ := w.h.b.nc.ConnectedServerJetStream(); js {
			p.done(fmt.Errorf("publishing to room %q: %w: the history stream has no leader", p.room, chat.ErrUnavailable))
			return
		}
		if err := w.h.b.nc.Publish(LivePrefix+p.room, p.data); err != nil {
			p.done(fmt.Errorf("publishing to room %q: %w: %w", p.room, chat.ErrUnavailable, err))
			return
		}
		p.done(nil)
		return
	}
	if bytes.Contains(m.Data, errorField) {
		var ack struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if json.Unmarshal(m.Data, &ack) == nil && ack.Error != nil {
			w.h.errors.WithLabelValues("publish").Inc()
			p.done(fmt.Errorf("publishing to room %q: %w: %s", p.room, chat.ErrUnavailable, ack.Error.Description))
			return
		}
	}
	p.done(nil)
}

// sweep fails the publishes unanswered for publishTimeout.
func (w *window) sweep() {
	defer close(w.done)
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			w.failAll(errNoAck, 0)
			return
		case now := <-t.C:
			w.failAll(errNoAck, now.Add(-publishTimeout).UnixNano())
		}
	}
}

// failAll fails the publishes sent before the Unix ns time before (all if 0).
func (w *window) failAll(cause error, before int64) {
	var late []pendingPublish
	var unpark []*nats.Subscription
	w.mu.Lock()
	for id, p := range w.pending {
		if before == 0 || p.at < before {
			late = append(late, p)
			unpark = append(unpark, w.removeLocked(id, p)...)
		}
	}
	w.mu.Unlock()
	unsubscribe(unpark)
	if len(late) > 0 {
		// No answer may mean no stream: look for it again rather than in 10 s.
		w.h.kickRefresh()
	}
	for _, p := range late {
		w.h.errors.WithLabelValues("publish").Inc()
		p.done(fmt.Errorf("publishing to room %q: %w: %w", p.room, chat.ErrUnavailable, cause))
	}
}

func (w *window) stop() {
	w.batch.stop()
	close(w.quit)
	<-w.done
}
