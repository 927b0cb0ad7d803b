package wsgateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"roomcast/pkg/auth"
	"roomcast/pkg/chat"
	"roomcast/pkg/server/hub"
	"roomcast/pkg/server/ratelimit"
)

// Close codes sent by the gateway.
const (
	closeUnsupportedData = 1003
	closePolicyViolation = 1008
)

// PathPrefix is where rooms live: PathPrefix + "{room}" with an optional trailing slash.
const PathPrefix = "/ws/chat/"

// Config is the gateway's policy.
type Config struct {
	// MaxMessageBytes is the largest accepted message text. Frames may be up to
	// 4 × MaxMessageBytes + 1 KiB, room for JSON escaping; bigger ones close with 1009.
	MaxMessageBytes int `env:"ROOMCAST_MAX_MESSAGE_BYTES" envDefault:"4096" help:"largest accepted message, in bytes (1 to 1048576)"`
	// RateLimit is applied to every frame a client sends (WarnEvery default 1s,
	// CloseAfter 10s).
	RateLimit ratelimit.Config
	// AllowedOrigins, when not empty, is the list of Origin values browsers may use.
	AllowedOrigins Origins `env:"ROOMCAST_ALLOWED_ORIGINS" help:"comma-separated allowed Origin values; empty allows any"`
	// IdleTimeout closes a connection that has sent nothing for that long.
	IdleTimeout time.Duration
	// ResponseHeader is added to the 101 response (color and instance).
	ResponseHeader http.Header
	// SubscribeTimeout bounds the room subscription done before the upgrade is answered.
	SubscribeTimeout time.Duration
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
	log        *slog.Logger
	upgrader   *gws.Upgrader // selects no subprotocol
	upgraderV1 *gws.Upgrader // selects roomcast.v1
	admission  *admission
	ids        *idSource
	received   prometheus.Counter
	authFails  *prometheus.CounterVec
	rejected   *prometheus.CounterVec

	errRateLimited []byte
	errUnavailable []byte
	errReadOnly    []byte
}

// New returns a gateway that joins members to h and publishes on broker.
func New(cfg Config, h *hub.Hub, broker chat.Broker, log *slog.Logger, reg prometheus.Registerer) *Gateway {
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
		errRateLimited: errorFrame(chat.CodeRateLimited, "too many messages: "+
			strconv.FormatFloat(cfg.RateLimit.PerSecond, 'g', -1, 64)+"/s allowed, burst "+strconv.Itoa(cfg.RateLimit.Burst)),
		errUnavailable: errorFrame(chat.CodeUnavailable, "message not sent: the server has no broker connection, try again"),
		errReadOnly:    errorFrame(chat.CodeForbidden, "message not sent: this token may read the room but not write to it"),
	}
	for _, r := range auth.Reasons {
		g.authFails.WithLabelValues(string(r))
	}
	for _, r := range rejectReasons {
		g.rejected.WithLabelValues(r)
	}
	g.upgrader = g.newUpgrader(nil)
	g.upgraderV1 = g.newUpgrader([]string{SubprotocolV1})
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
				g.hub.CountError(chat.KindInternal)
				g.log.Error("panic in WebSocket handler", "panic", p, "stack", string(debug.Stack()))
			}
		},
	})
}

// RoomFromPath returns the room of a /ws/chat/{room}[/] path, validated.
func RoomFromPath(path string) (string, error) {
	rest, ok := strings.CutPrefix(path, PathPrefix)
	if !ok {
		return "", fmt.Errorf("%w: path must be %s{room}/", chat.ErrInvalidRoom, PathPrefix)
	}
	rest = strings.TrimSuffix(rest, "/")
	if err := chat.ValidateRoom(rest); err != nil {
		return "", err
	}
	return rest, nil
}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed", "use GET with a WebSocket upgrade")
		return
	}
	room, err := RoomFromPath(r.URL.Path)
	if err != nil {
		g.hub.CountError(chat.KindInvalidRoom)
		writeJSONError(w, http.StatusBadRequest, "invalid room name",
			"a room name is 1 to 64 characters of [A-Za-z0-9_-]: "+err.Error())
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && len(g.cfg.AllowedOrigins) > 0 &&
		!slices.Contains(g.cfg.AllowedOrigins, origin) {
		g.hub.CountError(chat.KindForbiddenOrigin)
		writeJSONError(w, http.StatusForbidden, "origin not allowed", "Origin "+strconv.Quote(origin)+" is not in ROOMCAST_ALLOWED_ORIGINS")
		return
	}
	resume, err := parseResume(r)
	if err != nil {
		g.hub.CountError(chat.KindBadRequest)
		writeJSONError(w, http.StatusBadRequest, "invalid resume parameters", err.Error())
		return
	}
	if !isWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		writeJSONError(w, http.StatusUpgradeRequired, "websocket upgrade required",
			"connect with a WebSocket client (Upgrade: websocket, Sec-WebSocket-Version: 13)")
		return
	}
	claims, offered, err := g.authorize(r, room)
	if err != nil {
		var ae *auth.Error
		reason := auth.ReasonMalformed
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		g.authFails.WithLabelValues(string(reason)).Inc()
		if reason == auth.ReasonRoom {
			writeJSONError(w, http.StatusForbidden, "forbidden", err.Error())
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="roomcast"`)
			writeJSONError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		}
		return
	}
	if err := g.broker.Ready(); err != nil {
		g.rejected.WithLabelValues(rejectNotReady).Inc()
		writeJSONError(w, http.StatusServiceUnavailable, "not ready", err.Error())
		return
	}
	releaseIP, ok := g.admit(w, r, room)
	if !ok {
		return
	}
	resuming := resume != nil && g.cfg.History != nil
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.SubscribeTimeout)
	var member *hub.Member
	if resuming {
		member, err = g.hub.JoinHeld(ctx, room)
	} else {
		member, err = g.hub.Join(ctx, room)
	}
	cancel()
	switch {
	case errors.Is(err, hub.ErrDraining):
		releaseIP()
		g.rejected.WithLabelValues(rejectDraining).Inc()
		writeJSONError(w, http.StatusServiceUnavailable, "draining", "this replica is shutting down; reconnect")
		return
	case err != nil:
		releaseIP()
		g.log.Warn("join failed", "room", room, "err", err)
		writeJSONError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	if err := g.upgrade(w, r, member, claims, offered, releaseIP); err != nil {
		releaseIP()
		g.hub.Leave(member)
		g.log.Debug("upgrade failed", "room", room, "err", err)
		return
	}
	if resuming {
		go g.replay(member, *resume)
	}
}

// admit applies the admission limits; on refusal it has answered the request. The
// returned release gives the client's per-address slot back when the connection ends.
func (g *Gateway) admit(w http.ResponseWriter, r *http.Request, room string) (release func(), ok bool) {
	l := g.cfg.Limits
	if l.MaxConnections > 0 && g.hub.Len() >= l.MaxConnections {
		g.rejected.WithLabelValues(rejectMaxConnections).Inc()
		writeJSONError(w, http.StatusServiceUnavailable, "too many connections",
			"this replica holds its maximum of "+strconv.Itoa(l.MaxConnections)+" connections")
		return nil, false
	}
	if l.MaxRoomMembers > 0 && g.hub.RoomSize(room) >= l.MaxRoomMembers {
		g.rejected.WithLabelValues(rejectRoomFull).Inc()
		writeJSONError(w, http.StatusServiceUnavailable, "room full",
			"the room has its maximum of "+strconv.Itoa(l.MaxRoomMembers)+" members on this replica")
		return nil, false
	}
	release, ok = g.admission.holdIP(g.admission.clientAddr(r))
	if !ok {
		g.rejected.WithLabelValues(rejectPerIP).Inc()
		writeJSONError(w, http.StatusTooManyRequests, "too many connections from this address",
			"at most "+strconv.Itoa(l.MaxConnectionsPerIP)+" connections per client address")
		return nil, false
	}
	if ok, wait := g.admission.takeAccept(time.Now()); !ok {
		release()
		g.rejected.WithLabelValues(rejectAcceptRate).Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeJSONError(w, http.StatusServiceUnavailable, "too many new connections",
			"this replica accepts "+strconv.FormatFloat(l.AcceptRate, 'g', -1, 64)+" upgrades per second; retry")
		return nil, false
	}
	return release, true
}

func (g *Gateway) upgrade(w http.ResponseWriter, r *http.Request, member *hub.Member, claims *auth.Claims, offered []string, releaseIP func()) error {
	upgrader := g.upgrader
	switch {
	case slices.Contains(offered, SubprotocolV1):
		upgrader = g.upgraderV1
	case len(offered) > 0:
		// A browser that sent only bearer.<token> needs it selected back.
		for _, p := range offered {
			if strings.HasPrefix(p, bearerProtocolPrefix) {
				upgrader = g.newUpgrader([]string{p})
				break
			}
		}
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeJSONError(w, http.StatusInternalServerError, "internal error", "connection cannot be hijacked")
		return errors.New("response writer is not a Hijacker")
	}
	raw, brw, err := hj.Hijack()
	if err != nil {
		return fmt.Errorf("hijacking connection: %w", err)
	}
	if brw.Reader.Buffered() > 0 {
		_ = raw.Close()
		return errors.New("client sent data before the handshake completed")
	}
	c := newWSConn(raw, member)
	c.releaseIP = releaseIP
	// A small reader per connection: idle connections are the common case, and gws
	// reads larger payloads straight into its own buffers.
	br := bufio.NewReaderSize(&c.net, readBufferSize)
	socket, err := upgrader.UpgradeFromConn(&c.net, br, r)
	if err != nil {
		return fmt.Errorf("upgrading: %w", err)
	}
	c.ws = socket
	c.touch(g.cfg.IdleTimeout)
	if claims != nil {
		g.startExpiry(c, *claims)
	}
	member.Attach(c)
	go socket.ReadLoop()
	return nil
}

const readBufferSize = 1024

func isWebSocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		headerHasToken(r.Header.Get("Connection"), "upgrade") &&
		r.Header.Get("Sec-WebSocket-Key") != "" &&
		r.Header.Get("Sec-WebSocket-Version") == "13"
}

func headerHasToken(v, token string) bool {
	for part := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(strings.TrimSpace(part), token) {
			return true
		}
	}
	return false
}

func writeJSONError(w http.ResponseWriter, status int, msg, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg, "detail": detail})
}
