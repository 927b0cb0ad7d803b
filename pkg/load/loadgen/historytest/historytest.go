// Package historytest is an in-memory stand-in for a roomcast replica with history and
// resume, as the contract describes them, for testing clients that resume (the load
// generator's release and soak scenarios, the k6 scripts): every message gets the
// room's next seq and the server's epoch; an upgrade with ?since=<seq> (and &epoch=)
// replays the kept messages after seq before going live, with no gap and no duplicate,
// or sends history_truncated first when since is older than what is kept or the epoch
// does not match. It also answers /readyz like a replica.
//
// It is one process's rooms, with no NATS: a test that wants two "replicas" serves the
// same Server on two listeners. A Server is safe for concurrent use.
package historytest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lxzan/gws"

	"roomcast/pkg/chat"
)

// Server is the stand-in. Use New.
type Server struct {
	keep  int
	color string

	mu       sync.Mutex
	epoch    string
	rooms    map[string]*room
	upgrades []Upgrade
	closed   bool
	muted    bool
	// gap: the next message of each room skips one member; gapTold: with a
	// history_truncated frame to it.
	gap, gapTold map[string]bool
	// drop: the next message of each room reaches no member; dropRefused: its sender
	// gets an unavailable frame.
	drop, dropRefused map[string]bool

	upgrader *gws.Upgrader
}

// Upgrade is one accepted upgrade: its room and its resume query ("" when absent).
type Upgrade struct {
	Room  string
	Since string
	Epoch string
	// Truncated is set when the upgrade was answered with history_truncated first.
	Truncated bool
}

type room struct {
	name    string
	seq     uint64
	kept    []stored // the last keep messages, oldest first
	members map[*gws.Conn]struct{}
}

type stored struct {
	seq   uint64
	frame []byte
}

// New returns a server that keeps the last keep messages of each room, under epoch, and
// answers with X-Roomcast-Color: color.
func New(keep int, epoch, color string) *Server {
	s := &Server{keep: keep, color: color, epoch: epoch, rooms: map[string]*room{}}
	s.upgrader = gws.NewUpgrader(events{s}, &gws.ServerOption{
		ResponseHeader: http.Header{"X-Roomcast-Color": {color}, "X-Roomcast-Instance": {"historytest"}},
	})
	return s
}

// ServeHTTP serves /ws/chat/{room}/ and /readyz.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Roomcast-Color", s.color)
	w.Header().Set("X-Roomcast-Instance", "historytest")
	if r.URL.Path == "/readyz" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"status":"ready","color":%q}`, s.color)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/ws/chat/")
	name = strings.TrimSuffix(name, "/")
	if !ok || chat.ValidateRoom(name) != nil {
		http.Error(w, `{"error":"invalid room name"}`, http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	since, hasSince := uint64(0), q.Has("since")
	if hasSince {
		var err error
		if since, err = strconv.ParseUint(q.Get("since"), 10, 64); err != nil {
			http.Error(w, `{"error":"since must be a number"}`, http.StatusBadRequest)
			return
		}
	}
	// Like a replica, join the room before answering 101: the lock that orders
	// publishing is held from before the upgrade until the member is in the room, so
	// it gets every message published after its 101.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		http.Error(w, `{"status":"draining"}`, http.StatusServiceUnavailable)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r)
	if err != nil {
		return
	}
	conn.Session().Store("room", name)
	rm := s.rooms[name]
	if rm == nil {
		rm = &room{name: name, members: map[*gws.Conn]struct{}{}}
		s.rooms[name] = rm
	}
	up := Upgrade{Room: name, Since: q.Get("since"), Epoch: q.Get("epoch")}
	if hasSince {
		// Replay and join under the lock that orders publishing: no gap, no duplicate.
		from := 0
		switch {
		case q.Has("epoch") && q.Get("epoch") != s.epoch,
			len(rm.kept) > 0 && since+1 < rm.kept[0].seq,
			len(rm.kept) == 0 && since < rm.seq:
			up.Truncated = true
		default:
			for from < len(rm.kept) && rm.kept[from].seq <= since {
				from++
			}
		}
		if up.Truncated {
			_ = conn.WriteMessage(gws.OpcodeText, chat.ErrorJSON("history_truncated", "some messages are no longer kept"))
		}
		for _, m := range rm.kept[from:] {
			_ = conn.WriteMessage(gws.OpcodeText, m.frame)
		}
	}
	rm.members[conn] = struct{}{}
	s.upgrades = append(s.upgrades, up)
	go conn.ReadLoop()
}

// Upgrades returns the upgrades accepted so far, in order.
func (s *Server) Upgrades() []Upgrade {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Upgrade(nil), s.upgrades...)
}

// CloseAll closes every connection with code (1012 for a drain) and, with refuse,
// answers later upgrades 503 until Reopen.
func (s *Server) CloseAll(code uint16, refuse bool) {
	s.mu.Lock()
	var conns []*gws.Conn
	for _, rm := range s.rooms {
		for c := range rm.members {
			conns = append(conns, c)
			delete(rm.members, c)
		}
	}
	s.closed = refuse
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.WriteClose(code, []byte("historytest"))
	}
}

// Reopen accepts upgrades again after CloseAll.
func (s *Server) Reopen() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = false
}

// SetEpoch starts a new history store named epoch, as recreating the store would: the
// kept messages are gone, seqs start over, and resumes that name the old epoch get
// history_truncated.
func (s *Server) SetEpoch(epoch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch = epoch
	for _, rm := range s.rooms {
		rm.kept, rm.seq = nil, 0
	}
}

// Mute makes the server accept every message and deliver none, as a replica whose
// broker swallows them would: a load test against it must fail even where loss is
// allowed.
func (s *Server) Mute() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.muted = true
}

// Gap makes the next message of each room reach every member but one: with tell, that
// member gets a history_truncated frame instead, as a replica that knows it lost
// something says; without, nothing, as a broken one would leave a silent gap.
func (s *Server) Gap(tell bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gap, s.gapTold = map[string]bool{}, map[string]bool{}
	for name := range s.rooms {
		s.gap[name], s.gapTold[name] = true, tell
	}
}

// Drop makes the next message of each room reach no member: with refuse, its sender
// gets an unavailable frame, as a replica whose broker failed the publish says; without,
// nothing, as a broken one would lose it silently.
func (s *Server) Drop(refuse bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop, s.dropRefused = map[string]bool{}, map[string]bool{}
	for name := range s.rooms {
		s.drop[name], s.dropRefused[name] = true, refuse
	}
}

// Pending counts the rooms whose Drop or Gap has not happened yet (no message since).
func (s *Server) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.drop) + len(s.gap)
}

// Forget drops the kept messages of every room, as if they had expired.
func (s *Server) Forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rm := range s.rooms {
		rm.kept = nil
	}
}

func (s *Server) publish(sender *gws.Conn, name string, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rm := s.rooms[name]
	if rm == nil || s.muted {
		return
	}
	if s.drop[name] {
		delete(s.drop, name)
		if s.dropRefused[name] {
			_ = sender.WriteMessage(gws.OpcodeText, chat.ErrorJSON("unavailable", "the message could not be sent"))
		}
		return
	}
	rm.seq++
	frame := chat.AppendMessageJSON(nil, chat.Message{Room: name, Text: text, Seq: rm.seq, Epoch: s.epoch, Accepted: time.Now()})
	rm.kept = append(rm.kept, stored{seq: rm.seq, frame: frame})
	if len(rm.kept) > s.keep {
		rm.kept = rm.kept[len(rm.kept)-s.keep:]
	}
	skip := s.gap[name]
	for c := range rm.members {
		if skip {
			skip = false
			delete(s.gap, name)
			if s.gapTold[name] {
				_ = c.WriteMessage(gws.OpcodeText, chat.ErrorJSON("history_truncated", "a message of the room could not be delivered"))
			}
			continue
		}
		_ = c.WriteMessage(gws.OpcodeText, frame)
	}
}

func (s *Server) leave(c *gws.Conn) {
	name, _ := c.Session().Load("room")
	s.mu.Lock()
	defer s.mu.Unlock()
	if rm := s.rooms[name.(string)]; rm != nil {
		delete(rm.members, c)
	}
}

type events struct{ s *Server }

func (e events) OnOpen(*gws.Conn) {}

func (e events) OnClose(c *gws.Conn, _ error) { e.s.leave(c) }

func (e events) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }

func (e events) OnPong(*gws.Conn, []byte) {}

func (e events) OnMessage(c *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	var f struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(msg.Bytes(), &f) != nil || f.Message == "" {
		_ = c.WriteMessage(gws.OpcodeText, chat.ErrorJSON("bad_request", "message must be a non-empty string"))
		return
	}
	name, _ := c.Session().Load("room")
	e.s.publish(c, name.(string), f.Message)
}
