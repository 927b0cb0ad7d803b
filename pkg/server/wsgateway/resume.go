package wsgateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/backoff"
	"roomcast/pkg/server/hub"
	"roomcast/pkg/server/wsframe"
)

// resumeRequest is what a reconnecting client asks for: everything after since, in the
// history store named by epoch (if it gave one).
type resumeRequest struct {
	since uint64
	epoch string
}

func parseResume(r *http.Request) (*resumeRequest, error) {
	q := r.URL.Query()
	sinceText, hasSince := q["since"]
	if !hasSince {
		if q.Has("epoch") {
			return nil, errors.New("epoch is only meaningful with since")
		}
		return nil, nil
	}
	since, err := strconv.ParseUint(sinceText[0], 10, 64)
	if err != nil || len(sinceText) > 1 {
		return nil, fmt.Errorf("since must be one non-negative integer (a seq), got %q", strings.Join(sinceText, ","))
	}
	epoch := q.Get("epoch")
	if len(epoch) > 64 || strings.ContainsFunc(epoch, func(c rune) bool {
		return !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_')
	}) {
		return nil, fmt.Errorf("epoch must be up to 64 characters of [A-Za-z0-9_-], got %q", epoch)
	}
	return &resumeRequest{since: since, epoch: epoch}, nil
}

// replay sends a resuming member the stored messages it missed, then releases the live
// messages held meanwhile, skipping those the replay had: no gap, no duplicate.
func (g *Gateway) replay(member *hub.Member, req resumeRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.ReplayTimeout)
	defer cancel()
	// A client that leaves ends its replay: nobody is left to read for, and a read
	// retried while the store says "for now" would go on for the whole ReplayTimeout.
	member.OnLeave(cancel)
	res, err := g.readReplay(ctx, member.Room(), req)
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		g.log.Debug("replay stopped: the client left", "room", member.Room())
		return
	}
	if err != nil {
		g.errs.Count(chat.KindHistory)
		g.log.Warn("replay failed; the client continues live", "room", member.Room(), "err", err)
		member.Send(wsframe.ReplayFailed(err))
		g.releaseHeld(ctx, member, req.since, "")
		return
	}
	if res.Truncated {
		member.Send(wsframe.ReplayTruncated(req.since))
	}
	for _, msg := range res.Messages {
		if err := member.SendMessage(ctx, wsframe.EncodeMessage(msg), msg.Accepted); err != nil {
			g.log.Debug("replay stopped", "room", member.Room(), "err", err)
			break
		}
	}
	g.releaseHeld(ctx, member, res.Last, res.Epoch)
}

// Backoff between the reads of a replay whose read failed for now.
const (
	replayFirstBackoff = 200 * time.Millisecond
	replayMaxBackoff   = 2 * time.Second
)

// readReplay reads what a resuming member missed, again while the read fails for now
// (chat.ErrHistoryTemporary) and ctx lasts. In a NATS cluster a read sent while the
// history stream's leader is dying gets no answer (the other members do not know yet;
// History gives up on it after its own bound per request), and while a new one is
// elected the stream is looked up again; a few seconds later the new leader answers. A
// single read held the member's live messages for all of ReplayTimeout (seen in the lab:
// a dead leader's node's clients, resumed at once on another replica, got nothing for as
// long, and those that left meanwhile lost it all untold), or gave up at once and lost
// what the member missed. A read that fails for good (no JetStream) is not retried: the
// member goes on live at once, told.
func (g *Gateway) readReplay(ctx context.Context, room string, req resumeRequest) (chat.Stored, error) {
	// Jittered, so that the clients of a dead replica, which all reconnect at once, do
	// not read again in step.
	b := backoff.Backoff{First: replayFirstBackoff, Max: replayMaxBackoff}
	for attempt := 1; ; attempt++ {
		res, err := g.cfg.History.ReadSince(ctx, room, req.since, req.epoch)
		if err == nil || !errors.Is(err, chat.ErrHistoryTemporary) || ctx.Err() != nil {
			return res, err
		}
		g.log.Debug("replay read failed for now; reading again", "room", room, "attempt", attempt, "err", err)
		if b.Wait(ctx) != nil {
			return res, err
		}
	}
}

// releaseHeld queues the live messages held for member during its replay, except those
// up to seq after (of epoch), which the replay had.
func (g *Gateway) releaseHeld(ctx context.Context, member *hub.Member, after uint64, epoch string) {
	if err := member.Release(ctx, after, epoch); err != nil && !errors.Is(err, hub.ErrClosed) {
		// The client did not read its held messages in time: it is as slow as it gets.
		// (The close reason is the one clients have always seen.)
		g.errs.Count(chat.KindSlowConsumer)
		member.Close(wsframe.CloseTryAgainLater, "slow consumer: backlog after resume not read")
	}
}
