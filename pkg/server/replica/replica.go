// Package replica assembles one roomcast server from its parts (embedded or external
// NATS, broker, hub, WebSocket gateway, HTTP surface) and owns their lifecycle: start in
// dependency order, and on shutdown the lame-duck sequence of the contract.
//
// A Replica is built by New, served by Serve and stopped by Drain or Close, once.
package replica

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"roomcast/pkg/auth"
	"roomcast/pkg/server/httpapi"
	"roomcast/pkg/server/hub"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/server/natsembed"
	"roomcast/pkg/server/ratelimit"
	"roomcast/pkg/server/servermetrics"
	"roomcast/pkg/server/wsframe"
	"roomcast/pkg/server/wsgateway"
)

// Config is everything a replica needs; cmd/roomcast fills it from the environment.
type Config struct {
	Addr             string
	NATSURL          string // empty: start an embedded NATS server
	EmbeddedNATSAddr string // where the embedded server also listens; empty: in-process only
	Identity         httpapi.Identity

	MaxMessageBytes int
	SendQueueFrames int
	SendQueueBytes  int
	RateLimit       float64
	RateBurst       int
	AllowedOrigins  []string

	// Auth, when set, requires a token for every upgrade.
	Auth *auth.Verifier
	// Limits are the admission limits of the replica.
	Limits wsgateway.Limits

	// HistorySize messages per room are kept for HistoryTTL so that reconnecting clients
	// can resume; 0 turns history off.
	HistorySize int
	HistoryTTL  time.Duration
	// HistoryReplicas is the history stream's replication in a NATS cluster.
	HistoryReplicas int
	// CatchUpTimeout bounds a room's retries to read what it missed from history
	// (hub.Config.CatchUpTimeout; 0 is hub.DefaultCatchUpTimeout).
	CatchUpTimeout time.Duration

	DrainDelay   time.Duration
	DrainTimeout time.Duration
	PingInterval time.Duration

	// RateCloseAfter is how long a client may stay over the rate limit before it is
	// closed with 1008 (default 10s, the contract's).
	RateCloseAfter time.Duration
	// NATSReconnectWait is the pause between NATS reconnect attempts (default 1s).
	NATSReconnectWait time.Duration
	// DrainSleep replaces the wait between batches of drain closes (tests).
	DrainSleep func(ctx context.Context, d time.Duration) error
}

// Replica is one running server.
type Replica struct {
	cfg      Config
	log      *slog.Logger
	reg      *prometheus.Registry
	embedded *natsembed.Server
	broker   *natsbroker.Broker
	hub      *hub.Hub
	http     *httpapi.Server

	stopPings context.CancelFunc
	pingsDone chan struct{}
	closeOnce sync.Once
}

// New builds a replica and binds its listener; nothing is served until Serve.
func New(cfg Config, log *slog.Logger) (*Replica, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	r := &Replica{cfg: cfg, log: log, reg: reg}
	if err := r.build(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Replica) build() error {
	cfg, log := r.cfg, r.log
	natsCfg := natsbroker.Config{
		URL: cfg.NATSURL, Name: "roomcast-" + cfg.Identity.Instance, ReconnectWait: cfg.NATSReconnectWait,
		History: natsbroker.HistoryConfig{Size: cfg.HistorySize, TTL: cfg.HistoryTTL, Replicas: cfg.HistoryReplicas},
	}
	if cfg.NATSURL == "" {
		// The embedded server keeps history in memory: it lives as long as the process.
		natsCfg.History.Memory = true
		embedded, err := natsembed.Start(natsembed.Config{ListenAddr: cfg.EmbeddedNATSAddr, JetStream: cfg.HistorySize > 0}, log)
		if err != nil {
			return err
		}
		r.embedded = embedded
		natsCfg.Options = append(natsCfg.Options, embedded.ClientOptions()...)
		if url := embedded.ClientURL(); url != "" {
			log.Info("embedded NATS listening", "url", url)
		}
	}
	broker, err := natsbroker.Connect(natsCfg, log.With("component", "broker"), r.reg)
	if err != nil {
		return err
	}
	r.broker = broker
	errs := servermetrics.NewErrors(r.reg) // counted by the hub and the gateway
	r.hub = hub.New(hub.Config{
		SendQueueFrames: cfg.SendQueueFrames,
		SendQueueBytes:  cfg.SendQueueBytes,
		// A replay of a full room history may take a moment; hold what arrives meanwhile.
		HoldFrames:   cfg.SendQueueFrames + cfg.HistorySize,
		PingInterval: cfg.PingInterval,
		Sleep:        cfg.DrainSleep,
		// After a NATS outage the hub fills each room's gap from history.
		History:        r.broker.History(),
		CatchUpTimeout: cfg.CatchUpTimeout,
	}, r.broker, errs, log.With("component", "hub"), r.reg)
	r.broker.OnReconnect(func() {
		// Each room retries until it has its gap, for up to the hub's CatchUpTimeout; Close
		// stops them.
		r.hub.CatchUp(context.Background())
	})
	gateway := wsgateway.New(wsgateway.Config{
		MaxMessageBytes: cfg.MaxMessageBytes,
		RateLimit: ratelimit.Config{
			PerSecond: cfg.RateLimit, Burst: cfg.RateBurst,
			WarnEvery: time.Second, CloseAfter: cmp.Or(cfg.RateCloseAfter, 10*time.Second),
		},
		AllowedOrigins: cfg.AllowedOrigins,
		IdleTimeout:    2 * cfg.PingInterval,
		ResponseHeader: cfg.Identity.ResponseHeader(),
		History:        r.broker.History(),
		Auth:           cfg.Auth,
		Limits:         cfg.Limits,
	}, r.hub, r.broker, errs, log.With("component", "gateway"), r.reg)
	r.http = httpapi.New(httpapi.Config{Addr: cfg.Addr, Identity: cfg.Identity}, gateway,
		httpapi.Readiness{Draining: r.hub.Draining, Broker: r.broker.Ready}, r.reg, log.With("component", "http"), r.reg)
	if err := r.http.Listen(); err != nil {
		return err
	}
	// Keepalive pings run from here until Close, whether or not Serve is called.
	ctx, cancel := context.WithCancel(context.Background())
	r.stopPings = cancel
	r.pingsDone = make(chan struct{})
	go func() {
		defer close(r.pingsDone)
		r.hub.Keepalive(ctx)
	}()
	return nil
}

// Addr is the HTTP listener's address.
func (r *Replica) Addr() net.Addr { return r.http.Addr() }

// Registry is the replica's own metrics registry.
func (r *Replica) Registry() *prometheus.Registry { return r.reg }

// EmbeddedNATSURL is the embedded server's URL, or "" if there is none or it has no port.
func (r *Replica) EmbeddedNATSURL() string {
	if r.embedded == nil {
		return ""
	}
	return r.embedded.ClientURL()
}

// Serve serves until Drain or Close; it returns an error only if serving failed.
func (r *Replica) Serve() error { return r.http.Serve() }

// Drain is the lame-duck shutdown, in this order:
//  1. not ready: /readyz answers 503 draining and new upgrades get 503;
//  2. wait DrainDelay, for proxies to stop routing here;
//  3. close every WebSocket with 1012, spread evenly over DrainTimeout;
//  4. drain the NATS connection;
//  5. stop the HTTP server, the keepalive loop and the embedded NATS server.
//
// Cancelling ctx (a second signal) abandons the sequence and closes everything at once.
func (r *Replica) Drain(ctx context.Context) error {
	r.hub.StopAccepting()
	r.log.Info("draining", "delay", r.cfg.DrainDelay.String(), "timeout", r.cfg.DrainTimeout.String(), "connections", r.hub.Len())
	defer r.Close()
	t := time.NewTimer(r.cfg.DrainDelay)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return fmt.Errorf("drain interrupted: %w", ctx.Err())
	}
	// Clients get the close frames' worth of time after the window to go away.
	closeCtx, cancel := context.WithTimeout(ctx, r.cfg.DrainTimeout+10*time.Second)
	err := r.hub.CloseAll(closeCtx, wsframe.CloseServiceRestart, "server restarting", r.cfg.DrainTimeout)
	cancel()
	if ctx.Err() != nil {
		return fmt.Errorf("drain interrupted: %w", ctx.Err())
	}
	if err != nil {
		r.log.Warn("connections left open after the drain window", "err", err)
	}
	brokerCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := r.broker.Drain(brokerCtx); err != nil {
		r.log.Warn("NATS drain incomplete", "err", err)
	}
	cancel()
	httpCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.http.Shutdown(httpCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	r.log.Info("drained")
	return nil
}

// Close stops everything at once; it is safe after Drain and on a partly built replica.
func (r *Replica) Close() { r.closeOnce.Do(r.close) }

func (r *Replica) close() {
	if r.stopPings != nil {
		r.stopPings()
		<-r.pingsDone
	}
	if r.hub != nil {
		// Drain has normally closed every WebSocket already; this is for an abort.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = r.hub.CloseAll(ctx, wsframe.CloseServiceRestart, "server restarting", 0)
		cancel()
		r.hub.Close() // catch-ups still retrying stop before the broker goes
	}
	if r.http != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // Shutdown with a done context closes listeners and idle conns at once
		_ = r.http.Shutdown(ctx)
	}
	if r.broker != nil {
		r.broker.Close()
	}
	if r.embedded != nil {
		r.embedded.Shutdown()
	}
}
