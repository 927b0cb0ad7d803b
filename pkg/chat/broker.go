package chat

import (
	"context"
	"errors"
)

// ErrUnavailable is returned when the broker has no connection, so a message cannot be
// sent now. Callers tell the client instead of dropping the message silently.
var ErrUnavailable = errors.New("broker unavailable")

// Broker carries messages between the replicas that serve a room.
type Broker interface {
	// Publish hands msg to every replica subscribed to msg.Room, this one included.
	// It returns an error wrapping ErrUnavailable when there is no broker connection.
	Publish(ctx context.Context, msg Message) error
	// Subscribe starts delivering the messages of room to deliver, in publish order, from
	// a single goroutine per subscription. It returns once the broker has registered the
	// interest, so a message published after Subscribe returns is delivered.
	Subscribe(ctx context.Context, room string, deliver func(Message)) (Subscription, error)
	// Ready returns nil while messages can be sent, or why not.
	Ready() error
}

// Subscription is one room's interest registered with a Broker.
type Subscription interface {
	// Unsubscribe stops delivery; deliver is not called after it returns.
	Unsubscribe() error
}

// ErrHistoryUnavailable is returned when the history store cannot be reached; live
// messages still flow.
var ErrHistoryUnavailable = errors.New("history unavailable")

// ErrHistoryTemporary marks an ErrHistoryUnavailable that passes within seconds: a read
// that went unanswered (sent to a store node that died), or the store being found again
// (an election). A caller with time left may read again.
var ErrHistoryTemporary = errors.New("for now")

// History is the store of each room's recent messages, for clients that resume.
type History interface {
	// ReadSince returns, in seq order, the stored messages of room with a seq above
	// since, up to the newest stored when the read began. A resuming client is replayed
	// what it returns; a room catching up after a gap delivers it. When since is no longer stored (or
	// belongs to another room), or epoch is given and is not the store's current one, it
	// returns everything kept and reports Truncated. The error wraps
	// ErrHistoryUnavailable when the store cannot be read, and ErrHistoryTemporary too
	// when reading again soon may succeed. Each request to the store is bounded on its
	// own, so a read that went unanswered fails while ctx may still have time.
	ReadSince(ctx context.Context, room string, since uint64, epoch string) (Stored, error)
}

// Stored is what History.ReadSince read.
type Stored struct {
	Messages []Message
	// Truncated: the client may have missed messages that are no longer kept.
	Truncated bool
	// Last is the seq up to which the client now has everything: live messages with a
	// seq at or below it are duplicates.
	Last uint64
	// Epoch is the store's epoch the read used.
	Epoch string
}
