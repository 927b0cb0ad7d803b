package natsbroker

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

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
	ok = chat.ScanFlatObject(data, func(key, str []byte, n uint64, isNum bool) bool {
		switch k := string(key); k { // compared, not allocated
		case "id", "room", "msg", "epoch":
			if isNum {
				return false
			}
			v := string(str)
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
		case "v":
			if !isNum || n > math.MaxInt32 {
				return false
			}
			e.V = int(n)
		case "ts":
			if !isNum || n > math.MaxInt64 {
				return false
			}
			e.TS = int64(n)
		case "seq":
			if !isNum {
				return false
			}
			e.Seq = n
		default:
			return false // a field of a newer release: encoding/json skips it
		}
		return true
	})
	return e, ok
}
