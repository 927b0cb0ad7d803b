package wsgateway_test

import (
	"errors"
	"strings"
	"testing"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/wsgateway"
)

func TestRoomFromPath(t *testing.T) {
	tests := []struct {
		path string
		room string
	}{
		{"/ws/chat/lobby/", "lobby"},
		{"/ws/chat/lobby", "lobby"},
		{"/ws/chat/A-b_9/", "A-b_9"},
		{"/ws/chat/", ""},
		{"/ws/chat//", ""},
		{"/ws/chat", ""},
		{"/ws/chat/a/b", ""},
		{"/ws/chat/lobby//", ""},
		{"/ws/chat/a.b/", ""},
		{"/other/lobby/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			room, err := wsgateway.RoomFromPath(tt.path)
			if tt.room == "" {
				if !errors.Is(err, chat.ErrInvalidRoom) {
					t.Fatalf("RoomFromPath(%q) = %q, %v; want ErrInvalidRoom", tt.path, room, err)
				}
				return
			}
			if err != nil || room != tt.room {
				t.Fatalf("RoomFromPath(%q) = %q, %v; want %q", tt.path, room, err, tt.room)
			}
		})
	}
}

// FuzzRoomFromPath: any path either yields a valid room or ErrInvalidRoom.
func FuzzRoomFromPath(f *testing.F) {
	for _, s := range []string{"/ws/chat/lobby/", "/ws/chat/", "/ws/chat//", "/ws/chat", "/ws/chat/a/b", "/ws/chat/a.b/", "/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		room, err := wsgateway.RoomFromPath(path)
		if err != nil {
			if !errors.Is(err, chat.ErrInvalidRoom) {
				t.Fatalf("RoomFromPath(%q): %v", path, err)
			}
			return
		}
		if chat.ValidateRoom(room) != nil || !strings.HasPrefix(path, wsgateway.PathPrefix+room) {
			t.Fatalf("RoomFromPath(%q) = %q", path, room)
		}
	})
}
