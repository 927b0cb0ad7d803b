package natsbroker

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"roomcast/pkg/auth"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/server/rawsock"
)

// Config says how to reach NATS.
type Config struct {
	// URL is a comma-separated list of servers; ignored when Options connect in-process.
	// A host name stands for every address it resolves to (dialled in random order,
	// sharing ConnectTimeout), so tasks.<service> of a NATS cluster in Swarm names every member.
	URL string `env:"NATS_URL" secret:"userinfo" help:"NATS servers, comma-separated; empty starts an embedded NATS server in-process"`
	// User and PasswordFile are the replica's NATS credentials (a Swarm secret holds the
	// password); both or neither. Load reads the file into Password.
	User         string `env:"ROOMCAST_NATS_USER" help:"NATS user the replica connects as (with ROOMCAST_NATS_PASSWORD_FILE); empty: no credentials"`
	PasswordFile string `env:"ROOMCAST_NATS_PASSWORD_FILE" help:"file holding the NATS user's password (a Swarm secret)"`
	// Password is PasswordFile's content, never logged.
	Password string
	// ConnectTimeout bounds a dial and the handshake with one server (default
	// DefaultConnectTimeout); a host name's addresses share it.
	ConnectTimeout time.Duration
	// Name identifies this client on the NATS server (the replica's instance name).
	Name string
	// ReconnectWait is the pause between rounds of reconnect attempts after the first,
	// which starts within a tenth of it (default 1s; see reconnectDelay).
	ReconnectWait time.Duration
	// Options are added to the connection's options (the embedded server's in-process
	// dialer, in tests a shorter timeout).
	Options []nats.Option
	// History keeps each room's recent messages in JetStream; Size 0 turns it off.
	History HistoryConfig
}

// reconnectDelay is the pause before each round of reconnect attempts (nats.go pauses
// before the first attempt too when it has a single URL). The first round starts within a
// tenth of wait: the usual cause is one cluster member going away (its node drained or
// restarted) while the others are up, and until it is back the replica refuses new
// clients, so a whole wait there is refusals for nothing. Later rounds wait wait, plus up to
// a quarter of it, so that a fleet of replicas does not retry a dead cluster in step.
func reconnectDelay(wait time.Duration) nats.ReconnectDelayHandler {
	return func(round int) time.Duration {
		if round <= 1 {
			return rand.N(wait/10 + 1)
		}
		return wait + rand.N(wait/4+1)
	}
}

// DefaultConnectTimeout bounds one connection attempt to one server. nats.go's 2s
// default made a replica wait out a dead cluster node (a killed task's address does not
// refuse, it stays silent) before it tried a live one; on a Swarm overlay a live node
// answers in milliseconds, and a loaded one still well within a second.
const DefaultConnectTimeout = time.Second

// A NATS member whose node died stays silent: no reset comes, and with nats.go's
// defaults (a PING every 2 minutes, a write allowed a minute) a replica stayed on such a
// connection for a minute or more, its rooms delivering nothing and its sends refused
// as unavailable. A connection that answers no PING for two pingIntervals, or does not
// take a write within writeTimeout, is dropped and another member tried. Both are far
// beyond what a live server, even a loaded one, takes to answer.
const (
	pingInterval = 3 * time.Second
	maxPingsOut  = 2
	writeTimeout = 10 * time.Second
)

// Load checks the values Config takes from the environment (the URL is checked by
// connecting) and reads the password file; environ supplies the raw values for the
// error, which never holds the password.
func (c *Config) Load(environ map[string]string) error {
	bad := func(name, allowed string) error { return envconfig.Invalid(environ, name, allowed) }
	switch {
	case c.User == "" && c.PasswordFile == "":
	case c.URL == "":
		name := "ROOMCAST_NATS_USER"
		if c.User == "" {
			name = "ROOMCAST_NATS_PASSWORD_FILE"
		}
		return bad(name, "want it empty when NATS_URL is: the embedded NATS server has no users")
	case c.User == "" || strings.ContainsFunc(c.User, unicode.IsSpace):
		return bad("ROOMCAST_NATS_USER", "want a user name without white space when ROOMCAST_NATS_PASSWORD_FILE is set")
	case c.PasswordFile == "":
		return bad("ROOMCAST_NATS_PASSWORD_FILE", "want the file holding the password of ROOMCAST_NATS_USER")
	case strings.Contains(c.URL, "@"):
		return &envconfig.Error{Var: "NATS_URL", Value: envconfig.MaskUserinfo(c.URL),
			Allowed: "want no credentials in it when ROOMCAST_NATS_USER is set: one of the two"}
	default:
		b, err := auth.ReadFile(c.PasswordFile, nil)
		if err != nil || len(b) == 0 {
			return bad("ROOMCAST_NATS_PASSWORD_FILE", "want a readable, non-empty file")
		}
		c.Password = string(b)
	}
	return c.History.Validate(environ)
}

// Connect creates the connection. It returns at once even if no server is reachable:
// the connection keeps trying in the background and Ready reports the state.
func Connect(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Broker, error) {
	f := promauto.With(reg)
	b := &Broker{
		log:    log,
		closed: make(chan struct{}),
		connected: f.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_broker_connected", Help: "1 while the replica has a NATS connection.",
		}),
		disconnects: f.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_broker_disconnects_total", Help: "Times the NATS connection was lost.",
		}),
		reconnectErr: f.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_broker_reconnect_failures_total", Help: "Attempts to connect to NATS again, after the connection was lost, that failed.",
		}),
		asyncErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_broker_async_errors_total",
			Help: "Asynchronous NATS errors by kind (slow_consumer: messages dropped by the client library).",
		}, []string{"kind"}),
		decodeErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_broker_decode_errors_total", Help: "NATS messages that were not a roomcast envelope.",
		}),
	}
	b.asyncErrors.WithLabelValues("slow_consumer")
	b.asyncErrors.WithLabelValues("other")
	wait := cfg.ReconnectWait
	if wait <= 0 {
		wait = time.Second
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(cmp.Or(cfg.ConnectTimeout, DefaultConnectTimeout)),
		// The connection's socket is read and written raw (see rawsock: through net.Conn
		// each read and write woke the runtime's monitor thread). The dialer resolves a
		// host name itself, as nats.go does without it: its addresses in random order,
		// sharing the timeout.
		nats.SetCustomDialer(rawsock.Dialer{Timeout: cmp.Or(cfg.ConnectTimeout, DefaultConnectTimeout)}),
		nats.SkipHostLookup(),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.FlusherTimeout(writeTimeout),
		nats.CustomReconnectDelay(reconnectDelay(wait)),
		// No reconnect buffer: a publish while disconnected must fail, not wait in memory
		// for a reconnect that may never come.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(*nats.Conn) {
			b.connected.Set(1)
			log.Info("nats connected")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.connected.Set(1)
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
			go b.resync(nc)
			if hook := b.reconnectHook.Load(); hook != nil {
				go (*hook)()
			}
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			b.connected.Set(0)
			b.resyncing.Store(true)
			if nc.IsClosed() || nc.IsDraining() {
				return // our own Drain or Close
			}
			b.disconnects.Inc()
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			b.reconnectErr.Inc()
			log.Debug("nats reconnect attempt failed", "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			b.connected.Set(0)
			close(b.closed)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			kind := "other"
			if errors.Is(err, nats.ErrSlowConsumer) {
				kind = "slow_consumer"
			}
			b.asyncErrors.WithLabelValues(kind).Inc()
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "kind", kind, "subject", subject, "err", err)
		}),
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	opts = append(opts, cfg.Options...)
	url := cfg.URL
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS %q: %w", url, err)
	}
	b.nc = nc
	if nc.IsConnected() {
		b.connected.Set(1)
	}
	if err := reg.Register(rttCollector{nc}); err != nil {
		nc.Close()
		return nil, fmt.Errorf("registering the NATS round trip metric: %w", err)
	}
	if cfg.History.Size > 0 {
		b.hist, err = newHistory(b, cfg.History, reg)
		if err != nil {
			nc.Close()
			return nil, err
		}
	}
	return b, nil
}

// resync waits, bounded per try, for a round trip on the new connection, which the
// server answers after the subscriptions nats.go resent ahead of it.
func (b *Broker) resync(nc *nats.Conn) {
	for nc.IsConnected() {
		if err := nc.FlushTimeout(2 * time.Second); err == nil {
			b.resyncing.Store(false)
			return
		}
	}
}
