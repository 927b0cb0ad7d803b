package wsgateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/ratelimit"
	"roomcast/pkg/server/wsframe"
)

// events is gws's event handler for every connection of the gateway.
type events struct{ g *Gateway }

func (e events) OnOpen(*gws.Conn) {}

func (e events) OnPing(socket *gws.Conn, payload []byte) {
	c := connOf(socket)
	c.touch(e.g.cfg.IdleTimeout)
	c.member.Send(wsframe.Pong(payload))
}

func (e events) OnPong(socket *gws.Conn, _ []byte) { connOf(socket).touch(e.g.cfg.IdleTimeout) }

func (e events) OnMessage(socket *gws.Conn, message *gws.Message) {
	defer message.Close()
	g := e.g
	c := connOf(socket)
	c.touch(g.cfg.IdleTimeout)
	g.received.Inc()
	if message.Opcode != gws.OpcodeText {
		g.errs.Count(chat.KindUnsupportedData)
		c.Close(wsframe.CloseUnsupportedData, "binary frames are not supported")
		return
	}
	now := time.Now()
	if c.limiter == nil {
		c.limiter = ratelimit.New(g.cfg.RateLimit)
	}
	switch c.limiter.Check(now) {
	case ratelimit.Allow:
	case ratelimit.Drop:
		g.errs.Count(chat.KindRateLimited)
		return
	case ratelimit.DropAndWarn:
		g.errs.Count(chat.KindRateLimited)
		c.member.Send(g.errRateLimited)
		return
	case ratelimit.Close:
		g.errs.Count(chat.KindRateLimited)
		c.member.Close(wsframe.ClosePolicyViolation, "rate limit exceeded for too long")
		return
	}
	frame, err := chat.DecodeClientFrame(message.Bytes(), g.cfg.MaxMessageBytes)
	if err != nil {
		var ie *chat.InputError
		if !errors.As(err, &ie) {
			ie = &chat.InputError{Code: chat.CodeBadRequest, Kind: chat.KindBadRequest, Reason: err.Error()}
		}
		g.errs.Count(ie.Kind)
		c.member.Send(wsframe.Error(ie.Code, ie.Reason))
		return
	}
	if frame.Type == chat.FrameRefresh {
		g.refreshToken(c, frame.Token)
		return
	}
	if c.readOnly.Load() {
		g.errs.Count(chat.KindForbidden)
		c.member.Send(wsframe.ReadOnly)
		return
	}
	msg := chat.Message{ID: g.ids.next(), Room: c.member.Room(), Text: frame.Message, Accepted: now.UTC()}
	if g.async != nil {
		// The read goroutine goes on at once; the broker's answer comes to publishDone.
		if c.publishDone == nil {
			c.publishDone = func(err error) { g.publishFailed(c, err) }
		}
		if err := g.async.PublishAsync(msg, c.publishDone); err != nil {
			g.publishFailed(c, err)
		}
		return
	}
	if err := g.broker.Publish(context.Background(), msg); err != nil {
		g.publishFailed(c, err)
	}
}

// asyncPublisher is a chat.Broker that can publish without waiting for the broker's
// answer (natsbroker's, with its bounded window of unanswered publishes).
type asyncPublisher interface {
	// PublishAsync returns an error when msg was not sent; otherwise it calls done once
	// with the outcome, possibly before it returns.
	PublishAsync(msg chat.Message, done func(error)) error
}

// publishFailed tells the sender its message was not taken (nil: it was). It may run on
// the broker's goroutine.
func (g *Gateway) publishFailed(c *wsConn, err error) {
	if err == nil {
		return
	}
	g.errs.Count(chat.KindBroker)
	c.member.Send(wsframe.Unavailable)
	g.refusals.note(g.log, c.member.Room(), err, time.Now())
}

// refusalLogEvery is the least time between two log lines about refused publishes.
const refusalLogEvery = time.Second

// refusalLog logs the publishes refused (the senders got unavailable) at most once per
// refusalLogEvery, with how many since the previous line and the latest cause: a
// broker that goes away refuses every message for seconds, and an operator needs when
// and why, not a line per message.
type refusalLog struct {
	mu     sync.Mutex
	last   time.Time
	counts int
}

func (r *refusalLog) note(log *slog.Logger, room string, err error, now time.Time) {
	r.mu.Lock()
	r.counts++
	n := r.counts
	due := now.Sub(r.last) >= refusalLogEvery
	if due {
		r.last, r.counts = now, 0
	}
	r.mu.Unlock()
	if due {
		log.Warn("messages refused: their senders were told unavailable", "refused", n, "latest_room", room, "latest_err", err)
	}
}

func (e events) OnClose(socket *gws.Conn, err error) {
	c := connOf(socket)
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if c.releaseIP != nil {
		c.releaseIP()
	}
	if !c.closedByUs.Load() {
		if kind, ok := classifyClose(err); ok {
			e.g.errs.Count(kind)
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
		case wsframe.CloseMessageTooBig:
			return chat.KindFrameTooLarge, true
		case wsframe.CloseProtocolError:
			return chat.KindProtocol, true
		case wsframe.CloseInvalidPayload:
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
