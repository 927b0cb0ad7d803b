// Package wsclienttest holds the test helpers around wsclient that many packages' tests
// share: a dial that fails the test and closes the client at cleanup, and a bounded
// wait for the next frame.
package wsclienttest

import (
	"context"
	"testing"
	"time"

	"roomcast/pkg/wsclient"
)

// DialTimeout bounds Dial's upgrade.
const DialTimeout = 10 * time.Second

// NextTimeout is how long Next waits for a frame: generous, for a loaded machine.
const NextTimeout = 10 * time.Second

// Dial connects to url, failing the test if it cannot; the client is closed at cleanup.
func Dial(t testing.TB, url string, opts wsclient.Options) *wsclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DialTimeout)
	defer cancel()
	c, _, err := wsclient.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dialing %s: %v", url, err)
	}
	t.Cleanup(c.Close)
	return c
}

// Next returns c's next frame, failing the test if none comes within NextTimeout.
func Next(t testing.TB, c *wsclient.Client) wsclient.Frame {
	t.Helper()
	return NextWithin(t, c, NextTimeout)
}

// NextWithin is Next with its own bound.
func NextWithin(t testing.TB, c *wsclient.Client, d time.Duration) wsclient.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	f, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for the next frame: %v", err)
	}
	return f
}
