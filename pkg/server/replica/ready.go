package replica

import (
	"sync/atomic"

	"roomcast/pkg/server/httpapi"
	"roomcast/pkg/server/natsbroker"
)

// historyGate makes a replica with history not ready until its history stream has been
// found once: a client admitted earlier would get neither a replay nor, on a NATS
// cluster still electing the stream's leader, its messages for a while. Once found, a
// lost stream no longer makes the replica unready: live messages still flow, and
// roomcast_history_available and the history errors tell the operator.
func historyGate(check func() error) func() error {
	var found atomic.Bool
	return func() error {
		if found.Load() {
			return nil
		}
		if err := check(); err != nil {
			return err
		}
		found.Store(true)
		return nil
	}
}

// gatedBroker is the broker as the gateway sees it: not ready while the replica's
// readiness says so, the history gate included, so that no upgrade is admitted that
// /readyz would turn away. It embeds the concrete broker, not chat.Broker, so that the
// gateway still finds PublishAsync: behind the interface it published every message
// with a blocking round trip to JetStream on the client's read goroutine.
type gatedBroker struct {
	*natsbroker.Broker
	ready httpapi.Readiness
}

func (b gatedBroker) Ready() error {
	if err := b.ready.Broker(); err != nil {
		return err
	}
	if b.ready.History != nil {
		return b.ready.History()
	}
	return nil
}
