package chat

import "unicode/utf8"

// ScanFlatObject reads data as one JSON object whose values are all strings without
// escapes or non-negative integers of at most 19 digits, calling field for each member
// in order with the string's bytes (isNum false) or the integer (isNum true). It
// returns false, possibly after some calls, for anything else (escapes, other values,
// invalid UTF-8, a field that returns false); the caller then decodes data with
// encoding/json, which is the reference. It exists for the frames every message
// passes: a scan costs a fraction of reflection and allocates nothing itself.
func ScanFlatObject(data []byte, field func(key, str []byte, n uint64, isNum bool) bool) bool {
	i := 0
	space := func() {
		for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
			i++
		}
	}
	next := func(c byte) bool {
		space()
		if i < len(data) && data[i] == c {
			i++
			return true
		}
		return false
	}
	// str reads a string without escapes, as the bytes between its quotes.
	str := func() ([]byte, bool) {
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
	num := func() (uint64, bool) {
		start, n := i, uint64(0)
		for ; i < len(data) && data[i] >= '0' && data[i] <= '9'; i++ {
			n = n*10 + uint64(data[i]-'0')
		}
		return n, i > start && i-start <= 19 && (data[start] != '0' || i-start == 1)
	}
	if !next('{') {
		return false
	}
	for first := true; !next('}'); first = false {
		if !first && !next(',') {
			return false
		}
		key, ok := str()
		if !ok || !next(':') {
			return false
		}
		space()
		if i < len(data) && data[i] == '"' {
			v, ok := str()
			if !ok || !field(key, v, 0, false) {
				return false
			}
			continue
		}
		n, ok := num()
		if !ok || !field(key, nil, n, true) {
			return false
		}
	}
	space()
	return i == len(data)
}
