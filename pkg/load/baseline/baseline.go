// Package baseline is the floor roomcast's benchmarks are measured against: the
// broadcast server one would write first on gws, speaking roomcast's wire protocol
// ({"message": ...} in, {"type":"message",...} out) so that roomcast-loadgen drives it
// unchanged. One process and nothing else: no broker, no history, no send queues, no
// rate limits, no metrics of its own. What roomcast costs beyond it is what those cost.
// It is a benchmark peer, not a server to deploy.
package baseline

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/lxzan/gws"

	"roomcast/pkg/chat"
)

// Server is the baseline broadcast server: a set of rooms, each a set of connections.
type Server struct {
	upgrader *gws.Upgrader

	mu    sync.RWMutex
	rooms map[string]map[*gws.Conn]struct{}
}

// New returns an empty Server.
func New() *Server {
	s := &Server{rooms: make(map[string]map[*gws.Conn]struct{})}
	s.upgrader = gws.NewUpgrader(events{s}, &gws.ServerOption{})
	return s
}

// Register adds the server's routes to mux: roomcast's WebSocket route and its probes.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /ws/chat/{room}/", s.upgrade)
	mux.HandleFunc("GET /ws/chat/{room}", s.upgrade)
	ok := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	}
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
}

// Len returns the number of connections in room.
func (s *Server) Len(room string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.rooms[room])
}

const roomKey = "room"

func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) {
	room := r.PathValue("room")
	if chat.ValidateRoom(room) != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid room name"}` + "\n"))
		return
	}
	socket, err := s.upgrader.Upgrade(w, r)
	if err != nil {
		return // gws has answered the request
	}
	socket.Session().Store(roomKey, room)
	s.join(room, socket)
	go socket.ReadLoop()
}

func (s *Server) join(room string, c *gws.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	members := s.rooms[room]
	if members == nil {
		members = make(map[*gws.Conn]struct{})
		s.rooms[room] = members
	}
	members[c] = struct{}{}
}

func (s *Server) leave(room string, c *gws.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rooms[room], c)
	if len(s.rooms[room]) == 0 {
		delete(s.rooms, room)
	}
}

// broadcast writes frame to every connection of room with gws's Broadcaster, which
// frames the payload once and queues a write on each connection's own writer.
func (s *Server) broadcast(room string, frame []byte) {
	b := gws.NewBroadcaster(gws.OpcodeText, frame)
	s.mu.RLock()
	for c := range s.rooms[room] {
		_ = b.Broadcast(c)
	}
	s.mu.RUnlock()
	_ = b.Close()
}

type clientFrame struct {
	Message *string `json:"message"`
}

type messageFrame struct {
	Type    string `json:"type"`
	Room    string `json:"room"`
	Message string `json:"message"`
	TS      string `json:"ts"`
}

var badRequest = chat.ErrorJSON(string(chat.KindBadRequest), "message must be a non-empty string")

type events struct{ s *Server }

func (events) OnOpen(*gws.Conn) {}

func (e events) OnClose(c *gws.Conn, _ error) {
	if room, ok := c.Session().Load(roomKey); ok {
		e.s.leave(room.(string), c)
	}
}

func (events) OnPing(c *gws.Conn, payload []byte) { _ = c.WritePong(payload) }

func (events) OnPong(*gws.Conn, []byte) {}

func (e events) OnMessage(c *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	room, _ := c.Session().Load(roomKey)
	var in clientFrame
	if msg.Opcode != gws.OpcodeText || json.Unmarshal(msg.Bytes(), &in) != nil || in.Message == nil || *in.Message == "" {
		_ = c.WriteMessage(gws.OpcodeText, badRequest)
		return
	}
	frame, err := json.Marshal(messageFrame{
		Type: "message", Room: room.(string), Message: *in.Message,
		TS: time.Now().UTC().Format(time.RFC3339Nano),
	})
	if err != nil {
		return // a string always marshals
	}
	e.s.broadcast(room.(string), frame)
}
