// Package replicatest starts in-process replicas for tests: the server's own defaults,
// except that it listens on a free port of 127.0.0.1, sends as fast as a load test asks
// (rate limit 100000/s), keeps no history, drains in 100ms without a delay and
// reconnects to NATS every 50ms. Options change that; every replica is closed in the
// test's cleanup.
package replicatest

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"roomcast/pkg/auth"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/server/httpapi"
	"roomcast/pkg/server/replica"
	"roomcast/pkg/server/wsgateway"
	"roomcast/pkg/testenv"
)

// Option changes the configuration before the replica starts; any
// func(*replica.Config) is one.
type Option func(*replica.Config)

// Instance names the replica (its instance, in headers, /readyz and metrics; default
// "test").
func Instance(name string) Option {
	return func(c *replica.Config) { c.HTTP.Identity.Instance = name }
}

// Color sets the replica's deployment color (default "test").
func Color(color string) Option {
	return func(c *replica.Config) { c.HTTP.Identity.Color = color }
}

// NATS connects the replica to the NATS servers of url instead of an in-process
// embedded server ("" keeps the embedded one).
func NATS(url string) Option {
	return func(c *replica.Config) { c.NATS.URL = url }
}

// EmbeddedNATS makes the embedded NATS server listen on a free port too, for further
// replicas (their NATS option is this one's EmbeddedNATSURL).
func EmbeddedNATS() Option {
	return func(c *replica.Config) { c.Embedded.ListenAddr = "127.0.0.1:0" }
}

// Auth requires a token of v for every upgrade.
func Auth(v *auth.Verifier) Option {
	return func(c *replica.Config) { c.Auth.Verifier = v }
}

// Limits sets the admission limits.
func Limits(l wsgateway.Limits) Option {
	return func(c *replica.Config) { c.Gateway.Limits = l }
}

// History keeps size messages per room for an hour (0: off, the default).
func History(size int) Option {
	return func(c *replica.Config) { c.NATS.History.Size, c.NATS.History.TTL = size, time.Hour }
}

// PingInterval sets the keepalive period (default 25s).
func PingInterval(d time.Duration) Option {
	return func(c *replica.Config) { c.Hub.PingInterval = d }
}

// RateLimit sets each connection's message rate and burst.
func RateLimit(perSecond float64, burst int) Option {
	return func(c *replica.Config) { c.Gateway.RateLimit.PerSecond, c.Gateway.RateLimit.Burst = perSecond, burst }
}

// SendQueue sizes each connection's queue.
func SendQueue(frames, bytes int) Option {
	return func(c *replica.Config) { c.Hub.SendQueueFrames, c.Hub.SendQueueBytes = frames, bytes }
}

// Version sets the build version the replica reports (default "v-test").
func Version(v string) Option {
	return func(c *replica.Config) { c.HTTP.Identity.Version = v }
}

// Config is the configuration Start begins with, before its options.
func Config(tb testing.TB) replica.Config {
	tb.Helper()
	cfg, err := envconfig.Parse[replica.Config](nil)
	if err != nil {
		tb.Fatalf("the server's defaults do not parse: %v", err)
	}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.HTTP.Identity = httpapi.Identity{Color: "test", Instance: "test", Version: "v-test"}
	cfg.NATS.ReconnectWait = 50 * time.Millisecond
	cfg.NATS.History.Size = 0
	cfg.Gateway.RateLimit.PerSecond, cfg.Gateway.RateLimit.Burst = 100000, 100000
	cfg.Drain.Delay, cfg.Drain.Timeout = 0, 100*time.Millisecond
	return cfg
}

// Replica is a started replica, served until the test's cleanup closes it.
type Replica struct {
	*replica.Replica
	done chan struct{}
	err  error // Serve's, once done is closed

	shutdownOnce sync.Once
}

// Start starts a replica and returns once it answers /healthz.
func Start(tb testing.TB, opts ...Option) *Replica {
	tb.Helper()
	cfg := Config(tb)
	for _, opt := range opts {
		opt(&cfg)
	}
	name := cfg.HTTP.Identity.Instance
	rep, err := replica.New(cfg, testenv.Logger(tb).With("replica", name))
	if err != nil {
		tb.Fatalf("starting replica %s: %v", name, err)
	}
	r := &Replica{Replica: rep, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = rep.Serve()
	}()
	tb.Cleanup(func() {
		rep.Close()
		if err := r.Wait(15 * time.Second); err != nil {
			tb.Errorf("replica %s: %v", name, err)
		}
	})
	r.waitHealthy(tb)
	return r
}

// URL is the replica's base URL, http://host:port.
func (r *Replica) URL() string { return "http://" + r.Addr().String() }

// WSURL is the replica's base URL for WebSocket clients, ws://host:port.
func (r *Replica) WSURL() string { return "ws://" + r.Addr().String() }

// Wait waits up to d for Serve to return (after Drain or Close) and returns its error.
func (r *Replica) Wait(d time.Duration) error {
	select {
	case <-r.done:
		if r.err != nil {
			return fmt.Errorf("serving: %w", r.err)
		}
		return nil
	case <-time.After(d):
		return fmt.Errorf("still serving %s after Drain or Close", d)
	}
}

// Shutdown drains the replica (the lame-duck shutdown: every client is closed with 1012)
// and waits for Serve to return, failing tb on an error; later calls do nothing.
func (r *Replica) Shutdown(tb testing.TB) {
	tb.Helper()
	r.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Drain(ctx); err != nil {
			tb.Errorf("replica %s: Drain: %v", r.Addr(), err)
		}
		if err := r.Wait(10 * time.Second); err != nil {
			tb.Errorf("replica %s: %v", r.Addr(), err)
		}
	})
}

// waitHealthy waits (bounded) until Serve answers, so that a test's first request and
// the cleanup's Close both find the server running.
func (r *Replica) waitHealthy(tb testing.TB) {
	tb.Helper()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(r.URL() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("replica %s never answered /healthz with 200: %v", r.Addr(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
