package loadgen

import (
	"bytes"
	"strconv"
)

// TextPrefix starts the text of every generated message.
const TextPrefix = "lg|"

// A generated message's text is "lg|<run>-<conn>-<seq>|<unixnano>": the run token tells
// this run's messages from anyone else's, conn and seq make the message unique, and the
// send time (Unix nanoseconds) gives the latency on arrival. It contains nothing that
// JSON escapes, so it appears verbatim in the server's frames and can be found by
// scanning bytes.

// AppendText appends the text of message seq sent by connection conn at sentUnixNano.
// run must be non-empty and hold no '-', '|', '"' or '\\' (Run uses [a-z0-9]).
func AppendText(dst []byte, run string, conn int, seq uint64, sentUnixNano int64) []byte {
	dst = append(dst, TextPrefix...)
	dst = append(dst, run...)
	dst = append(dst, '-')
	dst = strconv.AppendInt(dst, int64(conn), 10)
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, '|')
	return strconv.AppendInt(dst, sentUnixNano, 10)
}

// Stamp is what a generated message's text says.
type Stamp struct {
	// Run is the run token; it aliases the parsed text.
	Run  []byte
	Conn int
	Seq  uint64
	// Sent is the send time in Unix nanoseconds.
	Sent int64
}

// ParseText parses a text made by AppendText; ok is false for any other text. It does
// not allocate.
func ParseText(text []byte) (s Stamp, ok bool) {
	rest, found := bytes.CutPrefix(text, []byte(TextPrefix))
	if !found {
		return Stamp{}, false
	}
	dash := bytes.IndexByte(rest, '-')
	if dash <= 0 {
		return Stamp{}, false
	}
	s.Run, rest = rest[:dash], rest[dash+1:]
	var conn, sent uint64
	if conn, rest, ok = cutUint(rest, '-'); !ok || conn > 1<<31 {
		return Stamp{}, false
	}
	if s.Seq, rest, ok = cutUint(rest, '|'); !ok {
		return Stamp{}, false
	}
	if sent, rest, ok = cutUint(rest, 0); !ok || len(rest) != 0 || sent > 1<<63-1 {
		return Stamp{}, false
	}
	s.Conn, s.Sent = int(conn), int64(sent)
	return s, true
}

// cutUint parses the decimal digits at the start of b up to sep (which it consumes; sep
// 0 means the end of b). At most 19 digits, so the value never overflows.
func cutUint(b []byte, sep byte) (v uint64, rest []byte, ok bool) {
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if i == 19 {
			return 0, nil, false
		}
		v = v*10 + uint64(b[i]-'0')
	}
	if i == 0 {
		return 0, nil, false
	}
	if sep == 0 {
		return v, b[i:], true
	}
	if i == len(b) || b[i] != sep {
		return 0, nil, false
	}
	return v, b[i+1:], true
}

var (
	messageKey = []byte(`"message":"` + TextPrefix)
	errorType  = []byte(`"type":"error"`)
	codeKey    = []byte(`"code":"`)
)

// MessageText returns the generated text in a server frame
// ({"type":"message",...,"message":"lg|...",...}), aliasing frame; ok is false when the
// frame carries no generated message. It scans bytes instead of decoding JSON.
func MessageText(frame []byte) (text []byte, ok bool) {
	i := bytes.Index(frame, messageKey)
	if i < 0 {
		return nil, false
	}
	text = frame[i+len(messageKey)-len(TextPrefix):]
	end := bytes.IndexByte(text, '"')
	if end < 0 {
		return nil, false
	}
	text = text[:end]
	if bytes.IndexByte(text, '\\') >= 0 {
		return nil, false // escaped: not ours
	}
	return text, true
}

// ErrorCode returns the code of a server error frame ({"type":"error","code":"..."}),
// aliasing frame; ok is false for any other frame.
func ErrorCode(frame []byte) (code []byte, ok bool) {
	if !bytes.Contains(frame, errorType) {
		return nil, false
	}
	i := bytes.Index(frame, codeKey)
	if i < 0 {
		return nil, false
	}
	code = frame[i+len(codeKey):]
	end := bytes.IndexByte(code, '"')
	if end < 0 {
		return nil, false
	}
	return code[:end], true
}
