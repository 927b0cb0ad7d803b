// Package localbroker is an in-process chat.Broker for tests of what sits above the
// broker: no NATS, no history, every message delivered before Publish returns.
package localbroker

import (
	"context"
	"slices"
	"sync"

	"roomcast/pkg/chat"
)

// Broker delivers each message synchronously, in the publisher's goroutine, to the
// subscriptions of its room.
type Broker struct {
	mu           sync.Mutex
	subs         map[string][]*subscription
	subscribeErr error
}

type subscription struct {
	b       *Broker
	room    string
	deliver func(chat.Message)
}

// New returns a broker with no subscriptions.
func New() *Broker { return &Broker{subs: map[string][]*subscription{}} }

// Publish implements chat.Broker.
func (b *Broker) Publish(_ context.Context, msg chat.Message) error {
	b.mu.Lock()
	subs := slices.Clone(b.subs[msg.Room])
	b.mu.Unlock()
	for _, s := range subs {
		s.deliver(msg)
	}
	return nil
}

// Subscribe implements chat.Broker; it fails with the error FailSubscriptions set.
func (b *Broker) Subscribe(_ context.Context, room string, deliver func(chat.Message)) (chat.Subscription, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subscribeErr != nil {
		return nil, b.subscribeErr
	}
	s := &subscription{b: b, room: room, deliver: deliver}
	b.subs[room] = append(b.subs[room], s)
	return s, nil
}

// Ready implements chat.Broker: always ready.
func (b *Broker) Ready() error { return nil }

// FailSubscriptions makes each Subscribe fail with err from now on; nil ends that.
func (b *Broker) FailSubscriptions(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subscribeErr = err
}

// Subscriptions is the number of subscriptions to room.
func (b *Broker) Subscriptions(room string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs[room])
}

func (s *subscription) Unsubscribe() error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.subs[s.room] = slices.DeleteFunc(s.b.subs[s.room], func(o *subscription) bool { return o == s })
	return nil
}
