// Package natstest starts in-process nats-servers for tests, on 127.0.0.1, stopped in
// t.Cleanup. It is apart from testenv so that tests which never need NATS do not build
// the server.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Option changes the server's options before it starts.
type Option func(*server.Options)

// Port makes the server listen on port (a restart on the port of an earlier one);
// without it the port is a free one.
func Port(port int) Option {
	return func(o *server.Options) {
		if port != 0 {
			o.Port = port
		}
	}
}

// JetStream turns JetStream on, with its store in a directory of the test.
func JetStream(tb testing.TB) Option {
	dir := tb.TempDir()
	return func(o *server.Options) { o.JetStream = true; o.StoreDir = dir }
}

// Start starts a nats-server and waits (bounded) until it takes connections.
func Start(tb testing.TB, opts ...Option) *server.Server {
	tb.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true}
	for _, opt := range opts {
		opt(o)
	}
	ns, err := server.NewServer(o)
	if err != nil {
		tb.Fatalf("creating nats-server: %v", err)
	}
	ns.Start()
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server not ready within 10s")
	}
	return ns
}
