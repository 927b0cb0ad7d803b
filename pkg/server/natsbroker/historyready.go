package natsbroker

import (
	"fmt"

	"roomcast/pkg/chat"
)

// HistoryReady returns nil when history is off or its stream is known now, else an
// error wrapping chat.ErrUnavailable that says why (the replica's readiness uses it).
// A server without JetStream never has the stream: waiting for it would keep the
// replica unready for good, so that counts as ready (live messages flow; the history
// errors and roomcast_history_available say what is missing).
func (b *Broker) HistoryReady() error {
	if b.hist == nil {
		return nil
	}
	missing := b.hist.unknown()
	if missing == nil {
		return nil
	}
	if js, _ := b.nc.ConnectedServerJetStream(); !js && b.nc.IsConnected() {
		return nil
	}
	return fmt.Errorf("%w: history stream %s not found yet", chat.ErrUnavailable, missing.name)
}
