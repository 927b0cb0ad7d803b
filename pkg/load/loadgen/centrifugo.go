package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lxzan/gws"
)

// Centrifugo's bidirectional JSON protocol (github.com/centrifugal/protocol, as
// Centrifugo v6 speaks it over WebSocket), the part the load needs:
//
//   - a frame holds one or more JSON objects, one per line: the server puts whatever
//     is queued for a client into one frame;
//   - a command is {"id":N,"<method>":{...}} with N > 0; its reply is
//     {"id":N,"<method>":{...}} or {"id":N,"error":{"code":C,"message":"..."}}, "id"
//     first and "error" right after it, as the server encodes replies;
//   - a push has no id: {"push":{"channel":"...","pub":{"data":<published JSON>,...}}};
//   - the server's ping is the empty object {}, which the client answers with {}
//     before client.pong_timeout (8s by default) or is closed with 3012.
//
// A client sends connect, then on its reply subscribes to its room's channel, then
// publishes its messages with data {"message":"<stamp text>"}. The server pushes each
// publication to every subscriber, the publisher included, with the data untouched, so
// a push carries the text as roomcast's message frames do and onFrame counts it the
// same way.

// centrifugoPath is where Centrifugo serves WebSocket clients (websocket.handler_prefix).
const centrifugoPath = "/connection/websocket"

// Command ids: connect and subscribe take the first two, a member's message seq is
// published as firstPublishID + seq, so a reply tells what it answers. Ids are uint32
// to the server; a member sends at most maxRate × maxDuration (864M) messages.
const (
	connectID      = 1
	subscribeID    = 2
	firstPublishID = 3
)

var (
	connectCommand = []byte(`{"id":1,"connect":{}}`)
	centrifugoPing = []byte(`{}`) // the server's ping, and the client's pong
	replyKey       = []byte(`{"id":`)
	replyErrorKey  = []byte(`,"error":{"code":`)
)

// centrifugoURL is the WebSocket URL of the Centrifugo server at base.
func centrifugoURL(base string) string { return strings.TrimSuffix(base, "/") + centrifugoPath }

func subscribeCommand(channel string) []byte {
	return []byte(`{"id":2,"subscribe":{"channel":"` + channel + `"}}`)
}

// appendPublishHead starts the command publishing message seq into channel; the data,
// then "}}", follow. channel needs no escaping (lg-<run>-<n>).
func appendPublishHead(dst []byte, seq uint64, channel string) []byte {
	dst = append(dst, replyKey...)
	dst = strconv.AppendUint(dst, seq+firstPublishID, 10)
	dst = append(dst, `,"publish":{"channel":"`...)
	dst = append(dst, channel...)
	return append(dst, `","data":`...)
}

// join connects and subscribes the link to its room's channel: it sends connect, and
// the read loop subscribes on the connect reply and reports the subscribe reply (see
// onReply). It gives up at deadline; the run then fails, and closeAll closes the
// connection.
func (l *link) join(deadline time.Time) error {
	if err := l.conn.WriteMessage(gws.OpcodeText, connectCommand); err != nil {
		return fmt.Errorf("sending connect: %w", err)
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case err := <-l.joined:
		return err
	case <-t.C:
		return fmt.Errorf("waiting for the connect and subscribe replies: %w", os.ErrDeadlineExceeded)
	}
}

// joinDone ends the link's join with err (nil: subscribed); the first call decides.
func (l *link) joinDone(err error) {
	select {
	case l.joined <- err:
	default:
	}
}

// onCentrifugoLine accounts for one line of a Centrifugo frame.
func (l *link) onCentrifugoLine(line []byte) {
	switch {
	case bytes.Equal(line, centrifugoPing):
		// A failed write means the connection is ending, which OnClose reports.
		_ = l.conn.WriteMessage(gws.OpcodeText, centrifugoPing)
	case bytes.HasPrefix(line, replyKey):
		l.onReply(line)
	default:
		l.onFrame(line) // a push
	}
}

// onReply handles the reply to a command: the connect reply is answered with
// subscribe, the subscribe reply ends the join, and a refused publish counts as an
// error frame, as roomcast's refusals do (its message, never published, is lost for
// every member).
func (l *link) onReply(line []byte) {
	r := l.m.r
	id, rest, ok := cutUint(line[len(replyKey):], 0)
	if !ok {
		r.otherFrame(line)
		return
	}
	code, refused := replyError(rest)
	switch {
	case id == connectID && !refused:
		if err := l.conn.WriteMessage(gws.OpcodeText, subscribeCommand(l.m.roomName)); err != nil {
			l.joinDone(fmt.Errorf("sending subscribe: %w", err))
		}
	case (id == connectID || id == subscribeID) && refused:
		l.joinDone(joinRefused(id, code, line))
	case id == subscribeID:
		l.joinDone(nil)
	case refused:
		r.countError(centrifugoCode(code))
		r.warn("the server refused a publish", "client", l.m.id, "reply", string(line))
	}
}

// replyError returns the error code of a reply, given what follows its id; refused is
// false for a result.
func replyError(afterID []byte) (code uint64, refused bool) {
	rest, refused := bytes.CutPrefix(afterID, replyErrorKey)
	if !refused {
		return 0, false
	}
	code, _, _ = cutUint(rest, 0)
	return code, true
}

func joinRefused(id, code uint64, reply []byte) error {
	what := "connect"
	if id == subscribeID {
		what = "subscribe"
	}
	hint := ""
	if code == 101 || code == 103 { // unauthorized, permission denied
		hint = "; the load's clients are anonymous: the server needs client.insecure true"
	}
	return fmt.Errorf("the server refused %s: %s%s", what, reply, hint)
}

// centrifugoCode names a Centrifugo error code (centrifuge's errors.go) as the report
// counts roomcast's error frames.
func centrifugoCode(code uint64) string {
	switch code {
	case 103: // permission denied
		return "forbidden"
	case 107: // bad request
		return "bad_request"
	case 108: // not available
		return "unavailable"
	case 111: // too many requests
		return "rate_limited"
	}
	return "other"
}
