package replica

import (
	"testing"

	"roomcast/pkg/chat"
)

// The gateway publishes asynchronously only when its broker has PublishAsync; the
// readiness wrapper must not hide it (it did once, and every message then waited for
// JetStream's acknowledgement on its sender's read goroutine).
func TestTheGatedBrokerKeepsTheAsynchronousPublish(t *testing.T) {
	var b any = gatedBroker{}
	if _, ok := b.(interface {
		PublishAsync(chat.Message, func(error)) error
	}); !ok {
		t.Fatal("gatedBroker has no PublishAsync: the gateway would publish with a blocking round trip per message")
	}
}
