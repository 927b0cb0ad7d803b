package loadgen

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// A write that fails sends nothing: the message is neither expected by the room nor,
// when the server then closes the connection, counted as unconfirmed. (A drain's close
// handshake can end between a member's last receive and its next write.)
func TestAFailedWriteIsNotExpectedNorUnconfirmed(t *testing.T) {
	upgrader := gws.NewUpgrader(&gws.BuiltinEventHandler{}, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r)
		if err != nil {
			return
		}
		c.ReadLoop()
	}))
	t.Cleanup(srv.Close)
	conn, _, err := gws.NewClient(&gws.BuiltinEventHandler{}, &gws.ClientOption{Addr: "ws" + strings.TrimPrefix(srv.URL, "http")})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.WriteClose(1000, nil) // every later write fails

	r := &runner{log: slog.New(slog.NewTextHandler(io.Discard, nil)), run: "t", reconnecting: true}
	r.cfg.Members = 2
	m := &member{r: r, id: 0, roomSize: 2}
	other := &member{r: r, id: 1, roomSize: 2}
	m.inbox, other.inbox = NewInbox(2), NewInbox(2)
	r.members = []*member{m, other}
	l := &link{m: m, conn: conn}
	l.up.Store(true)
	m.link.Store(l)

	p := &phase{}
	m.send(p, nil, time.Now())
	if p.sent.Load() != 0 || p.expected.Load() != 0 || r.sendErrors.Load() != 1 {
		t.Fatalf("after a failed write: sent %d, expected %d, send errors %d; want 0, 0, 1",
			p.sent.Load(), p.expected.Load(), r.sendErrors.Load())
	}
	// The server's close then finds the message without an echo.
	m.ended(l, true)
	if unconfirmed, unanswered := r.senderLosses(); unconfirmed != 0 || unanswered != 0 {
		t.Fatalf("%d unconfirmed, %d unanswered; want 0, 0: the message was never sent", unconfirmed, unanswered)
	}
}
