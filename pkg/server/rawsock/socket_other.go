//go:build !linux

package rawsock

import "net"

// New returns nil: outside Linux a connection is read and written through net.Conn.
func New(net.Conn) Socket { return nil }
