package httpapi

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// slotHold bounds how long one connection keeps its handshake slot: a client that
// connects and sends nothing (or a handshake stuck on NATS, which costs no CPU while it
// waits) cannot hold the accept loop for longer than that.
const slotHold = 2 * time.Second

// pacedListener caps the public listener's connections that are accepted but not yet
// through their first request. While every slot is taken, Accept waits: a reconnect
// storm queues in the kernel's backlog, where it costs nothing, instead of as thousands
// of runnable goroutines (accept, header parsing, authentication, the room's
// subscription) scheduled ahead of the writers of the members already connected.
// Nothing is refused; a client only waits longer for its 101.
//
// A slot is given back when the server reports the connection idle (its first request
// answered), hijacked (a WebSocket upgrade: the gateway took it over) or closed, or
// after slotHold. The connection itself is not wrapped: the WebSocket writes need the
// *net.TCPConn for writev.
type pacedListener struct {
	net.Listener
	slots  chan struct{}
	closed chan struct{}
	once   sync.Once

	mu   sync.Mutex
	held map[net.Conn]*time.Timer

	waits prometheus.Counter
}

func newPacedListener(maxHandshakes int, reg prometheus.Registerer) *pacedListener {
	l := &pacedListener{
		slots:  make(chan struct{}, maxHandshakes),
		closed: make(chan struct{}),
		held:   make(map[net.Conn]*time.Timer),
	}
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "roomcast_handshakes_in_progress",
		Help: "Connections of the public listener accepted and not yet through their first request (at most ROOMCAST_MAX_HANDSHAKES).",
	}, func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(len(l.held))
	})
	l.waits = f.NewCounter(prometheus.CounterOpts{
		Name: "roomcast_accept_waits_total",
		Help: "Times the public listener stopped accepting because ROOMCAST_MAX_HANDSHAKES handshakes were in progress; the next connections waited in the kernel's backlog.",
	})
	return l
}

// Accept takes a slot, waiting for one if need be, then accepts.
func (l *pacedListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	default:
		l.waits.Inc()
		select {
		case l.slots <- struct{}{}:
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	l.mu.Lock()
	l.held[c] = time.AfterFunc(slotHold, func() { l.release(c) })
	l.mu.Unlock()
	return c, nil
}

// Close stops a waiting Accept too.
func (l *pacedListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// connState is the http.Server's ConnState hook.
func (l *pacedListener) connState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateIdle, http.StateHijacked, http.StateClosed:
		l.release(c)
	}
}

// release gives c's slot back, once.
func (l *pacedListener) release(c net.Conn) {
	l.mu.Lock()
	t, ok := l.held[c]
	delete(l.held, c)
	l.mu.Unlock()
	if ok {
		t.Stop()
		<-l.slots
	}
}
