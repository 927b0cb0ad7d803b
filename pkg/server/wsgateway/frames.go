package wsgateway

import (
	"encoding/binary"

	"roomcast/pkg/chat"
)

const maxFrameHeader = 10

// appendFrameHeader appends the header of an unmasked, final server frame.
func appendFrameHeader(dst []byte, opcode byte, n int) []byte {
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

// closeFrame returns a close frame with code and reason (cut to fit a control frame).
func closeFrame(code uint16, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	payload := append(binary.BigEndian.AppendUint16(nil, code), reason...)
	return append(appendFrameHeader(make([]byte, 0, 2+len(payload)), opClose, len(payload)), payload...)
}

// TextFrame returns payload as one WebSocket text frame.
func TextFrame(payload []byte) []byte {
	return append(appendFrameHeader(make([]byte, 0, maxFrameHeader+len(payload)), opText, len(payload)), payload...)
}

// EncodeMessage returns msg as the text frame every member of its room receives, in a
// single allocation: the JSON is written after room for the longest header, and the
// header is then placed right in front of it.
func EncodeMessage(msg chat.Message) []byte {
	buf := make([]byte, maxFrameHeader, maxFrameHeader+96+len(msg.Room)+len(msg.Text)+len(msg.Text)/8+len(msg.Epoch))
	buf = chat.AppendMessageJSON(buf, msg)
	n := len(buf) - maxFrameHeader
	var hdr [maxFrameHeader]byte
	h := appendFrameHeader(hdr[:0], opText, n)
	start := maxFrameHeader - len(h)
	copy(buf[start:], h)
	return buf[start:]
}

// PingFrame is the keepalive ping the hub queues for every member.
var PingFrame = []byte{0x80 | opPing, 0}

func pongFrame(payload []byte) []byte {
	return append(appendFrameHeader(make([]byte, 0, 2+len(payload)), opPong, len(payload)), payload...)
}

func errorFrame(code, reason string) []byte { return TextFrame(chat.ErrorJSON(code, reason)) }

// TruncatedFrame tells members that messages of their room may have been lost, after a
// broker outage longer than history covers.
var TruncatedFrame = errorFrame(chat.CodeHistoryTruncated, "messages sent during a broker outage may be missing")
