// Package natsbroker is the chat.Broker on NATS: one subject per room
// (roomcast.room.<room>), one subscription per room with local members, and a versioned
// envelope so that two releases can share a room.
//
// The connection retries forever, before the first connect too, so a replica can start
// before NATS and survives NATS restarts. While disconnected, Publish fails with
// chat.ErrUnavailable instead of buffering: a message is either on NATS or the sender is
// told. A Broker is safe for concurrent use.
package natsbroker

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/chat"
)

// SubjectPrefix is prepended to a room name to form the subject messages are published
// on. With history off, replicas also subscribe to it.
const SubjectPrefix = "roomcast.room."

// LivePrefix is prepended to a room name to form the subject the history stream
// republishes each stored message on, with its stream sequence; with history on,
// replicas subscribe to it.
const LivePrefix = "roomcast.live."

// Broker is a chat.Broker backed by one NATS connection.
type Broker struct {
	nc     *nats.Conn
	log    *slog.Logger
	closed chan struct{}
	hist   *history // nil when history is off

	reconnectHook atomic.Pointer[func()]
	// resyncing is set from a disconnect until the server has answered a round trip on
	// the new connection: only then are the resent subscriptions known to it, so a
	// replica that says it is ready also receives what other replicas publish.
	resyncing atomic.Bool

	connected    prometheus.Gauge
	disconnects  prometheus.Counter
	reconnectErr prometheus.Counter
	asyncErrors  *prometheus.CounterVec
	decodeErrors prometheus.Counter
}

// OnReconnect sets a function run (in its own goroutine) after every reconnect.
func (b *Broker) OnReconnect(fn func()) { b.reconnectHook.Store(&fn) }

// History returns the room history, or nil when history is off.
func (b *Broker) History() chat.History {
	if b.hist == nil {
		return nil
	}
	return b.hist
}

// Ready returns nil while connected, else an error wrapping chat.ErrUnavailable.
func (b *Broker) Ready() error {
	if b.nc.IsConnected() {
		if b.resyncing.Load() {
			return fmt.Errorf("%w: NATS reconnected, subscriptions not yet confirmed", chat.ErrUnavailable)
		}
		return nil
	}
	return fmt.Errorf("%w: NATS connection %s", chat.ErrUnavailable, b.nc.Status())
}

// Publish puts msg on its room's subject and waits, up to ctx, for it to be there: stored
// by JetStream (acknowledged) when history is on; handed to core NATS otherwise.
func (b *Broker) Publish(ctx context.Context, msg chat.Message) error {
	res := make(chan error, 1)
	if err := b.PublishAsync(msg, func(err error) { res <- err }); err != nil {
		return err
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return fmt.Errorf("publishing to room %q: %w: %w", msg.Room, chat.ErrUnavailable, ctx.Err())
	}
}

// PublishAsync is Publish without the wait: an error returned means msg was not sent;
// otherwise done is called exactly once, perhaps before PublishAsync returns, with nil
// once msg is stored (history on) or sent (history off), or with an error wrapping
// chat.ErrUnavailable when it was refused or not acknowledged within publishTimeout (it
// may or may not be stored). Messages of one Broker to one room keep their order.
func (b *Broker) PublishAsync(msg chat.Message, done func(error)) error {
	if !b.nc.IsConnected() {
		return fmt.Errorf("publishing to room %q: %w", msg.Room, chat.ErrUnavailable)
	}
	if b.hist != nil {
		return b.hist.win.publish(msg.Room, msg.ID, encode(msg), done)
	}
	if err := b.nc.Publish(SubjectPrefix+msg.Room, encode(msg)); err != nil {
		return fmt.Errorf("publishing to room %q: %w: %w", msg.Room, chat.ErrUnavailable, err)
	}
	done(nil)
	return nil
}

// Subscribe registers interest in room and returns once the NATS server has it (with
// history on in a NATS cluster: once the stream's leader has it).
func (b *Broker) Subscribe(ctx context.Context, room string, deliver func(chat.Message)) (chat.Subscription, error) {
	if !b.nc.IsConnected() {
		return nil, fmt.Errorf("subscribing to room %q: %w", room, chat.ErrUnavailable)
	}
	subject, handler := SubjectPrefix+room, b.liveHandler(deliver)
	var live *liveSubscription
	if b.hist != nil {
		live = &liveSubscription{h: b.hist, room: room}
		subject, handler = LivePrefix+room, b.hist.liveHandler(live, deliver)
	}
	sub, err := b.nc.Subscribe(subject, handler)
	if err != nil {
		return nil, fmt.Errorf("subscribing to room %q: %w", room, err)
	}
	// The flush round trip is what makes "subscribed" true on the server, so that a
	// member never misses a message published after its upgrade was answered.
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if err := b.nc.FlushWithContext(ctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribing to room %q: %w: %w", room, chat.ErrUnavailable, err)
	}
	if live == nil {
		return sub, nil
	}
	live.sub = sub
	// Copies answer this replica's publishes to the room once the leader sends them here.
	b.hist.leaderHasInterest(ctx, room)
	b.hist.win.subscribed(room)
	return live, nil
}

func (b *Broker) liveHandler(deliver func(chat.Message)) nats.MsgHandler {
	return func(m *nats.Msg) {
		msg, err := decode(m.Data)
		if err != nil {
			b.decodeErrors.Inc()
			b.log.Warn("dropping NATS message that is not a roomcast envelope", "subject", m.Subject, "err", err)
			return
		}
		deliver(msg)
	}
}

// Drain lets in-flight messages finish, then closes the connection; it returns when
// closed or when ctx ends, in which case the connection is closed at once.
func (b *Broker) Drain(ctx context.Context) error {
	b.hist.stop()
	if b.nc.IsClosed() {
		return nil
	}
	if err := b.nc.Drain(); err != nil {
		b.nc.Close()
		return fmt.Errorf("draining NATS connection: %w", err)
	}
	select {
	case <-b.closed:
		return nil
	case <-ctx.Done():
		b.nc.Close()
		return fmt.Errorf("draining NATS connection: %w", ctx.Err())
	}
}

// Close closes the connection at once.
func (b *Broker) Close() {
	b.hist.stop()
	b.nc.Close()
}
