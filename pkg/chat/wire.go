package chat

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"
)

// Error codes sent to clients in {"type":"error","code":...} frames.
const (
	CodeBadRequest      = "bad_request"
	CodeMessageTooLarge = "message_too_large"
	CodeRateLimited     = "rate_limited"
	CodeUnavailable     = "unavailable"
	// CodeForbidden: a read-only token tried to send, or a refresh token was refused.
	CodeForbidden = "forbidden"
	// CodeHistoryTruncated precedes a replay that may miss messages no longer kept.
	CodeHistoryTruncated = "history_truncated"
	// CodeHistoryUnavailable: a resume could not replay; the connection goes on live.
	CodeHistoryUnavailable = "history_unavailable"
)

// InputError is a client frame the server refuses while keeping the connection open. Code
// goes to the client in an error frame; Kind is what the server counts.
type InputError struct {
	Code   string
	Kind   ErrorKind
	Reason string
}

func (e *InputError) Error() string { return e.Code + ": " + e.Reason }

var (
	errNotObject = &InputError{Code: CodeBadRequest, Kind: KindBadRequest, Reason: "frame must be a JSON object"}
	errNoMessage = &InputError{Code: CodeBadRequest, Kind: KindBadRequest, Reason: "message must be a non-empty string"}
	errType      = &InputError{Code: CodeBadRequest, Kind: KindBadRequest, Reason: `type must be "message", "refresh" or absent`}
)

// Client frame types.
const (
	FrameMessage = "message"
	FrameRefresh = "refresh"
)

// ClientFrame is a decoded client frame.
type ClientFrame struct {
	// Type is FrameMessage (also when the client sent no type) or FrameRefresh.
	Type string
	// Message is the text of a message frame.
	Message string
	// Token is the new token of a refresh frame.
	Token string
}

var errNoToken = &InputError{Code: CodeBadRequest, Kind: KindBadRequest, Reason: "a refresh frame needs a non-empty string token"}

// DecodeClientFrame decodes a client's text frame: {"message": "<text>"} (the Django
// Channels tutorial's), optionally with "type":"message", or {"type":"refresh",
// "token":"..."}. Other fields are ignored so that newer clients keep working. The error
// is an *InputError.
func DecodeClientFrame(data []byte, maxMessageBytes int) (ClientFrame, error) {
	f, ok := scanClientFrame(data)
	if !ok {
		var err error
		if f, err = decodeClientFrameJSON(data); err != nil {
			return ClientFrame{}, err
		}
	}
	switch f.typ {
	case "", FrameMessage:
	case FrameRefresh:
		if !f.hasToken || f.token == "" {
			return ClientFrame{}, errNoToken
		}
		return ClientFrame{Type: FrameRefresh, Token: f.token}, nil
	default:
		return ClientFrame{}, errType
	}
	if !f.hasMessage || f.message == "" {
		return ClientFrame{}, errNoMessage
	}
	if len(f.message) > maxMessageBytes {
		return ClientFrame{}, &InputError{
			Code:   CodeMessageTooLarge,
			Kind:   KindMessageTooLarge,
			Reason: "message is " + strconv.Itoa(len(f.message)) + " bytes, the limit is " + strconv.Itoa(maxMessageBytes),
		}
	}
	return ClientFrame{Type: FrameMessage, Message: f.message}, nil
}

// clientFields are a client frame's fields as sent, before they are checked.
type clientFields struct {
	typ, message, token  string
	hasMessage, hasToken bool
}

// scanClientFrame reads the frames clients send (a flat object of the known fields with
// string values); ok is false for anything else, left to encoding/json.
func scanClientFrame(data []byte) (f clientFields, ok bool) {
	ok = ScanFlatObject(data, func(key, str []byte, _ uint64, isNum bool) bool {
		if isNum {
			return false // encoding/json names the field in its error
		}
		switch string(key) { // compared, not allocated
		case "type":
			switch string(str) {
			case FrameMessage:
				f.typ = FrameMessage
			case FrameRefresh:
				f.typ = FrameRefresh
			default:
				f.typ = string(str)
			}
		case "message":
			f.message, f.hasMessage = string(str), true
		case "token":
			f.token, f.hasToken = string(str), true
		default:
			return false // other fields, or these in another case: encoding/json's rules
		}
		return true
	})
	return f, ok
}

// decodeClientFrameJSON is the reference decoding of a client frame.
func decodeClientFrameJSON(data []byte) (clientFields, error) {
	var f struct {
		Type    string  `json:"type"`
		Message *string `json:"message"`
		Token   *string `json:"token"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field == "message":
			return clientFields{}, errNoMessage
		case errors.As(err, &te) && te.Field == "type":
			return clientFields{}, errType
		case errors.As(err, &te) && te.Field == "token":
			return clientFields{}, errNoToken
		}
		return clientFields{}, errNotObject
	}
	c := clientFields{typ: f.Type, hasMessage: f.Message != nil, hasToken: f.Token != nil}
	if f.Message != nil {
		c.message = *f.Message
	}
	if f.Token != nil {
		c.token = *f.Token
	}
	return c, nil
}

// TimestampLayout is RFC 3339 with microseconds, the form of the "ts" field.
const TimestampLayout = "2006-01-02T15:04:05.000000Z07:00"

// AppendMessageJSON appends the server-to-client JSON of msg to dst:
// {"type":"message","room":...,"message":...,"seq":...,"epoch":...,"ts":...}, with seq
// and epoch only when the message comes from history.
func AppendMessageJSON(dst []byte, msg Message) []byte {
	dst = append(dst, `{"type":"message","room":`...)
	dst = AppendJSONString(dst, msg.Room)
	dst = append(dst, `,"message":`...)
	dst = AppendJSONString(dst, msg.Text)
	if msg.Seq > 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, msg.Seq, 10)
		dst = append(dst, `,"epoch":`...)
		dst = AppendJSONString(dst, msg.Epoch)
	}
	dst = append(dst, `,"ts":"`...)
	dst = appendTimestamp(dst, msg.Accepted.UTC())
	return append(dst, `"}`...)
}

// appendTimestamp appends t, in UTC, as TimestampLayout formats it. Every message a
// replica delivers is formatted once, and time's general layout interpreter was most of
// that (2% of a replica's CPU in a profile of batched fanout-large); this writes
// the fixed layout directly.
func appendTimestamp(dst []byte, t time.Time) []byte {
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, TimestampLayout)
	}
	hour, minute, sec := t.Clock()
	dst = appendDigits(dst, year, 4)
	dst = append(dst, '-')
	dst = appendDigits(dst, int(month), 2)
	dst = append(dst, '-')
	dst = appendDigits(dst, day, 2)
	dst = append(dst, 'T')
	dst = appendDigits(dst, hour, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, minute, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, sec, 2)
	dst = append(dst, '.')
	dst = appendDigits(dst, t.Nanosecond()/1000, 6)
	return append(dst, 'Z')
}

// appendDigits appends v, which is not negative, as exactly width decimal digits.
func appendDigits(dst []byte, v, width int) []byte {
	n := len(dst) + width
	dst = append(dst, "000000"[:width]...)
	for i := n - 1; i >= n-width; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
	return dst
}

// ErrorJSON returns the server-to-client error frame {"type":"error","code":...,"error":...}.
func ErrorJSON(code, reason string) []byte {
	b := append([]byte(nil), `{"type":"error","code":`...)
	b = AppendJSONString(b, code)
	b = append(b, `,"error":`...)
	b = AppendJSONString(b, reason)
	return append(b, '}')
}

// ServerFrame is the decoded form of any server-to-client frame; clients and tests use it.
type ServerFrame struct {
	Type    string    `json:"type"`
	Room    string    `json:"room,omitempty"`
	Message string    `json:"message,omitempty"`
	Seq     uint64    `json:"seq,omitempty"`
	Epoch   string    `json:"epoch,omitempty"`
	TS      time.Time `json:"ts,omitzero"`
	Code    string    `json:"code,omitempty"`
	Error   string    `json:"error,omitempty"`
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string literal. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does; U+2028 and U+2029 are escaped so the output is safe inside <script>.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
