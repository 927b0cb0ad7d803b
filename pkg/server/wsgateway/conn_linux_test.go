package wsgateway

import (
	"net"
	"testing"
)

// A client's connection is read and written raw (see rawsock): through net.Conn, every
// read and write woke the runtime's monitor thread.
func TestAClientsTCPConnectionIsReadAndWrittenRaw(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if c := newWSConn(server, nil); c.net.raw == nil {
		t.Fatal("a client's TCP connection is read and written through net.Conn, not raw")
	}
}
