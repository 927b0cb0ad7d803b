package smoke

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"roomcast/pkg/auth"
	"roomcast/pkg/wsclient"
)

// member is the smoke test's WebSocket client on one replica.
type member struct {
	addr   string
	client *wsclient.Client
}

// roomName returns a fresh room, smoke-<16 hex digits>, so no user and no earlier run
// shares it.
func roomName() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return "smoke-" + hex.EncodeToString(b[:]), nil
}

// token returns the bearer token of the joins: none without a key.
func (r *runner) token(room string) (string, error) {
	if len(r.cfg.JWTSecret) == 0 {
		return "", nil
	}
	return auth.Mint(r.cfg.JWTSecret, auth.Claims{
		Subject:  "roomcast-smoke",
		Expires:  r.start.Add(r.cfg.Timeout + time.Minute),
		Rooms:    []string{room},
		Audience: r.cfg.JWTAudience,
		Issuer:   r.cfg.JWTIssuer,
	})
}

// join opens a WebSocket into room on addr and checks the color of the 101.
func (r *runner) join(ctx context.Context, addr, room, token string) (*member, result) {
	if err := ctx.Err(); err != nil {
		return nil, fail("join", addr, "%s", describe(ctx, err))
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	url := "ws://" + addr + "/ws/chat/" + room + "/"
	opts := wsclient.Options{HandshakeTimeout: r.cfg.RequestTimeout}
	if token != "" {
		opts.Header = http.Header{"Authorization": {"Bearer " + token}}
	}
	c, resp, err := wsclient.Dial(ctx, url, opts)
	if err != nil {
		return nil, fail("join", addr, "%v", err)
	}
	m := &member{addr: addr, client: c}
	if got := resp.Header.Get(headerColor); got != r.cfg.Color {
		c.Close()
		return nil, fail("join", addr, "the upgrade's %s is %q, want %q", headerColor, got, r.cfg.Color)
	}
	return m, pass("join", addr, "room=%s instance=%s", room, resp.Header.Get(headerInstance))
}

// closeAll closes every member's connection, concurrently; nil entries are skipped.
func closeAll(members []*member) {
	var wg sync.WaitGroup
	for _, m := range members {
		if m != nil {
			wg.Go(m.client.Close)
		}
	}
	wg.Wait()
}

// message sends one message on every member, each naming its sender, and checks that
// every member receives each of them exactly once. Sending from every replica, not one,
// is what proves that each replica both publishes to NATS and delivers what the others
// publish; the messages go out together, so this costs one wait and one grace period.
func (r *runner) message(ctx context.Context, room string, members []*member) []result {
	texts := make([]string, len(members))
	sender := make(map[string]string, len(members)) // text -> address it was sent on
	for i, m := range members {
		texts[i] = fmt.Sprintf("smoke test message sent on %s to %s", m.addr, room)
		sender[texts[i]] = m.addr
	}
	// Arrival must leave time for the grace period within the overall timeout.
	arrival := time.Now().Add(r.cfg.MessageTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Add(-r.cfg.Grace).Before(arrival) {
		arrival = dl.Add(-r.cfg.Grace)
	}

	// Readers start before anything is sent; each member already has its room
	// subscription (the contract: in place before the 101), so nothing can be missed.
	deliveries := make([]delivery, len(members))
	var wg sync.WaitGroup
	begin := time.Now()
	for i, m := range members {
		wg.Go(func() { deliveries[i] = r.collect(ctx, m.client, room, sender, begin, arrival) })
	}
	sendErrs := make([]error, len(members))
	for i, m := range members {
		if err := m.client.Send(texts[i]); err != nil {
			sendErrs[i] = fmt.Errorf("sending on %s: %w", m.addr, err)
		}
	}
	wg.Wait()

	results := make([]result, len(members))
	for i, m := range members {
		results[i] = deliveries[i].result(m.addr, texts, sender, sendErrs[i], r.cfg.Grace)
	}
	if res, ok := seqAgreement(members, texts, sender, deliveries); ok {
		results = append(results, res)
	}
	return results
}

// delivery is what one member received during the message check.
type delivery struct {
	counts     map[string]int    // text -> frames received
	seqs       map[string]uint64 // text -> seq of its first frame, when history numbers it
	unexpected []string
	ended      string        // why the connection ended, if it did
	complete   time.Duration // time from send to the last expected arrival; 0: incomplete
	graceCut   bool          // the overall timeout shortened the grace period
	waited     time.Duration // how long it read
}

// collect reads c until it has one frame of every expected text or arrival passes, and
// then for the grace period more, to catch duplicates.
func (r *runner) collect(ctx context.Context, c *wsclient.Client, room string, sender map[string]string, begin, arrival time.Time) delivery {
	d := delivery{counts: map[string]int{}, seqs: map[string]uint64{}}
	deadline := arrival
	for {
		wctx, cancel := context.WithDeadline(ctx, deadline)
		f, err := c.Next(wctx)
		timedOut := wctx.Err() != nil
		cancel()
		if err != nil {
			d.waited = time.Since(begin)
			if !timedOut {
				d.ended = err.Error()
			} else if d.complete > 0 && ctx.Err() != nil {
				d.graceCut = true
			}
			return d
		}
		switch {
		case f.Type == "error":
			d.unexpected = append(d.unexpected, fmt.Sprintf("error frame %s: %s", f.Code, f.Error))
		case f.Type != "message":
			continue // a frame type this version does not know; the contract lets servers add them
		case f.Room != room:
			d.unexpected = append(d.unexpected, fmt.Sprintf("a message for room %q", f.Room))
		case sender[f.Message] == "":
			d.unexpected = append(d.unexpected, fmt.Sprintf("an unknown message %q", f.Message))
		default:
			d.counts[f.Message]++
			if d.counts[f.Message] == 1 && f.Seq > 0 {
				d.seqs[f.Message] = f.Seq
			}
		}
		if d.complete == 0 && len(d.counts) == len(sender) {
			d.complete = max(f.Received.Sub(begin), time.Nanosecond)
			deadline = time.Now().Add(r.cfg.Grace)
		}
	}
}

// result says whether d is exactly one frame of each text.
func (d delivery) result(addr string, texts []string, sender map[string]string, sendErr error, grace time.Duration) result {
	var problems []string
	if sendErr != nil {
		problems = append(problems, sendErr.Error())
	}
	var missing, repeated []string
	for _, t := range texts {
		switch n := d.counts[t]; {
		case n == 0:
			missing = append(missing, sender[t])
		case n > 1:
			repeated = append(repeated, fmt.Sprintf("%s %d times", sender[t], n))
		}
	}
	if len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("no message from %s within %s", strings.Join(missing, ", "), d.waited.Round(time.Millisecond)))
	}
	if len(repeated) > 0 {
		problems = append(problems, "duplicates: the message from "+strings.Join(repeated, ", the one from "))
	}
	if len(d.unexpected) > 0 {
		const show = 3
		u := d.unexpected
		more := ""
		if len(u) > show {
			more = fmt.Sprintf(" and %d more", len(u)-show)
			u = u[:show]
		}
		problems = append(problems, "unexpected: "+strings.Join(u, "; ")+more)
	}
	if d.ended != "" {
		problems = append(problems, d.ended)
	}
	if len(problems) > 0 {
		return fail("message", addr, "%s", strings.Join(problems, "; "))
	}
	graceNote := fmt.Sprintf("%s grace", grace)
	if d.graceCut {
		graceNote = "grace cut short by the timeout"
	}
	what := fmt.Sprintf("each of the %d messages", len(texts))
	if len(texts) == 1 {
		what = "its one message"
	}
	return pass("message", addr, "received %s exactly once (all within %s, then %s)",
		what, d.complete.Round(time.Millisecond), graceNote)
}

// seqAgreement checks the contract's "one message has the same seq on every replica"
// when history numbers messages; ok is false when no message carried a seq.
func seqAgreement(members []*member, texts []string, sender map[string]string, deliveries []delivery) (result, bool) {
	numbered := false
	var problems []string
	for _, t := range texts {
		seen := map[uint64][]string{}
		for i, d := range deliveries {
			if s, ok := d.seqs[t]; ok {
				seen[s] = append(seen[s], members[i].addr)
				numbered = true
			}
		}
		if len(seen) > 1 {
			var parts []string
			for _, s := range slices.Sorted(maps.Keys(seen)) {
				parts = append(parts, fmt.Sprintf("seq %d on %s", s, strings.Join(seen[s], ", ")))
			}
			problems = append(problems, "the message from "+sender[t]+" has "+strings.Join(parts, " but "))
		}
	}
	switch {
	case !numbered:
		return result{}, false
	case len(problems) > 0:
		return fail("message", "seq", "%s", strings.Join(problems, "; ")), true
	}
	return pass("message", "seq", "each message has one seq on every replica"), true
}
