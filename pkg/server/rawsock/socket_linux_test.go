package rawsock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server *net.TCPConn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c := <-accepted
	if c == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), client
}

func rawOf(t *testing.T, c net.Conn) Socket {
	t.Helper()
	raw := New(c)
	if raw == nil {
		t.Fatal("New(TCP connection) = nil: on Linux a TCP connection is read and written raw")
	}
	return raw
}

func TestRawSocketIsOnlyForTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if raw := New(a); raw != nil {
		t.Fatalf("New(net.Pipe) = %T, want nil: it has no socket", raw)
	}
	if w := Wrap(a); w != a {
		t.Fatalf("Wrap(net.Pipe) = %T, want the pipe itself", w)
	}
}

// TestRawSocketWritesEveryByteInOrder writes frame lists larger than the socket's buffers
// (so writes stop at EAGAIN and go on once the peer reads), with more buffers than one
// writev takes and with empty ones, and checks that the peer reads exactly their bytes.
func TestRawSocketWritesEveryByteInOrder(t *testing.T) {
	pattern := func(n, seed int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + seed)
		}
		return b
	}
	many := make([][]byte, 3000)
	for i := range many {
		many[i] = pattern(i%50, i) // every 50th is empty
	}
	cases := []struct {
		name   string
		frames [][]byte
	}{
		{"one small frame", [][]byte{pattern(10, 1)}},
		{"one frame larger than the socket buffers", [][]byte{pattern(16<<20, 2)}},
		{"several frames", [][]byte{pattern(2, 3), pattern(300, 4), pattern(1, 5)}},
		{"empty frames between", [][]byte{nil, pattern(5, 6), {}, pattern(7, 7), nil}},
		{"only empty frames", [][]byte{nil, {}}},
		{"more frames than one writev takes", many},
		{"large frames, several", [][]byte{pattern(5<<20, 8), pattern(3<<20, 9), pattern(6<<20, 10)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server, client := tcpPair(t)
			raw := rawOf(t, server)
			want := bytes.Join(tc.frames, nil)
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(io.LimitReader(client, int64(len(want))))
				got <- b
			}()
			if err := raw.WriteFrames(tc.frames); err != nil {
				t.Fatalf("WriteFrames: %v", err)
			}
			select {
			case b := <-got:
				if !bytes.Equal(b, want) {
					t.Fatalf("the peer read %d bytes that differ from the %d written", len(b), len(want))
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the peer did not read everything within 30 s")
			}
		})
	}
}

func TestRawSocketWriteReportsWhatItWrote(t *testing.T) {
	server, client := tcpPair(t)
	raw := rawOf(t, server)
	n, err := raw.Write([]byte("hello"))
	if n != 5 || err != nil {
		t.Fatalf("Write = %d, %v; want 5, nil", n, err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("the peer read %q, %v", buf, err)
	}

	// A peer that reads nothing: the write stops at the deadline, and reports the bytes it
	// did write (what the socket's buffers took), which the peer then reads.
	big := make([]byte, 64<<20)
	if err := server.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err = raw.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a peer that does not read: %v, want the deadline's error", err)
	}
	server.Close()
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(got) || n >= len(big) {
		t.Fatalf("Write reported %d bytes written; the peer read %d (of %d)", n, len(got), len(big))
	}
}

func TestRawSocketReadsLikeTheConn(t *testing.T) {
	server, client := tcpPair(t)
	raw := rawOf(t, server)

	if n, err := raw.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v; want 0, nil", n, err)
	}
	if _, err := client.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	got := 0
	for got < 3 {
		n, err := raw.Read(buf[got:])
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		got += n
	}
	if string(buf[:got]) != "abc" {
		t.Fatalf("Read %q, want abc", buf[:got])
	}

	// Nothing to read: the read waits, until the deadline.
	if err := server.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read with nothing to read: %v, want the deadline's error", err)
	}
	if err := server.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	// Data that comes while the read waits wakes it.
	go func() {
		time.Sleep(50 * time.Millisecond) // the read is likely waiting by then; either way it must get "late"
		_, _ = client.Write([]byte("late"))
	}()
	n := 0
	for n < 4 {
		m, err := raw.Read(buf[n:])
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		n += m
	}
	if string(buf[:n]) != "late" {
		t.Fatalf("Read %q, want late", buf[:n])
	}

	// The peer closes its side: io.EOF, as net.Conn reports it.
	client.Close()
	if _, err := raw.Read(buf); err != io.EOF {
		t.Fatalf("Read after the peer closed: %v, want io.EOF", err)
	}
}

func TestClosingTheConnEndsAWaitingRawRead(t *testing.T) {
	server, _ := tcpPair(t)
	raw := rawOf(t, server)
	done := make(chan error, 1)
	go func() {
		_, err := raw.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the read wait; a Close before it must end it too
	server.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read on a closed connection: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the read")
	}
}

// TestRawSocketAllocatesNothing: a read and a write of one frame are on every message's
// path.
func TestRawSocketAllocatesNothing(t *testing.T) {
	server, client := tcpPair(t)
	raw := rawOf(t, server)
	frame := [][]byte{[]byte("frame")}
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if err := raw.WriteFrames(frame); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf[:5]); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Write(buf[:3]); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 3; {
			n, err := raw.Read(buf[got:3])
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs > 0 {
		t.Fatalf("a raw write and read allocate %.1f times, want 0", allocs)
	}
}
