// Package ratelimit decides, message by message, what happens to one connection that
// sends faster than it may: a token bucket lets the message pass or drops it, the client
// is warned at most once per WarnEvery, and a client that stays over the limit for
// CloseAfter is to be disconnected.
//
// A Limiter belongs to one connection and is not safe for concurrent use; the caller
// passes the time in, so tests drive it with a fake clock.
package ratelimit

import (
	"time"

	"golang.org/x/time/rate"

	"roomcast/pkg/envconfig"
)

// Verdict is what to do with one message.
type Verdict int

const (
	// Allow: the message is within the limit.
	Allow Verdict = iota
	// Drop: drop the message silently (the client was warned less than WarnEvery ago).
	Drop
	// DropAndWarn: drop the message and tell the client it is rate limited.
	DropAndWarn
	// Close: drop the message and close the connection; it has been over the limit
	// without a break for CloseAfter.
	Close
)

// Config is the policy shared by every connection of a replica.
type Config struct {
	// PerSecond and Burst size the token bucket.
	PerSecond float64 `env:"ROOMCAST_RATE_LIMIT" envDefault:"20" help:"messages per second per connection"`
	Burst     int     `env:"ROOMCAST_RATE_BURST" envDefault:"40" help:"burst of messages per connection"`
	// WarnEvery is the least time between two warnings to one client.
	WarnEvery time.Duration
	// CloseAfter is how long a client may stay over the limit. It counts as over the
	// limit from its first dropped message until WarnEvery passes with no drop.
	CloseAfter time.Duration
}

// Validate checks the bucket's size; environ supplies the raw values for the error.
func (c Config) Validate(environ map[string]string) error {
	switch {
	case !(c.PerSecond > 0):
		return envconfig.Invalid(environ, "ROOMCAST_RATE_LIMIT", "want a number above 0")
	case c.Burst < 1:
		return envconfig.Invalid(environ, "ROOMCAST_RATE_BURST", "want an integer of at least 1")
	}
	return nil
}

// Limiter applies Config to one connection.
type Limiter struct {
	cfg       Config
	bucket    *rate.Limiter
	overSince time.Time
	lastDrop  time.Time
	lastWarn  time.Time
}

// New returns a Limiter for one connection.
func New(cfg Config) *Limiter {
	return &Limiter{cfg: cfg, bucket: rate.NewLimiter(rate.Limit(cfg.PerSecond), cfg.Burst)}
}

// Check takes one message sent at now and says what to do with it.
func (l *Limiter) Check(now time.Time) Verdict {
	if l.bucket.AllowN(now, 1) {
		return Allow
	}
	if l.overSince.IsZero() || now.Sub(l.lastDrop) > l.cfg.WarnEvery {
		l.overSince = now
	}
	l.lastDrop = now
	if now.Sub(l.overSince) >= l.cfg.CloseAfter {
		return Close
	}
	if l.lastWarn.IsZero() || now.Sub(l.lastWarn) >= l.cfg.WarnEvery {
		l.lastWarn = now
		return DropAndWarn
	}
	return Drop
}
