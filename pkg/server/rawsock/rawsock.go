// Package rawsock reads and writes TCP sockets with raw system calls, through the
// connection's poller (syscall.RawConn): a read or write that would block still parks the
// goroutine until the socket is ready, and deadlines and Close still end it.
//
// Why: net.Conn's reads and writes enter the system call through the scheduler
// (entersyscall), which wakes the runtime's monitor thread (sysmon) whenever it was
// asleep because the process had nothing to run, and a woken sysmon polls every 20 µs
// until the process has been busy for a millisecond. A replica with one P is idle between
// most messages, so almost every read and write woke it: under fanout-large that was a
// fifth of the replica's CPU (perf record of the replica: its nanosleeps and the thread
// switches they cost; pprof does not see sysmon, which runs without a P). A socket is
// non-blocking, so its reads and writes return at once and need none of that.
//
// Only Linux is served; elsewhere New returns nil and Wrap its argument.
package rawsock

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Socket reads and writes one connection's socket. Its Read and Write behave as
// net.Conn's; WriteFrames writes several buffers in order, as one writev where the
// socket takes them all. One Read and one write (Write or WriteFrames) may run at a
// time; Wrap's Conn serialises callers.
type Socket interface {
	io.ReadWriter
	WriteFrames(frames [][]byte) error
}

// Wrap returns c with its Read and Write going through New(c)'s Socket, or c itself when
// there is none. The result is safe for concurrent use, as a net.Conn is.
func Wrap(c net.Conn) net.Conn {
	s := New(c)
	if s == nil {
		return c
	}
	return &conn{Conn: c, s: s}
}

type conn struct {
	net.Conn
	s        Socket
	rmu, wmu sync.Mutex
}

func (c *conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.s.Read(p)
}

func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.s.Write(p)
}

// Dialer dials TCP and returns the connection wrapped (Wrap). A host name stands for
// every address it resolves to, tried in random order, sharing Timeout, as nats.go's own
// dialer does (so it serves as nats.go's custom dialer with nats.SkipHostLookup).
type Dialer struct {
	Timeout time.Duration // for all of a host name's addresses together; 0: none
}

// Dial connects to address, a host and port.
func (d Dialer) Dial(network, address string) (net.Conn, error) {
	addrs := []string{address}
	if host, port, err := net.SplitHostPort(address); err == nil && net.ParseIP(host) == nil {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if d.Timeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		}
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		cancel()
		if err == nil && len(ips) > 0 {
			addrs = addrs[:0]
			for _, ip := range ips {
				addrs = append(addrs, net.JoinHostPort(ip, port))
			}
			rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
		}
	}
	dialer := net.Dialer{Timeout: d.Timeout / time.Duration(len(addrs))}
	var err error
	for _, a := range addrs {
		var c net.Conn
		if c, err = dialer.Dial(network, a); err == nil {
			return Wrap(c), nil
		}
	}
	return nil, err
}
