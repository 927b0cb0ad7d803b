//go:build !linux

package wsgateway

import "net"

// newRawSocket returns nil: outside Linux a connection is read and written through
// net.Conn.
func newRawSocket(net.Conn) rawSocket { return nil }
