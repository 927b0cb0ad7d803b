package wsframe

import (
	"encoding/binary"

	"roomcast/pkg/chat"
)

const maxHeader = 10

// appendHeader appends the header of an unmasked, final server frame.
func appendHeader(dst []byte, opcode byte, n int) []byte {
	dst = append(dst, 0x80|opcode)
	switch {
	case n < 126:
		return append(dst, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 127), uint64(n))
	}
}

const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// maxCloseReason is what fits in a control frame's 125 bytes next to the code.
const maxCloseReason = 123

// Close returns a close frame with code and reason, the reason cut to fit a control
// frame.
func Close(code uint16, reason string) []byte {
	if len(reason) > maxCloseReason {
		reason = reason[:maxCloseReason]
	}
	payload := append(binary.BigEndian.AppendUint16(nil, code), reason...)
	return append(appendHeader(make([]byte, 0, 2+len(payload)), opClose, len(payload)), payload...)
}

// Text returns payload as one text frame.
func Text(payload []byte) []byte {
	return append(appendHeader(make([]byte, 0, maxHeader+len(payload)), opText, len(payload)), payload...)
}

// EncodeMessage returns msg as the text frame every member of its room receives, in a
// single allocation: the JSON is written after room for the longest header, and the
// header is then placed right in front of it.
func EncodeMessage(msg chat.Message) []byte {
	buf := make([]byte, maxHeader, maxHeader+96+len(msg.Room)+len(msg.Text)+len(msg.Text)/8+len(msg.Epoch))
	buf = chat.AppendMessageJSON(buf, msg)
	n := len(buf) - maxHeader
	var hdr [maxHeader]byte
	h := appendHeader(hdr[:0], opText, n)
	start := maxHeader - len(h)
	copy(buf[start:], h)
	return buf[start:]
}

// Ping is the keepalive ping queued for every member; its pong shows the client is there.
var Ping = []byte{0x80 | opPing, 0}

// Pong answers a client's ping with its payload.
func Pong(payload []byte) []byte {
	return append(appendHeader(make([]byte, 0, 2+len(payload)), opPong, len(payload)), payload...)
}
