package edge

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// responseClasses are the label values of roomcast_edge_http_responses_total.
var responseClasses = []string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// responseCounter counts the statuses nginx sends as syslog datagrams (one per
// response, the message being the status: "<190>Dec  6 07:00:00 roomcast_edge: 502").
type responseCounter struct {
	conn   net.PacketConn
	counts *prometheus.CounterVec
	done   chan struct{}
}

// listenResponses binds a free UDP port of 127.0.0.1 and counts into counts until
// close.
func listenResponses(counts *prometheus.CounterVec) (*responseCounter, error) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for nginx's response statuses: %w", err)
	}
	rc := &responseCounter{conn: conn, counts: counts, done: make(chan struct{})}
	go rc.run()
	return rc, nil
}

func (rc *responseCounter) run() {
	defer close(rc.done)
	buf := make([]byte, 1024)
	for {
		n, _, err := rc.conn.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // a datagram too large or a transient error: not a status anyway
		}
		if class, ok := statusClass(buf[:n]); ok {
			rc.counts.WithLabelValues(class).Inc()
		}
	}
}

// port is the UDP port nginx sends to.
func (rc *responseCounter) port() int { return rc.conn.LocalAddr().(*net.UDPAddr).Port }

// close stops counting and waits for the reader.
func (rc *responseCounter) close() {
	_ = rc.conn.Close()
	<-rc.done
}

// statusClass reads the status at the end of a syslog message and returns its class.
func statusClass(msg []byte) (string, bool) {
	msg = bytes.TrimRight(msg, "\n")
	status, err := strconv.Atoi(string(msg[bytes.LastIndexByte(msg, ' ')+1:]))
	if err != nil || status < 100 || status > 599 {
		return "", false
	}
	return responseClasses[status/100-1], true
}
