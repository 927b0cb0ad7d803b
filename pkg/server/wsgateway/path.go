package wsgateway

import (
	"fmt"
	"strings"

	"roomcast/pkg/chat"
)

// PathPrefix is where rooms live: PathPrefix + "{room}" with an optional trailing slash.
const PathPrefix = "/ws/chat/"

// RoomFromPath returns the room of a /ws/chat/{room}[/] path, validated.
func RoomFromPath(path string) (string, error) {
	rest, ok := strings.CutPrefix(path, PathPrefix)
	if !ok {
		return "", fmt.Errorf("%w: path must be %s{room}/", chat.ErrInvalidRoom, PathPrefix)
	}
	rest = strings.TrimSuffix(rest, "/")
	if err := chat.ValidateRoom(rest); err != nil {
		return "", err
	}
	return rest, nil
}
