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
