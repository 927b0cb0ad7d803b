package wsgateway

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"roomcast/pkg/server/hub"
	"roomcast/pkg/server/ratelimit"
	"roomcast/pkg/server/rawsock"
	"roomcast/pkg/server/wsframe"
)

// closeTimeout bounds the wait for a close frame to be written to a peer that does not
// read, after which the connection is closed without it.
const closeTimeout = 5 * time.Second

// lockedConn is the net.Conn gws reads and writes: gws's own writes (close frames) and
// the hub's batched writes take the same lock, so frames never interleave.
type lockedConn struct {
	net.Conn                // the hijacked TCP connection
	raw      rawsock.Socket // reads and writes it where the platform allows (nil: Conn does)
	mu       sync.Mutex
	owner    *wsConn
}

func (l *lockedConn) Read(p []byte) (int, error) {
	if l.raw != nil {
		return l.raw.Read(p)
	}
	return l.Conn.Read(p)
}

func (l *lockedConn) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.raw != nil {
		return l.raw.Write(p)
	}
	return l.Conn.Write(p)
}

// wsConn is one client connection and the hub's Socket for its member.
type wsConn struct {
	net        lockedConn
	ws         *gws.Conn
	member     *hub.Member
	closedByUs atomic.Bool

	releaseIP func() // gives the client address's slot back; called once the connection ends

	// With auth on: whether the token may only read, and when it expires (Unix ns).
	readOnly atomic.Bool
	expires  atomic.Int64
	expiry   *time.Timer

	// Set only by the gws read goroutine (publishDone is read by the broker's too, after
	// the publish that handed it over).
	limiter     *ratelimit.Limiter
	publishDone func(error) // made on the first message: idle connections do without
}

func newWSConn(raw net.Conn, m *hub.Member) *wsConn {
	c := &wsConn{member: m}
	c.net.Conn = raw
	c.net.raw = rawsock.New(raw)
	c.net.owner = c
	return c
}

// connOf returns the wsConn behind a gws connection.
func connOf(socket *gws.Conn) *wsConn { return socket.NetConn().(*lockedConn).owner }

// WriteFrames writes frames with one writev where the connection allows it.
func (c *wsConn) WriteFrames(frames [][]byte) error {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	if c.net.raw != nil {
		return c.net.raw.WriteFrames(frames)
	}
	bufs := net.Buffers(frames)
	_, err := bufs.WriteTo(c.net.Conn)
	return err
}

// closeGrace is how long, after a restart close (wsframe.CloseServiceRestart), the
// server keeps reading what
// the client sent before it saw the close, waiting for the client's close reply.
const closeGrace = 2 * time.Second

// Close sends a close frame and closes the connection. The write deadline also ends a
// WriteFrames stuck on a peer that stopped reading, so Close is bounded.
//
// A restart close (wsframe.CloseServiceRestart, a drain) is a handshake instead: the close frame goes out, and
// the connection stays open for reading until the client answers it (gws then ends the
// connection) or closeGrace passes, so that a message the client sent just before it
// saw the close is still published rather than lost.
func (c *wsConn) Close(code uint16, reason string) {
	c.closedByUs.Store(true)
	now := time.Now()
	_ = c.net.Conn.SetWriteDeadline(now.Add(closeTimeout))
	if code != wsframe.CloseServiceRestart {
		_ = c.ws.WriteClose(code, []byte(reason))
		return
	}
	if err := c.WriteFrames([][]byte{wsframe.Close(code, reason)}); err != nil {
		_ = c.net.Conn.Close()
		return
	}
	_ = c.net.Conn.SetReadDeadline(now.Add(closeGrace))
}

// touch extends the read deadline: a client that sends nothing, not even a pong, for
// this long is gone.
func (c *wsConn) touch(idle time.Duration) {
	if idle > 0 && !c.closedByUs.Load() { // a closing connection keeps its close deadline
		_ = c.net.Conn.SetReadDeadline(time.Now().Add(idle))
	}
}

var _ hub.Socket = (*wsConn)(nil)
