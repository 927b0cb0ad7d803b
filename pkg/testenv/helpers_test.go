package testenv

import (
	"net"
	"strconv"
	"testing"
)

func TestFreePortHandsOutDistinctBindablePortsBelowTheEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 50 {
		port := FreePort(t)
		if port < minFreePort || port >= low {
			t.Fatalf("port %d, want one in [%d, %d): outgoing connections take ports from %d up", port, minFreePort, low, low)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("port %d is not free: %v", port, err)
		}
		ln.Close()
	}
}
