// Package edgetest has test doubles for the edge: a CA that makes a certificate for
// 127.0.0.1 and localhost (NewCA), and a tiny DNS server that answers A
// queries from a table, standing in for Docker's embedded DNS (127.0.0.11), so that
// nginx's resolver and the edge's resolve check can be pointed at it.
//
// A DNS is safe for concurrent use.
package edgetest

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// DNS answers A queries over UDP on 127.0.0.1 from a table of names; other names get
// NXDOMAIN, other query types of a known name an empty answer.
type DNS struct {
	conn *net.UDPConn
	wg   sync.WaitGroup

	mu      sync.Mutex
	names   map[string][]netip.Addr
	queries map[string]int
}

// NewDNS starts a DNS server on a free UDP port of 127.0.0.1, stopped in t.Cleanup.
func NewDNS(tb testing.TB) *DNS {
	tb.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatalf("dns listener: %v", err)
	}
	d := &DNS{conn: conn, names: map[string][]netip.Addr{}, queries: map[string]int{}}
	d.wg.Go(d.serve)
	tb.Cleanup(func() {
		_ = conn.Close()
		d.wg.Wait()
	})
	return d
}

// Addr is the server's address as ip:port.
func (d *DNS) Addr() string { return d.conn.LocalAddr().String() }

// Set makes name resolve to addrs (none: remove it, NXDOMAIN).
func (d *DNS) Set(name string, addrs ...string) {
	key := canonical(name)
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(addrs) == 0 {
		delete(d.names, key)
		return
	}
	parsed := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		parsed[i] = netip.MustParseAddr(a)
	}
	d.names[key] = parsed
}

// Queries is how many queries of any type asked for name.
func (d *DNS) Queries(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[canonical(name)]
}

func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

func (d *DNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		if resp, err := d.answer(buf[:n]); err == nil {
			_, _ = d.conn.WriteToUDP(resp, from)
		}
	}
}

const (
	typeA     = 1
	classIN   = 1
	rcodeNX   = 3
	headerLen = 12
)

// answer builds the response to one query: the header and question echoed back, plus
// A records for a known name.
func (d *DNS) answer(q []byte) ([]byte, error) {
	if len(q) < headerLen || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil, errors.New("want exactly one question")
	}
	var labels []string
	i := headerLen
	for {
		if i >= len(q) {
			return nil, errors.New("short question")
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l > 63 || i+l > len(q) {
			return nil, errors.New("bad label")
		}
		labels = append(labels, string(q[i:i+l]))
		i += l
	}
	if i+4 > len(q) {
		return nil, errors.New("short question")
	}
	qtype := binary.BigEndian.Uint16(q[i : i+2])
	question := q[headerLen : i+4]
	name := canonical(strings.Join(labels, "."))

	d.mu.Lock()
	d.queries[name]++
	addrs, known := d.names[name]
	d.mu.Unlock()

	var answers []netip.Addr
	if known && qtype == typeA {
		answers = addrs
	}
	resp := make([]byte, headerLen, headerLen+len(question)+16*len(answers))
	copy(resp[0:2], q[0:2])                           // ID
	flags := uint16(0x8000 | 0x0400 | 0x0080)         // response, authoritative, recursion available
	flags |= binary.BigEndian.Uint16(q[2:4]) & 0x0100 // recursion desired, echoed
	if !known {
		flags |= rcodeNX
	}
	binary.BigEndian.PutUint16(resp[2:4], flags)
	binary.BigEndian.PutUint16(resp[4:6], 1)
	binary.BigEndian.PutUint16(resp[6:8], uint16(len(answers)))
	resp = append(resp, question...)
	for _, a := range answers {
		ip := a.As4()
		resp = append(resp, 0xc0, headerLen) // name: pointer to the question's
		resp = binary.BigEndian.AppendUint16(resp, typeA)
		resp = binary.BigEndian.AppendUint16(resp, classIN)
		resp = binary.BigEndian.AppendUint32(resp, 1) // TTL 1s: nginx's valid= overrides it
		resp = binary.BigEndian.AppendUint16(resp, 4)
		resp = append(resp, ip[:]...)
	}
	return resp, nil
}
