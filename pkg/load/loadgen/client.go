package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lxzan/gws"
)

// member is one client in one room: one connection (link) at a time, and in the
// scenarios that reconnect, a new one after the server closes the last.
//
// Ownership: fields set before the first dial are read-only afterwards; sent is written
// by the member's sender goroutine only; inbox, the resume point and unconfirmed are
// touched by the member's read loop, which is one goroutine at a time: a reconnect
// starts from the previous read loop's OnClose and dials the next one, so each
// hand-over is ordered by a go statement.
type member struct {
	r        *runner
	id       int
	room     int
	roomSize int
	roomName string
	inbox    *Inbox // nil when the member receives nothing we count (idle, storm clients)
	// storm marks a reconnect storm's silent clients, which reconnect whenever their
	// connection ends (see stormReconnect).
	storm bool

	link atomic.Pointer[link] // the open connection; nil before the first and between two
	sent atomic.Uint64        // messages sent so far, which is also the next seq
	// urlIndex is the index in Config.URLs of the last connection attempt; written by
	// the dialing goroutine, which the ordering above makes one at a time.
	urlIndex int

	// The resume point: the latest seq (and epoch) of the room seen in a message frame.
	hasSeq bool
	seq    uint64
	epoch  string
	// sentOn are the connections this member's messages went out on, in order, once
	// each has ended; complete in the scenarios that reconnect, which read it.
	sentOn []sentOn
	// told is set by a history_truncated or history_unavailable frame: the server said
	// a resume may have missed messages.
	told atomic.Bool
	// untold counts, once the run has ended, the deliveries lost here without told.
	untold atomic.Int64
	// refused counts the unavailable error frames this member got: each answers one of
	// its messages that the server did not send.
	refused atomic.Int64
	// unanswered counts, once the run has ended, this member's messages lost without
	// it told (see ReconnectResult.Unanswered); nowhere lists the first of the messages
	// it reckons with.
	unanswered atomic.Int64
	nowhere    []uint64

	mu      sync.Mutex   // guards history, dropped and failedSends
	history []Connection // kept in the scenarios that reconnect
	dropped int          // connections beyond maxHistory, not kept
	// failedSends are the seqs whose write failed: never sent, so not unconfirmed
	// either. The read loop's close handler may have counted the unconfirmed messages
	// of that connection before the sender got to them, so the sender records its own.
	failedSends []uint64
}

// sentOn is one ended connection of a member: the seqs [from, to) it sent on it,
// whether the server ended it (cut) and how many unavailable frames came on it (each
// answers one of those messages).
type sentOn struct {
	from, to uint64
	cut      bool
	refused  int64
}

// maxHistory bounds the connections kept per client.
const maxHistory = 64

// link is one connection of a member and its gws event handler.
type link struct {
	m    *member
	conn *gws.Conn
	up   atomic.Bool // sends may use it: opened and no write has failed
	// color and instance are the 101's X-Roomcast-Color and X-Roomcast-Instance.
	color    string
	instance string
	// firstSeq is the member's next seq when the link opened; refused counts the
	// unavailable frames that came on it (read loop only).
	firstSeq uint64
	refused  int64
	hist     int // index in member.history, -1 when not kept
	// joined gets the outcome of a Centrifugo link's connect and subscribe (see join);
	// nil for roomcast.
	joined chan error
	// state says who ended the connection: linkOpen until then, linkDropped when the
	// storm dropped it (droppedAt says when), linkEnded otherwise. Whoever moves it
	// from linkOpen first decides.
	state     atomic.Int32
	droppedAt atomic.Int64 // UnixNano
}

const (
	linkOpen int32 = iota
	linkDropped
	linkEnded
)

// dial makes connection attempt number attempt (0: the first after a close, or the very
// first) to URLs[(urlIndex + attempt) % len(URLs)], with the resume query when the
// member has seen a seq, and starts its read loop; a Centrifugo client then joins its
// room's channel, within the same ConnectTimeout. It reports whether the attempt asked
// to resume. An upgrade the server refuses is an *upgradeRefused.
func (m *member) dial(attempt int) (resumed bool, err error) {
	r := m.r
	start := time.Now()
	idx := (m.urlIndex + attempt) % len(r.cfg.URLs)
	addr := roomURL(r.cfg.URLs[idx], m.roomName)
	if m.hasSeq {
		addr, resumed = resumeURL(addr, m.seq, m.epoch), true
	}
	l := &link{m: m, hist: -1}
	if r.centrifugo {
		addr, l.joined = centrifugoURL(r.cfg.URLs[idx]), make(chan error, 1)
	}
	conn, resp, err := r.open(l, addr)
	if err != nil {
		return resumed, fmt.Errorf("connecting client %d to %s: %w", m.id, addr, err)
	}
	m.urlIndex = idx
	l.conn = conn
	l.firstSeq = m.sent.Load()
	if resp != nil {
		l.color, l.instance = resp.Header.Get("X-Roomcast-Color"), resp.Header.Get("X-Roomcast-Instance")
	}
	if r.reconnecting {
		m.mu.Lock()
		if len(m.history) < maxHistory {
			l.hist = len(m.history)
			m.history = append(m.history, Connection{Color: l.color, Instance: l.instance, Opened: time.Now(), Resumed: resumed, FirstSeq: l.firstSeq})
		} else {
			m.dropped++
		}
		m.mu.Unlock()
	}
	l.up.Store(true)
	r.live.Add(1)
	r.readers.Add(1)
	m.link.Store(l)
	go conn.ReadLoop()
	if l.joined != nil {
		if err := l.join(start.Add(r.cfg.ConnectTimeout)); err != nil {
			return resumed, fmt.Errorf("subscribing client %d to channel %s at %s: %w", m.id, m.roomName, addr, err)
		}
	}
	return resumed, nil
}

// open dials addr and upgrades, both within one ConnectTimeout, sending the token when
// there is one; l handles the connection's events.
func (r *runner) open(l *link, addr string) (*gws.Conn, *http.Response, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(r.cfg.ConnectTimeout)
	d := net.Dialer{Deadline: deadline}
	raw, err := d.Dial("tcp", hostPort(u))
	if err != nil {
		return nil, nil, err
	}
	nc := raw
	if u.Scheme == "wss" {
		nc = tls.Client(raw, &tls.Config{ServerName: u.Hostname()})
	}
	left := time.Until(deadline)
	if left <= 0 {
		_ = nc.Close()
		return nil, nil, fmt.Errorf("upgrading: %w", os.ErrDeadlineExceeded)
	}
	conn, resp, err := gws.NewClientFromConn(l, &gws.ClientOption{
		Addr:             addr,
		HandshakeTimeout: left,
		RequestHeader:    r.header, // read only: gws copies it into each request
		// Frames are about 150 bytes; a small buffer keeps 10,000 idle clients cheap.
		ReadBufferSize:     2048,
		ReadMaxPayloadSize: 1 << 20,
		NewSession:         func() gws.SessionStorage { return noSession{} },
		Logger:             gwsLogger{r},
	}, nc)
	if err != nil && resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, nil, r.refused(resp)
	}
	return conn, resp, err
}

// hostPort is the host:port to dial for a ws:// or wss:// URL.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "wss" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// upgradeRefused is an upgrade the server answered with an HTTP status instead of 101.
type upgradeRefused struct {
	status int
	// retryAfter is the answer's Retry-After, when hasRetryAfter.
	retryAfter    time.Duration
	hasRetryAfter bool
	reason        string // the JSON body's error (and detail), when it has one
	hint          string // what to do about it
}

func (e *upgradeRefused) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP %d", e.status)
	if e.reason != "" {
		b.WriteString(": " + e.reason)
	}
	if e.hasRetryAfter {
		fmt.Fprintf(&b, " (Retry-After %v)", e.retryAfter)
	}
	if e.hint != "" {
		b.WriteString("; " + e.hint)
	}
	return b.String()
}

// retryable reports whether the refusal asks to come back later: a 503 or 429 with a
// Retry-After (the server's accept rate).
func (e *upgradeRefused) retryable() bool {
	return e.hasRetryAfter && (e.status == http.StatusServiceUnavailable || e.status == http.StatusTooManyRequests)
}

// refused reads a refusal of the upgrade. gws has closed the connection by then: only
// what arrived with the headers is read (the server's short JSON body).
func (r *runner) refused(resp *http.Response) *upgradeRefused {
	e := &upgradeRefused{status: resp.StatusCode}
	e.retryAfter, e.hasRetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if resp.Body != nil {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		_ = resp.Body.Close()
		var body struct {
			Error  string `json:"error"`
			Detail string `json:"detail"`
		}
		if json.Unmarshal(data, &body) == nil && body.Error != "" {
			e.reason = body.Error
			if body.Detail != "" {
				e.reason += " (" + body.Detail + ")"
			}
		}
	}
	switch {
	case e.status == http.StatusUnauthorized && r.cfg.Token == "":
		e.hint = "the server requires a token: give -token or -token-file"
	case e.status == http.StatusUnauthorized:
		e.hint = "the server refused the token"
	}
	return e
}

// parseRetryAfter reads a Retry-After value: seconds, or an HTTP date (RFC 9110).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(min(n, int64(maxDuration/time.Second))) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxDuration), true
}

// failureKind classifies an attempt that got no HTTP answer.
func failureKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "reset"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

// drop ends the connection as a dying proxy or replica would: the TCP connection is
// reset, no close frame is sent. It reports whether the connection was still open.
func (l *link) drop() bool {
	l.droppedAt.Store(time.Now().UnixNano())
	if !l.state.CompareAndSwap(linkOpen, linkDropped) {
		return false
	}
	nc := l.conn.NetConn()
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn() // no close_notify either
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // RST, not FIN
	}
	_ = nc.Close()
	return true
}

// send sends message seq = m.sent on the open connection, stamped now, using buf as
// scratch space; it returns buf for reuse. Without an open connection it sends nothing
// (a reconnecting client is silent). It counts the message in p before writing, so
// that a receiver never sees a message that is not counted yet.
func (m *member) send(p *phase, buf []byte, now time.Time) []byte {
	l := m.link.Load()
	if l == nil || !l.up.Load() {
		return buf
	}
	seq := m.sent.Load()
	buf = m.appendMessage(buf[:0], seq, now)
	m.sent.Store(seq + 1)
	p.sent.Add(1)
	p.expected.Add(int64(m.roomSize))
	if err := l.conn.WriteMessage(gws.OpcodeText, buf); err != nil {
		// Not written (gws writes a frame whole or fails): nobody can receive it, and its
		// sender knows, so it is not expected. Seen when the close handshake of a drain
		// ended between the last receive and this write.
		p.sent.Add(-1)
		p.expected.Add(-int64(m.roomSize))
		m.r.sendErrors.Add(1)
		m.mu.Lock()
		m.failedSends = append(m.failedSends, seq)
		m.mu.Unlock()
		if l.up.Swap(false) && !m.r.reconnecting {
			m.r.warn("send failed; this member sends no more", "client", m.id, "err", err)
		}
	}
	return buf
}

// appendMessage appends what the member sends for message seq: the frame
// {"message":"<text>"}, or for Centrifugo the command publishing it as data.
func (m *member) appendMessage(dst []byte, seq uint64, now time.Time) []byte {
	centrifugo := m.r.centrifugo
	if centrifugo {
		dst = appendPublishHead(dst, seq, m.roomName)
	}
	dst = append(dst, `{"message":"`...)
	dst = AppendText(dst, m.r.run, m.id, seq, now.UnixNano())
	dst = append(dst, `"}`...)
	if centrifugo {
		dst = append(dst, "}}"...)
	}
	return dst
}

// noteResume records the room's latest seq and epoch from a message frame.
func (m *member) noteResume(seq uint64, epoch []byte) {
	switch {
	case !m.hasSeq || string(epoch) != m.epoch:
		// A new epoch is a new history: its seqs start over.
		m.hasSeq, m.seq, m.epoch = true, seq, string(epoch)
	case seq > m.seq:
		m.seq = seq
	}
}

// reconnect dials until a connection opens or the run stops, waiting before each
// attempt with exponential backoff and full jitter. It runs in its own goroutine,
// started by the OnClose of the connection that ended at closedAt.
func (m *member) reconnect(closedAt time.Time) {
	r := m.r
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for attempt := 0; ; attempt++ {
		timer.Reset(Backoff(attempt, r.cfg.ReconnectBase, r.cfg.ReconnectMax, rand.Int64N))
		select {
		case <-timer.C:
		case <-r.stopRedials:
			return
		}
		resumed, err := m.dial(attempt)
		if err != nil {
			r.connectFailures.Add(1)
			r.warn("reconnect failed", "client", m.id, "attempt", attempt+1, "err", err)
			continue
		}
		r.reconnectTime.record(time.Since(closedAt))
		r.reconnects.Add(1)
		if resumed {
			r.resumes.Add(1)
		}
		return
	}
}

// Backoff is the wait before reconnect attempt n (from 0): exponential backoff with
// full jitter, a random time in [0, min(maxWait, base × 2^n)); randN(k) returns a
// random number in [0, k).
func Backoff(n int, base, maxWait time.Duration, randN func(int64) int64) time.Duration {
	ceil := maxWait
	if n < 62 && base <= maxWait>>n {
		ceil = base << n
	}
	if ceil <= 0 {
		return 0
	}
	return time.Duration(randN(int64(ceil)))
}

func (l *link) OnOpen(*gws.Conn) {}

func (l *link) OnClose(_ *gws.Conn, err error) {
	m, r := l.m, l.m.r
	defer r.readers.Done()
	l.up.Store(false)
	if l.joined != nil {
		l.joinDone(fmt.Errorf("the connection ended before the subscribe reply: %v", err))
	}
	m.link.CompareAndSwap(l, nil)
	r.live.Add(-1)
	now := time.Now()
	dropped := !l.state.CompareAndSwap(linkOpen, linkEnded)
	if r.closing.Load() {
		m.closed(l, now, 0)
		m.ended(l, false)
		return
	}
	if dropped {
		// The storm's drop, not the server's doing: the client reconnects at once.
		droppedAt := time.Unix(0, l.droppedAt.Load())
		r.redial(func() { m.stormReconnect(droppedAt, true) })
		return
	}
	code := uint16(1006)
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	m.closed(l, now, code)
	r.countClose(code)
	expected := r.expectedClose(code)
	if !expected {
		r.unexpectedCloses.Add(1)
		r.warn("connection closed by the server", "client", m.id, "room", m.room, "code", code, "err", err)
	}
	if m.storm {
		r.redial(func() { m.stormReconnect(now, false) })
		return
	}
	if !r.reconnecting {
		return
	}
	m.ended(l, true)
	r.redial(func() { m.reconnect(now) })
}

// ended records what the member sent on l, which the server ended (cut) or the run did.
// A message whose write fails after this was never sent (failedSends).
func (m *member) ended(l *link, cut bool) {
	if m.inbox == nil {
		return
	}
	m.sentOn = append(m.sentOn, sentOn{from: l.firstSeq, to: m.sent.Load(), cut: cut, refused: l.refused})
}

func (m *member) closed(l *link, at time.Time, code uint16) {
	if l.hist < 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.history[l.hist].Closed, m.history[l.hist].CloseCode = at, code
}

func (l *link) OnPing(socket *gws.Conn, payload []byte) { _ = socket.WritePong(payload) }

func (l *link) OnPong(*gws.Conn, []byte) {}

// BatchSubprotocol is the server's subprotocol for several messages per frame, one JSON
// object per line (Config.Batch).
const BatchSubprotocol = "roomcast.batch.v1"

// OnMessage accounts for one frame: each of its lines when the run is batched, as
// Centrifugo's frames always may be. It runs on the member's read loop and avoids
// allocating: the frame is scanned, not decoded.
func (l *link) OnMessage(_ *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	frame := msg.Bytes()
	centrifugo := l.m.r.centrifugo
	if !l.m.r.cfg.Batch && !centrifugo {
		l.onFrame(frame)
		return
	}
	for len(frame) > 0 {
		line := frame
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			frame = nil
		}
		if centrifugo {
			l.onCentrifugoLine(line)
		} else {
			l.onFrame(line)
		}
	}
}

// onFrame accounts for one server frame (one line of a batched frame).
func (l *link) onFrame(frame []byte) {
	m := l.m
	r := m.r
	if r.reconnecting {
		if seq, epoch, ok := ResumePoint(frame); ok {
			m.noteResume(seq, epoch)
		}
	}
	text, ok := MessageText(frame)
	if !ok {
		switch r.otherFrame(frame) {
		case "history_truncated", "history_unavailable":
			m.told.Store(true)
		case "unavailable":
			l.refused++
			m.refused.Add(1)
		}
		return
	}
	st, ok := ParseText(text)
	if !ok || !bytes.Equal(st.Run, r.runBytes) || m.inbox == nil {
		r.foreign.Add(1)
		return
	}
	now := time.Now().UnixNano()
	first := m.room * r.cfg.Members
	if st.Conn < first || st.Conn >= first+r.cfg.Members || st.Conn >= len(r.members) {
		r.misrouted.Add(1)
		return
	}
	// A seq the sender has not reached, or a send time before the first step, is not a
	// message of this run, whatever its text says.
	p := r.phaseAt(st.Sent)
	if p == nil || st.Seq >= r.members[st.Conn].sent.Load() {
		r.foreign.Add(1)
		return
	}
	sh := &p.shards[m.id%numShards]
	if m.inbox.Receive(st.Conn-first, st.Seq) {
		sh.delivered.Add(1)
		sh.latency.record(time.Duration(now - st.Sent))
	} else {
		sh.duplicated.Add(1)
	}
}

var (
	seqKey      = []byte(`"seq":`)
	epochKey    = []byte(`"epoch":"`)
	messageType = []byte(`"type":"message"`)
)

// ResumePoint returns the seq and epoch of a server message frame
// ({"type":"message",...,"seq":1042,"epoch":"k3v9",...}), aliasing frame; ok is false
// when the frame has no seq (history off, or not a message). The epoch is empty when
// the frame has none. It scans bytes: a message's text cannot hold `"seq":` or
// `"type":"message"` unescaped.
func ResumePoint(frame []byte) (seq uint64, epoch []byte, ok bool) {
	i := bytes.Index(frame, seqKey)
	if i < 0 || !bytes.Contains(frame, messageType) {
		return 0, nil, false
	}
	seq, _, ok = cutUint(frame[i+len(seqKey):], 0)
	if !ok {
		return 0, nil, false
	}
	if j := bytes.Index(frame, epochKey); j >= 0 {
		rest := frame[j+len(epochKey):]
		if end := bytes.IndexByte(rest, '"'); end >= 0 {
			epoch = rest[:end]
		}
	}
	return seq, epoch, true
}

// Connection is one connection of a client, as the release report keeps them.
type Connection struct {
	// Color and Instance are the upgrade response's X-Roomcast-Color and
	// X-Roomcast-Instance.
	Color    string    `json:"color"`
	Instance string    `json:"instance"`
	Opened   time.Time `json:"opened"`
	// Closed is when it ended (the last one: when the run closed it).
	Closed time.Time `json:"closed,omitzero"`
	// CloseCode is the server's close code (1006: no close frame); 0 when the load
	// generator closed it at the end.
	CloseCode uint16 `json:"close_code,omitempty"`
	// Resumed is set when the upgrade asked for ?since=.
	Resumed bool `json:"resumed,omitempty"`
	// FirstSeq is the seq of the client's first message sent on it.
	FirstSeq uint64 `json:"first_seq"`
}

// Client is one client's connections, in order.
type Client struct {
	ID          int          `json:"id"`
	Room        int          `json:"room"`
	Connections []Connection `json:"connections"`
	// Dropped counts connections beyond the 64 kept.
	Dropped int `json:"dropped,omitempty"`
	// LostUntold counts the deliveries this client missed without being told (see
	// ReconnectResult.LostUntold).
	LostUntold int64 `json:"lost_untold,omitempty"`
	// Unanswered counts this client's messages lost without it told (see
	// ReconnectResult.Unanswered).
	Unanswered int64 `json:"unanswered,omitempty"`
	// Refused counts the unavailable frames it got, and Nowhere lists (up to 32 of) its
	// messages that reached no member: refused, unconfirmed or unanswered.
	Refused int64    `json:"refused,omitempty"`
	Nowhere []uint64 `json:"nowhere,omitempty"`
}

func (m *member) client() Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Client{ID: m.id, Room: m.room, Connections: append([]Connection(nil), m.history...), Dropped: m.dropped, LostUntold: m.untold.Load(), Unanswered: m.unanswered.Load(),
		Refused: m.refused.Load(), Nowhere: m.nowhere}
}

// path is the client's connections in one line: "blue =1012=> green".
func (c Client) path() string {
	var b []byte
	for i, conn := range c.Connections {
		if i == 4 && len(c.Connections) > 6 {
			b = fmt.Appendf(b, " =…=> (%d connections)", len(c.Connections)+c.Dropped)
			return string(b)
		}
		if i > 0 {
			b = append(b, " ="...)
			b = strconv.AppendUint(b, uint64(c.Connections[i-1].CloseCode), 10)
			b = append(b, "=> "...)
		}
		color := conn.Color
		if color == "" {
			color = "?"
		}
		b = append(b, color...)
	}
	if n := len(c.Connections); n > 0 && c.Connections[n-1].CloseCode != 0 {
		b = fmt.Appendf(b, " =%d=> (disconnected)", c.Connections[n-1].CloseCode)
	}
	return string(b)
}

// noSession replaces gws's per-connection session map, which we do not use.
type noSession struct{}

func (noSession) Len() int                     { return 0 }
func (noSession) Load(string) (any, bool)      { return nil, false }
func (noSession) Delete(string)                {}
func (noSession) Store(string, any)            {}
func (noSession) Range(func(string, any) bool) {}

type gwsLogger struct{ r *runner }

func (l gwsLogger) Error(v ...any) { l.r.warn("gws: " + fmt.Sprint(v...)) }
