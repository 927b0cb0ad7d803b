package wsgateway

import (
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"roomcast/pkg/auth"
	"roomcast/pkg/chat"
	"roomcast/pkg/server/hub"
	"roomcast/pkg/server/ratelimit"
	"roomcast/pkg/server/servermetrics"
	"roomcast/pkg/server/wsframe"
)

// Config is the gateway's policy.
type Config struct {
	// MaxMessageBytes is the largest accepted message text. Frames may be up to
	// 4 × MaxMessageBytes + 1 KiB, room for JSON escaping; bigger ones close with
	// wsframe.CloseMessageTooBig.
	MaxMessageBytes int `env:"ROOMCAST_MAX_MESSAGE_BYTES" envDefault:"4096" help:"largest accepted message, in bytes (1 to 1048576)"`
	// RateLimit is applied to every frame a client sends (WarnEvery default 1s,
	// CloseAfter 10s).
	RateLimit ratelimit.Config
	// AllowedOrigins is the list of Origin values browsers may use; when empty, only pages
	// of the host a browser connects to (its Origin names the request's Host); "*" allows
	// any. Clients that send no Origin (not browsers) are not checked.
	AllowedOrigins Origins `env:"ROOMCAST_ALLOWED_ORIGINS" help:"comma-separated Origin values browsers may connect from (such as https://chat.example); empty: only pages of the host connected to; * allows any"`
	// IdleTimeout closes a connection that has sent nothing for that long.
	IdleTimeout time.Duration
	// ResponseHeader is added to the 101 response (color and instance).
	ResponseHeader http.Header
	// SubscribeTimeout bounds the room subscription done before the upgrade is answered.
	SubscribeTimeout time.Duration
	// ReadyWait is how long an upgrade that finds the broker not ready waits for it
	// before it is refused: a replica whose NATS member went away (its node drained or
	// restarted) is back on another member within a moment.
	ReadyWait time.Duration `env:"ROOMCAST_READY_WAIT" envDefault:"2s" help:"how long an upgrade waits for the replica's NATS connection (or history stream) to be ready before it is refused with 503 not ready; 0 refuses at once"`
	// History replays a room's recent messages to clients that reconnect with ?since=;
	// nil when history is off (since is then accepted and ignored).
	History chat.History
	// ReplayTimeout bounds one replay (default 30s).
	ReplayTimeout time.Duration
	// Auth, when set, requires a token for every upgrade (AuthConfig builds it).
	Auth *auth.Verifier
	// Limits are the admission limits.
	Limits Limits
}

// Gateway is the http.Handler for PathPrefix.
type Gateway struct {
	cfg        Config
	hub        *hub.Hub
	broker     chat.Broker
	async      asyncPublisher // broker, when it can publish without waiting; else nil
	log        *slog.Logger
	upgrader   *gws.Upgrader // selects no subprotocol
	upgraderV1 *gws.Upgrader // selects roomcast.v1
	upgraderB  *gws.Upgrader // selects the batched subprotocol
	admission  *admission
	ids        *idSource
	received   prometheus.Counter
	authFails  *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	errs       *servermetrics.Errors
	refusals   refusalLog

	errRateLimited []byte // the frame, which depends on the configured rate
}

// New returns a gateway that joins members to h, publishes on broker, counts errors in
// errs (shared with the hub) and registers its other metrics with reg.
func New(cfg Config, h *hub.Hub, broker chat.Broker, errs *servermetrics.Errors, log *slog.Logger, reg prometheus.Registerer) *Gateway {
	if cfg.SubscribeTimeout <= 0 {
		cfg.SubscribeTimeout = 5 * time.Second
	}
	if cfg.ReplayTimeout <= 0 {
		cfg.ReplayTimeout = 30 * time.Second
	}
	if cfg.RateLimit.WarnEvery <= 0 {
		cfg.RateLimit.WarnEvery = time.Second
	}
	if cfg.RateLimit.CloseAfter <= 0 {
		cfg.RateLimit.CloseAfter = 10 * time.Second // the contract's
	}
	f := promauto.With(reg)
	g := &Gateway{
		cfg:       cfg,
		hub:       h,
		broker:    broker,
		log:       log,
		admission: newAdmission(cfg.Limits),
		ids:       newIDSource(),
		received: f.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_messages_received_total", Help: "Data frames received from clients.",
		}),
		authFails: f.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_auth_failures_total", Help: "Upgrades refused for their token, by reason.",
		}, []string{"reason"}),
		rejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_admission_rejected_total", Help: "Upgrades refused by an admission limit or readiness, by reason.",
		}, []string{"reason"}),
		errs:           errs,
		errRateLimited: wsframe.RateLimited(cfg.RateLimit.PerSecond, cfg.RateLimit.Burst),
	}
	g.async, _ = broker.(asyncPublisher)
	for _, r := range auth.Reasons {
		g.authFails.WithLabelValues(string(r))
	}
	for _, r := range rejectReasons {
		g.rejected.WithLabelValues(r)
	}
	g.upgrader = g.newUpgrader(nil)
	g.upgraderV1 = g.newUpgrader([]string{SubprotocolV1})
	g.upgraderB = g.newUpgrader([]string{SubprotocolBatch})
	return g
}

// newUpgrader returns a gws upgrader selecting one of subprotocols (none if empty); gws
// refuses a handshake that offers none of a non-empty list, so each choice has its own.
func (g *Gateway) newUpgrader(subprotocols []string) *gws.Upgrader {
	return gws.NewUpgrader(events{g}, &gws.ServerOption{
		ReadMaxPayloadSize: 4*g.cfg.MaxMessageBytes + 1024,
		CheckUtf8Enabled:   true,
		HandshakeTimeout:   5 * time.Second,
		ResponseHeader:     g.cfg.ResponseHeader.Clone(),
		SubProtocols:       subprotocols,
		// Our per-connection state lives in wsConn; skip gws's map per connection.
		NewSession: func() gws.SessionStorage { return noSession{} },
		Logger:     gwsLogger{g.log},
		Recovery: func(gws.Logger) {
			if p := recover(); p != nil {
				g.errs.Count(chat.KindInternal)
				g.log.Error("panic in WebSocket handler", "panic", p, "stack", string(debug.Stack()))
			}
		},
	})
}
