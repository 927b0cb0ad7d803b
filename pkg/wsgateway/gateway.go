package wsgateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"roomcast/pkg/chat"
	"roomcast/pkg/hub"
	"roomcast/pkg/ratelimit"
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
	MaxMessageBytes int
	// RateLimit is applied to every frame a client sends.
	RateLimit ratelimit.Config
	// AllowedOrigins, when not empty, is the list of Origin values browsers may use.
	AllowedOrigins []string
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
}

// Gateway is the http.Handler for PathPrefix.
type Gateway struct {
	cfg      Config
	hub      *hub.Hub
	broker   chat.Broker
	log      *slog.Logger
	upgrader *gws.Upgrader
	ids      *idSource
	received prometheus.Counter

	errRateLimited []byte
	errUnavailable []byte
}

// New returns a gateway that joins members to h and publishes on broker.
func New(cfg Config, h *hub.Hub, broker chat.Broker, log *slog.Logger, reg prometheus.Registerer) *Gateway {
	if cfg.SubscribeTimeout <= 0 {
		cfg.SubscribeTimeout = 5 * time.Second
	}
	if cfg.ReplayTimeout <= 0 {
		cfg.ReplayTimeout = 30 * time.Second
	}
	g := &Gateway{
		cfg:    cfg,
		hub:    h,
		broker: broker,
		log:    log,
		ids:    newIDSource(),
		received: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "roomcast_messages_received_total", Help: "Data frames received from clients.",
		}),
		errRateLimited: errorFrame(chat.CodeRateLimited, "too many messages: "+
			strconv.FormatFloat(cfg.RateLimit.PerSecond, 'g', -1, 64)+"/s allowed, burst "+strconv.Itoa(cfg.RateLimit.Burst)),
		errUnavailable: errorFrame(chat.CodeUnavailable, "message not sent: the server has no broker connection, try again"),
	}
	g.upgrader = gws.NewUpgrader(events{g}, &gws.ServerOption{
		ReadMaxPayloadSize: 4*cfg.MaxMessageBytes + 1024,
		CheckUtf8Enabled:   true,
		HandshakeTimeout:   5 * time.Second,
		ResponseHeader:     cfg.ResponseHeader.Clone(),
		// Our per-connection state lives in wsConn; skip gws's map per connection.
		NewSession: func() gws.SessionStorage { return noSession{} },
		Logger:     gwsLogger{log},
		Recovery: func(gws.Logger) {
			if p := recover(); p != nil {
				g.hub.CountError(chat.KindInternal)
				g.log.Error("panic in WebSocket handler", "panic", p, "stack", string(debug.Stack()))
			}
		},
	})
	return g
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
	if err := g.broker.Ready(); err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, "not ready", err.Error())
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
		writeJSONError(w, http.StatusServiceUnavailable, "draining", "this replica is shutting down; reconnect")
		return
	case err != nil:
		g.log.Warn("join failed", "room", room, "err", err)
		writeJSONError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	if err := g.upgrade(w, r, member); err != nil {
		g.hub.Leave(member)
		g.log.Debug("upgrade failed", "room", room, "err", err)
		return
	}
	if resuming {
		go g.replay(member, *resume)
	}
}

// resumeRequest is what a reconnecting client asks for: everything after since, in the
// history store named by epoch (if it gave one).
type resumeRequest struct {
	since uint64
	epoch string
}

func parseResume(r *http.Request) (*resumeRequest, error) {
	q := r.URL.Query()
	sinceText, hasSince := q["since"]
	if !hasSince {
		if q.Has("epoch") {
			return nil, errors.New("epoch is only meaningful with since")
		}
		return nil, nil
	}
	since, err := strconv.ParseUint(sinceText[0], 10, 64)
	if err != nil || len(sinceText) > 1 {
		return nil, fmt.Errorf("since must be one non-negative integer (a seq), got %q", strings.Join(sinceText, ","))
	}
	epoch := q.Get("epoch")
	if len(epoch) > 64 || strings.ContainsFunc(epoch, func(c rune) bool {
		return !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_')
	}) {
		return nil, fmt.Errorf("epoch must be up to 64 characters of [A-Za-z0-9_-], got %q", epoch)
	}
	return &resumeRequest{since: since, epoch: epoch}, nil
}

// replay sends a resuming member the stored messages it missed, then releases the live
// messages held meanwhile, skipping those it already got: no gap, no duplicate.
func (g *Gateway) replay(member *hub.Member, req resumeRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.ReplayTimeout)
	defer cancel()
	res, err := g.cfg.History.Replay(ctx, member.Room(), req.since, req.epoch)
	if err != nil {
		g.hub.CountError(chat.KindHistory)
		g.log.Warn("replay failed; the client continues live", "room", member.Room(), "err", err)
		member.Send(errorFrame(chat.CodeHistoryUnavailable, "history could not be replayed; continuing live: "+err.Error()))
		g.release(ctx, member, req.since)
		return
	}
	if res.Truncated {
		member.Send(errorFrame(chat.CodeHistoryTruncated,
			"messages after seq "+strconv.FormatUint(req.since, 10)+" may have been dropped from history; replaying everything kept"))
	}
	for _, msg := range res.Messages {
		if err := member.SendMessage(ctx, EncodeMessage(msg), msg.Accepted); err != nil {
			g.log.Debug("replay stopped", "room", member.Room(), "err", err)
			break
		}
	}
	g.release(ctx, member, res.Last)
}

func (g *Gateway) release(ctx context.Context, member *hub.Member, after uint64) {
	if err := member.Release(ctx, after); err != nil && !errors.Is(err, hub.ErrClosed) {
		// The client did not read its backlog in time: it is as slow as it gets.
		g.hub.CountError(chat.KindSlowConsumer)
		member.Close(hub.CloseTryAgainLater, "slow consumer: backlog after resume not read")
	}
}

func (g *Gateway) upgrade(w http.ResponseWriter, r *http.Request, member *hub.Member) error {
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
	// A small reader per connection: idle connections are the common case, and gws
	// reads larger payloads straight into its own buffers.
	br := bufio.NewReaderSize(&c.net, readBufferSize)
	socket, err := g.upgrader.UpgradeFromConn(&c.net, br, r)
	if err != nil {
		return fmt.Errorf("upgrading: %w", err)
	}
	c.ws = socket
	c.touch(g.cfg.IdleTimeout)
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

// events is gws's event handler for every connection of the gateway.
type events struct{ g *Gateway }

func (e events) OnOpen(*gws.Conn) {}

func (e events) OnPing(socket *gws.Conn, payload []byte) {
	c := connOf(socket)
	c.touch(e.g.cfg.IdleTimeout)
	c.member.Send(pongFrame(payload))
}

func (e events) OnPong(socket *gws.Conn, _ []byte) { connOf(socket).touch(e.g.cfg.IdleTimeout) }

func (e events) OnMessage(socket *gws.Conn, message *gws.Message) {
	defer message.Close()
	g := e.g
	c := connOf(socket)
	c.touch(g.cfg.IdleTimeout)
	g.received.Inc()
	if message.Opcode != gws.OpcodeText {
		g.hub.CountError(chat.KindUnsupportedData)
		c.Close(closeUnsupportedData, "binary frames are not supported")
		return
	}
	now := time.Now()
	if c.limiter == nil {
		c.limiter = ratelimit.New(g.cfg.RateLimit)
	}
	switch c.limiter.Check(now) {
	case ratelimit.Allow:
	case ratelimit.Drop:
		g.hub.CountError(chat.KindRateLimited)
		return
	case ratelimit.DropAndWarn:
		g.hub.CountError(chat.KindRateLimited)
		c.member.Send(g.errRateLimited)
		return
	case ratelimit.Close:
		g.hub.CountError(chat.KindRateLimited)
		c.member.Close(closePolicyViolation, "rate limit exceeded for too long")
		return
	}
	text, err := chat.ParseClientFrame(message.Bytes(), g.cfg.MaxMessageBytes)
	if err != nil {
		var ie *chat.InputError
		if !errors.As(err, &ie) {
			ie = &chat.InputError{Code: chat.CodeBadRequest, Kind: chat.KindBadRequest, Reason: err.Error()}
		}
		g.hub.CountError(ie.Kind)
		c.member.Send(errorFrame(ie.Code, ie.Reason))
		return
	}
	msg := chat.Message{ID: g.ids.next(), Room: c.member.Room(), Text: text, Accepted: now.UTC()}
	if err := g.broker.Publish(context.Background(), msg); err != nil {
		g.hub.CountError(chat.KindBroker)
		c.member.Send(g.errUnavailable)
		g.log.Debug("publish failed", "room", msg.Room, "err", err)
	}
}

func (e events) OnClose(socket *gws.Conn, err error) {
	c := connOf(socket)
	if !c.closedByUs.Load() {
		if kind, ok := classifyClose(err); ok {
			e.g.hub.CountError(kind)
		}
	}
	e.g.hub.Leave(c.member)
}

// classifyClose names the client's fault behind a connection gws closed, if any.
func classifyClose(err error) (chat.ErrorKind, bool) {
	if errors.Is(err, gws.ErrTextEncoding) {
		return chat.KindInvalidUTF8, true
	}
	var code interface{ Uint16() uint16 }
	if errors.As(err, &code) {
		switch code.Uint16() {
		case 1009:
			return chat.KindFrameTooLarge, true
		case 1002:
			return chat.KindProtocol, true
		case 1007:
			return chat.KindInvalidUTF8, true
		}
	}
	return "", false
}

// idSource makes message IDs unique across replicas without coordination: a random
// per-process prefix and a counter.
type idSource struct {
	prefix string
	n      atomic.Uint64
}

func newIDSource() *idSource {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &idSource{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (s *idSource) next() string { return s.prefix + strconv.FormatUint(s.n.Add(1), 36) }

type noSession struct{}

func (noSession) Len() int                     { return 0 }
func (noSession) Load(string) (any, bool)      { return nil, false }
func (noSession) Delete(string)                {}
func (noSession) Store(string, any)            {}
func (noSession) Range(func(string, any) bool) {}

type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("gws", "detail", fmt.Sprint(v...)) }
