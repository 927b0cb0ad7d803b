package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// member is one client connection in one room. Fields set before its read loop starts
// are read-only afterwards; sent is written by the member's sender goroutine only; inbox
// is touched by the member's read loop only.
type member struct {
	r     *runner
	id    int
	room  int
	url   string
	conn  *gws.Conn
	inbox *Inbox // nil when the member receives nothing we count (idle)

	sent atomic.Uint64 // messages sent so far, which is also the next seq
	dead atomic.Bool   // the connection has ended or failed a write
}

// dial connects m and starts its read loop.
func (m *member) dial(timeout time.Duration) error {
	dialer := &net.Dialer{Timeout: timeout}
	conn, resp, err := gws.NewClient(m, &gws.ClientOption{
		Addr:             m.url,
		HandshakeTimeout: timeout,
		// Frames are about 150 bytes; a small buffer keeps 10,000 idle clients cheap.
		ReadBufferSize:     2048,
		ReadMaxPayloadSize: 1 << 20,
		NewDialer:          func() (gws.Dialer, error) { return dialer, nil },
		NewSession:         func() gws.SessionStorage { return noSession{} },
		Logger:             gwsLogger{m.r},
	})
	if err != nil {
		if resp != nil {
			if resp.Body != nil {
				_ = resp.Body.Close()
			}
			return fmt.Errorf("connecting client %d to %s: HTTP %d: %w", m.id, m.url, resp.StatusCode, err)
		}
		return fmt.Errorf("connecting client %d to %s: %w", m.id, m.url, err)
	}
	m.conn = conn
	m.r.live.Add(1)
	m.r.readers.Add(1)
	go conn.ReadLoop()
	return nil
}

// send sends message seq = m.sent, stamped now, using buf as scratch space; it returns
// buf for reuse. It counts the message in p before writing, so that a receiver never
// sees a message that is not counted yet.
func (m *member) send(p *phase, buf []byte, now time.Time) []byte {
	seq := m.sent.Load()
	buf = append(buf[:0], `{"message":"`...)
	buf = AppendText(buf, m.r.run, m.id, seq, now.UnixNano())
	buf = append(buf, `"}`...)
	m.sent.Store(seq + 1)
	p.sent.Add(1)
	p.expected.Add(int64(m.r.cfg.Members))
	if err := m.conn.WriteMessage(gws.OpcodeText, buf); err != nil {
		m.r.sendErrors.Add(1)
		if !m.dead.Swap(true) {
			m.r.warn("send failed; this member sends no more", "client", m.id, "err", err)
		}
	}
	return buf
}

func (m *member) OnOpen(*gws.Conn) {}

func (m *member) OnClose(_ *gws.Conn, err error) {
	defer m.r.readers.Done()
	m.dead.Store(true)
	m.r.live.Add(-1)
	if m.r.closing.Load() {
		return
	}
	code := uint16(1006)
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	m.r.countClose(code)
	m.r.warn("connection closed by the server", "client", m.id, "room", m.room, "code", code, "err", err)
}

func (m *member) OnPing(socket *gws.Conn, payload []byte) { _ = socket.WritePong(payload) }

func (m *member) OnPong(*gws.Conn, []byte) {}

// OnMessage accounts for one frame. It runs on the member's read loop and avoids
// allocating: the frame is scanned, not decoded.
func (m *member) OnMessage(_ *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	frame := msg.Bytes()
	r := m.r
	text, ok := MessageText(frame)
	if !ok {
		r.otherFrame(frame)
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

// noSession replaces gws's per-connection session map, which we do not use.
type noSession struct{}

func (noSession) Len() int                     { return 0 }
func (noSession) Load(string) (any, bool)      { return nil, false }
func (noSession) Delete(string)                {}
func (noSession) Store(string, any)            {}
func (noSession) Range(func(string, any) bool) {}

type gwsLogger struct{ r *runner }

func (l gwsLogger) Error(v ...any) { l.r.warn("gws: " + fmt.Sprint(v...)) }
