// Package replica assembles one roomcast server from its parts (embedded or external
// NATS, broker, hub, WebSocket gateway, HTTP surface) and owns their lifecycle: start in
// dependency order, and on shutdown the lame-duck sequence of the contract.
//
// A Replica is built by New, served by Serve and stopped by Drain or Close, once.
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"roomcast/pkg/envconfig"
	"roomcast/pkg/server/httpapi"
	"roomcast/pkg/server/hub"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/server/natsembed"
	"roomcast/pkg/server/servermetrics"
	"roomcast/pkg/server/wsframe"
	"roomcast/pkg/server/wsgateway"
)

// Config is the server's configuration: one section per component, each with its own
// variables, defaults and checks. cmd/roomcast fills it from the environment with
// envconfig.Parse and Load; New takes it as it is and hands each section to its
// component, setting only what is derived from other sections.
type Config struct {
	HTTP httpapi.Config
	// NATS is where the broker connects; with an empty URL, an embedded server is started.
	NATS natsbroker.Config
	// Embedded is the embedded NATS server's, when NATS.URL is empty.
	Embedded natsembed.Config
	Gateway  wsgateway.Config
	// Auth requires a token for every upgrade when its Verifier is set; Load builds the
	// Verifier from the keys, New uses only the Verifier.
	Auth  wsgateway.AuthConfig
	Hub   hub.Config
	Drain DrainConfig
}

// DrainConfig times the lame-duck shutdown (see Replica.Drain).
type DrainConfig struct {
	Delay   time.Duration `env:"ROOMCAST_DRAIN_DELAY" envDefault:"5s" help:"after SIGTERM, time not ready before closing connections"`
	Timeout time.Duration `env:"ROOMCAST_DRAIN_TIMEOUT" envDefault:"20s" help:"window over which connections are closed with 1012"`
}

// Validate checks both durations; environ supplies the raw values for the error.
func (d DrainConfig) Validate(environ map[string]string) error {
	switch {
	case d.Delay < 0:
		return envconfig.Invalid(environ, "ROOMCAST_DRAIN_DELAY", "want a duration of 0s or more")
	case d.Timeout < 0:
		return envconfig.Invalid(environ, "ROOMCAST_DRAIN_TIMEOUT", "want a duration of 0s or more")
	}
	return nil
}

// Load completes a Config parsed from environ and checks it, section by section, once:
// the instance name defaults to the host's, the key files are read and the token
// verifier is built. Its errors are *envconfig.Error naming the variable, with environ's
// raw value.
func (c *Config) Load(environ map[string]string) error {
	if c.HTTP.Identity.Instance == "" {
		c.HTTP.Identity.Instance, _ = os.Hostname()
	}
	for _, v := range []func(map[string]string) error{
		c.HTTP.Validate, c.Embedded.Validate, c.Gateway.Validate, c.Hub.Validate,
	} {
		if err := v(environ); err != nil {
			return err
		}
	}
	// The send queue must hold at least one frame of the largest message.
	if least := c.Gateway.LargestFrame(); c.Hub.SendQueueBytes < least {
		return envconfig.Invalid(environ, "ROOMCAST_SEND_QUEUE_BYTES", fmt.Sprintf("want at least %d (one frame of the largest message)", least))
	}
	for _, v := range []func(map[string]string) error{
		c.NATS.Load, c.Drain.Validate, c.Auth.Load,
	} {
		if err := v(environ); err != nil {
			return err
		}
	}
	// History must hold a few of the largest messages, in each of its shards.
	h := c.NATS.History
	least := historyLeast(c.Gateway.MaxMessageBytes)
	if h.Size > 0 && h.MaxBytes < least {
		return envconfig.Invalid(environ, "ROOMCAST_HISTORY_MAX_BYTES", fmt.Sprintf("want at least %d (%d of the largest message's envelope, as ROOMCAST_MAX_MESSAGE_BYTES allows)", least, minHistoryMessages))
	}
	if h.Size > 0 && h.Shards > 0 && h.MaxBytes/int64(h.Shards) < least {
		return envconfig.Invalid(environ, "ROOMCAST_HISTORY_SHARDS", fmt.Sprintf("want at most %d with ROOMCAST_HISTORY_MAX_BYTES %d: each shard holds an equal part of it, and at least %d of the largest message's envelope", h.MaxBytes/least, h.MaxBytes, minHistoryMessages))
	}
	return nil
}

// minHistoryMessages is how many of the largest messages the history stream must hold.
const minHistoryMessages = 16

// historyLeast is the fewest bytes a history stream (or one of its shards) may hold.
func historyLeast(maxMessageBytes int) int64 {
	return int64(minHistoryMessages) * int64(natsbroker.EnvelopeLimit(maxMessageBytes))
}

// historyShards is the number of shards of history a replica asks for: the configured
// one, or when that is 0, natsbroker.EmbeddedShards on the embedded server (its memory
// stream walks its messages the most, see natsbroker's shard.go) as far as the byte
// bound leaves each shard room for minHistoryMessages of the largest messages, and 1 on
// an external NATS, whose stream's layout stays what earlier releases made.
func historyShards(c Config) int {
	h := c.NATS.History
	if h.Shards > 0 || c.NATS.URL != "" {
		return max(h.Shards, 1)
	}
	return int(max(1, min(int64(natsbroker.EmbeddedShards), h.MaxBytes/historyLeast(c.Gateway.MaxMessageBytes))))
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
	natsCfg := cfg.NATS
	natsCfg.Name = "roomcast-" + cfg.HTTP.Identity.Instance
	natsCfg.History.MaxMsgSize = natsbroker.EnvelopeLimit(cfg.Gateway.MaxMessageBytes)
	natsCfg.History.Shards = historyShards(cfg)
	if natsCfg.URL == "" {
		// The embedded server keeps history in memory: it lives as long as the process.
		natsCfg.History.Memory = true
		embeddedCfg := cfg.Embedded
		embeddedCfg.JetStream = natsCfg.History.Size > 0
		// The stream reserves its MaxBytes; JetStream's own bookkeeping gets an eighth more.
		embeddedCfg.MaxStoreBytes = natsCfg.History.MaxBytes + natsCfg.History.MaxBytes/8
		embedded, err := natsembed.Start(embeddedCfg, log)
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
	hubCfg := cfg.Hub
	// A replay of a full room history may take a moment; hold what arrives meanwhile.
	hubCfg.HoldFrames = hubCfg.SendQueueFrames + natsCfg.History.Size
	// After a NATS outage the hub fills each room's gap from history.
	hubCfg.History = r.broker.History()
	r.hub = hub.New(hubCfg, r.broker, errs, log.With("component", "hub"), r.reg)
	r.broker.OnReconnect(func() {
		// Each room retries until it has its gap, for up to the hub's CatchUpTimeout; Close
		// stops them.
		r.hub.CatchUp(context.Background())
	})
	gwCfg := cfg.Gateway
	gwCfg.IdleTimeout = 2 * hubCfg.PingInterval
	gwCfg.ResponseHeader = cfg.HTTP.Identity.ResponseHeader()
	gwCfg.History = r.broker.History()
	gwCfg.Auth = cfg.Auth.Verifier
	ready := httpapi.Readiness{Draining: r.hub.Draining, Broker: r.broker.Ready}
	if gwCfg.History != nil {
		ready.History = historyGate(r.broker.HistoryReady)
	}
	// Upgrades are refused (503 not_ready, which nginx passes to the next replica) for as
	// long as /readyz would answer 503.
	gateway := wsgateway.New(gwCfg, r.hub, gatedBroker{r.broker, ready}, errs, log.With("component", "gateway"), r.reg)
	r.http = httpapi.New(cfg.HTTP, gateway, ready, r.reg, log.With("component", "http"), r.reg)
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

// Addr is the public HTTP listener's address.
func (r *Replica) Addr() net.Addr { return r.http.Addr() }

// ProbeAddr is the probe listener's address, nil without ROOMCAST_PROBE_ADDR.
func (r *Replica) ProbeAddr() net.Addr { return r.http.ProbeAddr() }

// PprofAddr is the profile listener's address, nil without ROOMCAST_PPROF_ADDR.
func (r *Replica) PprofAddr() net.Addr { return r.http.PprofAddr() }

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
	r.log.Info("draining", "delay", r.cfg.Drain.Delay.String(), "timeout", r.cfg.Drain.Timeout.String(), "connections", r.hub.Len())
	defer r.Close()
	t := time.NewTimer(r.cfg.Drain.Delay)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return fmt.Errorf("drain interrupted: %w", ctx.Err())
	}
	// Clients get the close frames' worth of time after the window to go away.
	closeCtx, cancel := context.WithTimeout(ctx, r.cfg.Drain.Timeout+10*time.Second)
	err := r.hub.CloseAll(closeCtx, wsframe.CloseServiceRestart, "server restarting", r.cfg.Drain.Timeout)
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
