package natsbroker

import (
	"context"
	"sync"
)

// AskJetStreamForEveryAck makes b ask JetStream to acknowledge every publish, as it does
// for a room it is not subscribed to, instead of taking the republished copy as the
// acknowledgement: the benchmarks compare the two.
func AskJetStreamForEveryAck(b *Broker) {
	b.hist.win.mu.Lock()
	defer b.hist.win.mu.Unlock()
	b.hist.win.noCopyAcks = true
}

// FailStreamLookup makes b look for its history stream and fail, as while the stream's
// leader is being replaced.
func FailStreamLookup(b *Broker) error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.hist.finding <- struct{}{}
	defer func() { <-b.hist.finding }()
	return b.hist.findStreamHeld(ctx)
}

// BeforeReplayRead makes ReadSince call f before each read of a stored message, with the
// number read so far.
func BeforeReplayRead(b *Broker, f func(read int)) { b.hist.beforeReplayRead = f }

// HoldBatches keeps b's batcher from sending until release is called, so that a test
// can queue several publishes to one room as a loaded replica would.
func HoldBatches(b *Broker) (release func()) {
	held := make(chan struct{})
	wait := func() { <-held }
	b.hist.win.batch.beforeSend.Store(&wait)
	var once sync.Once
	return func() { once.Do(func() { close(held) }) }
}

// StoreSubject is the subject b publishes room's messages on: its shard's.
func StoreSubject(b *Broker, room string) string {
	sh := b.hist.shardOf(room)
	return sh.subject + room
}
