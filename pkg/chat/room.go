package chat

import (
	"errors"
	"fmt"
)

// MaxRoomNameLen is the longest room name accepted, in bytes (names are ASCII).
const MaxRoomNameLen = 64

// ErrInvalidRoom is returned for a room name outside the contract's alphabet or length.
var ErrInvalidRoom = errors.New("invalid room name")

// ValidateRoom reports whether name is 1 to 64 characters of [A-Za-z0-9_-].
// Names are case-sensitive and used verbatim as part of a NATS subject, which is why the
// alphabet excludes '.', '*', '>' and whitespace.
func ValidateRoom(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidRoom)
	}
	if len(name) > MaxRoomNameLen {
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidRoom, MaxRoomNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: character %q not in [A-Za-z0-9_-]", ErrInvalidRoom, c)
		}
	}
	return nil
}
