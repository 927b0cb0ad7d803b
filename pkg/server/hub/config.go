package hub

import (
	"time"

	"roomcast/pkg/envconfig"
)

// Validate checks the values Config takes from the environment; environ supplies the
// raw values for the error. (New itself accepts zero values: no pings, default
// catch-up.)
func (c Config) Validate(environ map[string]string) error {
	bad := func(name, allowed string) error { return envconfig.Invalid(environ, name, allowed) }
	switch {
	case c.SendQueueFrames < 1:
		return bad("ROOMCAST_SEND_QUEUE", "want an integer of at least 1")
	case c.CatchUpTimeout < time.Second || c.CatchUpTimeout > 10*time.Minute:
		return bad("ROOMCAST_CATCHUP_TIMEOUT", "want a duration from 1s to 10m, such as 15s")
	case c.BatchDelay < 0 || c.BatchDelay > time.Second:
		return bad("ROOMCAST_BATCH_DELAY", "want a duration from 0s to 1s, such as 20ms")
	case c.PingInterval < 100*time.Millisecond:
		return bad("ROOMCAST_PING_INTERVAL", "want a duration of at least 100ms")
	}
	return nil
}
