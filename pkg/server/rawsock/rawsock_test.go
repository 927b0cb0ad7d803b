package rawsock_test

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"roomcast/pkg/server/rawsock"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestDialerConnectsByNameAndWraps: a host name is resolved and dialled, and the
// connection carries bytes both ways through its raw socket.
func TestDialerConnectsByNameAndWraps(t *testing.T) {
	ln := listen(t)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	echoed := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			echoed <- err
			return
		}
		defer c.Close()
		_, err = io.CopyN(c, c, 5)
		echoed <- err
	}()
	c, err := rawsock.Dialer{Timeout: 5 * time.Second}.Dial("tcp", net.JoinHostPort("localhost", port))
	if err != nil {
		t.Fatalf("dialling localhost:%s: %v", port, err)
	}
	defer c.Close()
	if _, ok := c.(*net.TCPConn); ok && runtime.GOOS == "linux" {
		t.Fatal("Dial returned the plain TCP connection, not one read and written raw")
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read back %q, %v; want hello", buf, err)
	}
	if err := <-echoed; err != nil {
		t.Fatalf("echo: %v", err)
	}
}

func TestDialerReportsAnAddressThatRefuses(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	if c, err := (rawsock.Dialer{Timeout: 5 * time.Second}).Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("dialling %s, where nothing listens, succeeded", addr)
	}
}

// TestWrappedConnIsSafeForConcurrentWriters: nats.go's writers and readers are its own
// business; a Conn must keep every Write whole, as net.Conn does.
func TestWrappedConnIsSafeForConcurrentWriters(t *testing.T) {
	ln := listen(t)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := rawsock.Wrap(raw)
	defer c.Close()
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	defer peer.Close()

	const writers, writes, size = 8, 200, 1000
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, writers*writes*size))
		got <- b
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chunk := bytes.Repeat([]byte{byte('a' + w)}, size)
			for range writes {
				if _, err := c.Write(chunk); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var b []byte
	select {
	case b = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the peer did not read everything within 30 s")
	}
	if len(b) != writers*writes*size {
		t.Fatalf("the peer read %d bytes, want %d", len(b), writers*writes*size)
	}
	for i := 0; i < len(b); i += size {
		if run := b[i : i+size]; !bytes.Equal(run, bytes.Repeat(run[:1], size)) {
			t.Fatalf("bytes %d-%d mix two writes", i, i+size)
		}
	}
}
