package natsbroker

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"roomcast/pkg/chat"
)

// The envelope is encoded and decoded once per message per replica, on the path every
// message takes: by appending and by scanning instead of through reflection. The scan
// only takes the flat object this release writes (string and integer values, strings
// without escapes); anything else, a newer release's extra fields included, goes through
// encoding/json, which is the reference.

// formatVersion is the envelope version this release writes. Readers accept any
// version and ignore fields they do not know, so releases can be mixed in one room.
const formatVersion = 1

type envelope struct {
	V     int    `json:"v"`
	ID    string `json:"id"`
	Room  string `json:"room"`
	Text  string `json:"msg"`
	TS    int64  `json:"ts"` // Unix nanoseconds, UTC
	Seq   uint64 `json:"seq,omitempty"`
	Epoch string `json:"epoch,omitempty"`
}

func encode(msg chat.Message) []byte {
	b := make([]byte, 0, 64+len(msg.ID)+len(msg.Room)+len(msg.Text)+len(msg.Text)/8+len(msg.Epoch))
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, formatVersion, 10)
	b = append(b, `,"id":`...)
	b = chat.AppendJSONString(b, msg.ID)
	b = append(b, `,"room":`...)
	b = chat.AppendJSONString(b, msg.Room)
	b = append(b, `,"msg":`...)
	b = chat.AppendJSONString(b, msg.Text)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, msg.Accepted.UnixNano(), 10)
	if msg.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, msg.Seq, 10)
	}
	if msg.Epoch != "" {
		b = append(b, `,"epoch":`...)
		b = chat.AppendJSONString(b, msg.Epoch)
	}
	return append(b, '}')
}

func decode(data []byte) (chat.Message, error) {
	e, ok := scanEnvelope(data)
	if !ok {
		var ref envelope // declared here: only this path pays its allocation
		if err := json.Unmarshal(data, &ref); err != nil {
			return chat.Message{}, fmt.Errorf("decoding envelope: %w", err)
		}
		e = ref
	}
	if e.V < 1 || e.Room == "" {
		return chat.Message{}, errors.New("decoding envelope: no version or room")
	}
	return chat.Message{
		ID: e.ID, Room: e.Room, Text: e.Text, Accepted: time.Unix(0, e.TS).UTC(),
		Seq: e.Seq, Epoch: e.Epoch,
	}, nil
}

// scanEnvelope reads a flat envelope of known fields whose strings hold no escape; ok is
// false for anything else.
func scanEnvelope(data []byte) (e envelope, ok bool) {
	i := 0
	next := func(c byte) bool {
		if i < len(data) && data[i] == c {
			i++
			return true
		}
		return false
	}
	// raw reads a string without escapes, as the bytes between its quotes.
	raw := func() ([]byte, bool) {
		if !next('"') {
			return nil, false
		}
		start, ascii := i, true
		for ; i < len(data); i++ {
			switch c := data[i]; {
			case c == '"':
				i++
				v := data[start : i-1]
				// encoding/json replaces invalid UTF-8; leave that to it.
				return v, ascii || utf8.Valid(v)
			case c == '\\' || c < 0x20:
				return nil, false
			case c >= utf8.RuneSelf:
				ascii = false
			}
		}
		return nil, false
	}
	// num reads a non-negative integer of at most 19 digits (which a uint64 holds);
	// others are left to encoding/json.
	num := func() (uint64, bool) {
		start, n := i, uint64(0)
		for ; i < len(data) && data[i] >= '0' && data[i] <= '9'; i++ {
			n = n*10 + uint64(data[i]-'0')
		}
		return n, i > start && i-start <= 19 && (data[start] != '0' || i-start == 1)
	}
	if !next('{') {
		return e, false
	}
	for first := true; !next('}'); first = false {
		if !first && !next(',') {
			return e, false
		}
		key, ok := raw()
		if !ok || !next(':') {
			return e, false
		}
		switch k := string(key); k { // compared, not allocated
		case "id", "room", "msg", "epoch":
			b, ok := raw()
			if !ok {
				return e, false
			}
			v := string(b)
			switch k {
			case "id":
				e.ID = v
			case "room":
				e.Room = v
			case "msg":
				e.Text = v
			default:
				e.Epoch = v
			}
		case "v", "ts", "seq":
			v, ok := num()
			if !ok || k != "seq" && v > math.MaxInt64 {
				return e, false
			}
			switch k {
			case "v":
				if v > math.MaxInt32 {
					return e, false
				}
				e.V = int(v)
			case "ts":
				e.TS = int64(v)
			default:
				e.Seq = v
			}
		default:
			return e, false // a field of a newer release: encoding/json skips it
		}
	}
	return e, i == len(data)
}
