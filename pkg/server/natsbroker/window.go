package natsbroker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
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
	room string
	data []byte
	done func(error)
	at   int64 // Unix ns when it was sent
}

// window is a replica's set of publishes awaiting JetStream's acknowledgement.
type window struct {
	h      *history
	prefix string // the reply subject is prefix + the publish's number

	mu      sync.Mutex
	next    uint64
	pending map[uint64]pendingPublish
	sub     *nats.Subscription

	quit chan struct{}
	done chan struct{}
}

func newWindow(h *history) (*window, error) {
	w := &window{
		h: h, prefix: h.b.nc.NewRespInbox() + ".",
		pending: make(map[uint64]pendingPublish),
		quit:    make(chan struct{}), done: make(chan struct{}),
	}
	sub, err := h.b.nc.Subscribe(w.prefix+"*", w.answer)
	if err != nil {
		return nil, fmt.Errorf("subscribing to the history stream's acknowledgements: %w", err)
	}
	w.sub = sub
	go w.sweep()
	return w, nil
}

// publish sends data to the room's stream subject; done is called once, from another
// goroutine, with nil when it is stored (or, with no stream, sent live) or with an error
// wrapping chat.ErrUnavailable. An error returned here means done will not be called.
func (w *window) publish(room string, data []byte, done func(error)) error {
	w.mu.Lock()
	if len(w.pending) >= maxPendingPublishes {
		w.mu.Unlock()
		w.h.errors.WithLabelValues("publish").Inc()
		return fmt.Errorf("publishing to room %q: %w: %w", room, chat.ErrUnavailable, errWindowFull)
	}
	w.next++
	id := w.next
	w.pending[id] = pendingPublish{room: room, data: data, done: done, at: time.Now().UnixNano()}
	w.mu.Unlock()
	if err := w.h.b.nc.PublishRequest(SubjectPrefix+room, w.prefix+strconv.FormatUint(id, 10), data); err != nil {
		w.take(id)
		w.h.errors.WithLabelValues("publish").Inc()
		return fmt.Errorf("publishing to room %q: %w: %w", room, chat.ErrUnavailable, err)
	}
	return nil
}

func (w *window) take(id uint64) (pendingPublish, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.pending[id]
	if ok {
		delete(w.pending, id)
	}
	return p, ok
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
	w.mu.Lock()
	for id, p := range w.pending {
		if before == 0 || p.at < before {
			late = append(late, p)
			delete(w.pending, id)
		}
	}
	w.mu.Unlock()
	for _, p := range late {
		w.h.errors.WithLabelValues("publish").Inc()
		p.done(fmt.Errorf("publishing to room %q: %w: %w", p.room, chat.ErrUnavailable, cause))
	}
}

func (w *window) stop() {
	close(w.quit)
	<-w.done
}
