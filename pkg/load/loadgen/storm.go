package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The reconnect storm: Rooms × Members members send and are measured while Conns storm
// clients, silent in rooms of their own, drop their connections at once and come back.
//
//	connect   every client, ConnectParallel attempts at a time, a refusal with Retry-After
//	          waited for (joinAll)
//	settle    the members send for Settle: the baseline (Report.Steps[0])
//	drop      every storm client's TCP connection is reset at once (dropStorm); each
//	          reconnects at once (stormReconnect), however many that makes at the server
//	storm     the members keep sending until every storm client is back, and for at least
//	          Settle, at most until Duration (from the first connect) runs out: the
//	          storm window (Report.Steps[1]), which the thresholds judge
//	drain     up to Grace for the deliveries still due, then every connection is closed

// stormPhases name the reconnect storm's steps, in order (Step.Phase).
var stormPhases = []string{"settle", "storm"}

// maxAttempts bounds the connection attempts of one client's connect or reconnect.
const maxAttempts = 1000

// stormState is what the storm clients went through; its counters are updated by their
// reconnect goroutines and read by the progress line and the report.
type stormState struct {
	dropNano atomic.Int64 // when the drop began (UnixNano); 0 before
	size     atomic.Int64 // connections dropped
	dropDone atomic.Bool  // size is final
	// dropOver is closed once every connection is dropped: the reconnects wait for it,
	// so that the drop is one instant rather than a race with the first reconnects.
	dropOver chan struct{}
	back     atomic.Int64 // dropped clients reconnected
	lastBack atomic.Int64 // UnixNano of the latest of those reconnects
	allBack  chan struct{}
	allOnce  sync.Once

	attempts      atomic.Int64 // reconnect attempts
	retryAfter    atomic.Int64 // refusals whose Retry-After was waited for
	gaveUp        atomic.Int64 // clients that stopped after maxAttempts
	reconnectTime liveHistogram

	mu             sync.Mutex
	refused        map[string]int64 // reconnect attempts refused, by HTTP status
	failed         map[string]int64 // reconnect attempts without an HTTP answer, by failureKind
	connectRefused map[string]int64 // attempts refused while connecting at the start, by status
}

func newStormState() *stormState {
	return &stormState{
		allBack: make(chan struct{}), dropOver: make(chan struct{}),
		refused: map[string]int64{}, failed: map[string]int64{}, connectRefused: map[string]int64{},
	}
}

func (s *stormState) count(m map[string]int64, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m[key]++
}

// counts copies m, nil when it is empty.
func (s *stormState) counts(m map[string]int64) map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// dropped records that the drop is over, n connections dropped.
func (s *stormState) dropped(n int) {
	s.size.Store(int64(n))
	s.dropDone.Store(true)
	close(s.dropOver)
	if s.back.Load() >= int64(n) {
		s.allOnce.Do(func() { close(s.allBack) })
	}
}

// reconnected counts a storm client's new connection, opened at now after its previous
// one ended at closedAt (dropped: by the storm).
func (s *stormState) reconnected(now, closedAt time.Time, dropped bool) {
	if !dropped {
		return // the server closed it: an unexpected close, counted as such
	}
	s.reconnectTime.record(now.Sub(closedAt))
	for {
		old := s.lastBack.Load()
		if now.UnixNano() <= old || s.lastBack.CompareAndSwap(old, now.UnixNano()) {
			break
		}
	}
	if n := s.back.Add(1); s.dropDone.Load() && n >= s.size.Load() {
		s.allOnce.Do(func() { close(s.allBack) })
	}
}

// failedAttempt counts a failed reconnect attempt (number n, from 0) and returns how
// long to wait before the next: a 503 or 429's Retry-After, with jitter, else Backoff.
func (s *stormState) failedAttempt(r *runner, m *member, err error, n int) time.Duration {
	var ref *upgradeRefused
	if errors.As(err, &ref) {
		s.count(s.refused, strconv.Itoa(ref.status))
		if ref.retryable() {
			s.retryAfter.Add(1)
			return r.retryAfterWait(ref.retryAfter)
		}
	} else {
		s.count(s.failed, failureKind(err))
	}
	r.warn("storm reconnect failed", "client", m.id, "attempt", n+1, "err", err)
	return Backoff(n, r.cfg.ReconnectBase, r.cfg.ReconnectMax, rand.Int64N)
}

// retryAfterWait is the wait for a refusal's Retry-After ra: ra plus a random part of up
// to as much again (at least up to ReconnectBase), so that the clients the server
// refused together do not all come back in the same instant.
func (r *runner) retryAfterWait(ra time.Duration) time.Duration {
	return ra + rand.N(max(ra, r.cfg.ReconnectBase))
}

// progress is the storm's part of a progress line: empty before the drop.
func (s *stormState) progress() string {
	if s.dropNano.Load() == 0 {
		return ""
	}
	line := fmt.Sprintf("  storm back %d/%d", s.back.Load(), s.size.Load())
	if !s.dropDone.Load() {
		line = fmt.Sprintf("  storm back %d (dropping)", s.back.Load())
	}
	if c := s.counts(s.refused); c != nil {
		line += "  refused " + fmtCounts(c)
	}
	if c := s.counts(s.failed); c != nil {
		line += "  failed " + fmtCounts(c)
	}
	return line
}

// joinAll connects every client of a reconnect storm, the members first, at most
// ConnectParallel attempts at a time. A client refused with a Retry-After (the server's
// accept rate) waits for it, with jitter, without holding a slot, and tries again; any
// other failure fails the run, as in the other scenarios, and so does a client still
// refused when Duration runs out.
func (r *runner) joinAll(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		slots    = make(chan struct{}, r.cfg.ConnectParallel)
		done     atomic.Int64
		once     sync.Once
		firstErr error
	)
	stop := r.progress(func() string {
		line := fmt.Sprintf("%s  connecting %d/%d", r.elapsed(), done.Load(), len(r.members))
		if c := r.storm.counts(r.storm.connectRefused); c != nil {
			line += "  refused " + fmtCounts(c) + " (retried after Retry-After)"
		}
		return line
	})
	defer stop()
	for _, group := range [][]*member{r.senders, r.members[len(r.senders):]} {
		var wg sync.WaitGroup
		for _, m := range group {
			wg.Go(func() {
				if err := m.join(ctx, slots); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				done.Add(1)
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr != nil {
		return fmt.Errorf("connected %d of %d clients: %w", done.Load(), len(r.members), firstErr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("connected %d of %d clients: %w", done.Load(), len(r.members), err)
	}
	return nil
}

// join connects m for joinAll: slots holds one token per attempt in progress.
func (m *member) join(ctx context.Context, slots chan struct{}) error {
	r := m.r
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for attempt := 1; ; attempt++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		_, err := m.dial(0) // always its own URL, so that the rooms stay spread
		<-slots
		var ref *upgradeRefused
		switch {
		case err == nil:
			return nil
		case !errors.As(err, &ref) || !ref.retryable():
			return err
		case attempt >= maxAttempts:
			return fmt.Errorf("%w (refused %d times)", err, attempt)
		}
		r.storm.count(r.storm.connectRefused, strconv.Itoa(ref.status))
		wait := r.retryAfterWait(ref.retryAfter)
		if time.Now().Add(wait).After(r.deadline) {
			return fmt.Errorf("%w; still refused when -duration (%v) runs out", err, r.cfg.Duration)
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stormReconnect dials until a connection opens, the run stops, or maxAttempts attempts
// have failed: the first attempt at once (once the drop is over, for a dropped client),
// each next one after the refusal's Retry-After (with jitter) or, without one, after
// Backoff. Every attempt takes at most
// ConnectTimeout. It runs in its own goroutine (see runner.redial), started by the
// OnClose of the connection that ended at closedAt; dropped says that the storm ended it.
func (m *member) stormReconnect(closedAt time.Time, dropped bool) {
	r, s := m.r, m.r.storm
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var wait time.Duration
	if dropped {
		select {
		case <-s.dropOver:
		case <-r.stopRedials:
			return
		}
	}
	for attempt := range maxAttempts {
		if attempt > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-r.stopRedials:
				return
			}
		} else {
			select {
			case <-r.stopRedials:
				return
			default:
			}
		}
		s.attempts.Add(1)
		if _, err := m.dial(attempt); err != nil {
			wait = s.failedAttempt(r, m, err, attempt)
			continue
		}
		s.reconnected(time.Now(), closedAt, dropped)
		return
	}
	s.gaveUp.Add(1)
	r.warn("storm client gave up reconnecting", "client", m.id, "attempts", maxAttempts)
}

// dropStorm resets every storm client's connection at once and returns how many were
// open.
func (r *runner) dropStorm() int {
	s := r.storm
	s.dropNano.Store(time.Now().UnixNano())
	n := 0
	for _, m := range r.members[len(r.senders):] {
		if l := m.link.Load(); l != nil && l.drop() {
			n++
		}
	}
	s.dropped(n)
	return n
}

// StormResult is what a reconnect storm did: the storm clients' way back and, in
// Report.Steps, the members' deliveries before (settle) and during (storm) the storm.
type StormResult struct {
	// Clients is the number of storm clients (Conns), in Rooms rooms of their own;
	// Dropped how many had an open connection when the storm dropped them all.
	Clients int `json:"clients"`
	Rooms   int `json:"rooms"`
	Dropped int `json:"dropped"`
	// DropSeconds is how long resetting the connections took.
	DropSeconds float64 `json:"drop_seconds"`
	// Back counts the dropped clients that had reconnected when the storm window ended;
	// NotBack the others (all the storm clients when the storm did not happen).
	Back    int64 `json:"back"`
	NotBack int64 `json:"not_back"`
	// AllBackSeconds is from the drop to the last dropped client's 101; 0 unless all
	// came back.
	AllBackSeconds float64 `json:"all_back_seconds"`
	// ReconnectTime is each dropped client's time from its drop to its next 101.
	ReconnectTime Latency `json:"reconnect_time"`
	// Attempts counts reconnect attempts. Refused counts those the server answered with
	// an HTTP status instead of 101, by status ("503", "429"); RetryAfter those of them
	// that carried a Retry-After, which the client waited for; Failed the attempts that
	// got no HTTP answer, by kind (timeout, refused, reset, other). GaveUp counts
	// clients that stopped after 1,000 failed attempts.
	Attempts   int64            `json:"attempts"`
	Refused    map[string]int64 `json:"refused,omitempty"`
	RetryAfter int64            `json:"retry_after"`
	Failed     map[string]int64 `json:"failed,omitempty"`
	GaveUp     int64            `json:"gave_up"`
	// ConnectRefused counts the attempts refused while the clients connected at the
	// start, by status; each was retried after its Retry-After.
	ConnectRefused map[string]int64 `json:"connect_refused,omitempty"`
	// WindowSeconds is the storm window: from the drop until every storm client was back
	// (and at least Settle); StopReason says how it ended.
	WindowSeconds float64 `json:"window_seconds"`
	StopReason    string  `json:"stop_reason"`
}

// runStorm runs the settle step, the drop and the storm window; see the top of this file.
func (r *runner) runStorm(ctx context.Context, rep *Report) {
	cfg, s := r.cfg, r.storm
	res := &StormResult{Clients: cfg.Conns, Rooms: (cfg.Conns + cfg.Members - 1) / cfg.Members, NotBack: int64(cfg.Conns)}
	rep.Storm = res
	defer func() { res.ConnectRefused = s.counts(s.connectRefused) }()
	period := time.Duration(float64(time.Second) / cfg.Rate)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// until waits until t, or until ctx ends; it reports whether t came.
	until := func(t time.Time) bool {
		timer.Reset(time.Until(t))
		select {
		case <-timer.C:
			return true
		case <-ctx.Done():
			return false
		}
	}

	settle := r.beginStep(0, cfg.Rate)
	start := time.Unix(0, settle.p.startNano)
	dropAt := start.Add(cfg.Settle)
	if dropAt.After(r.deadline) {
		dropAt = r.deadline
	}
	r.sendAll(ctx, settle.p, period, start, dropAt)
	// The last send slot can come a period before the drop: hold until it.
	until(dropAt)
	settleStep := r.endStep(settle, start, time.Now())
	if ctx.Err() != nil || !time.Now().Before(r.deadline) {
		res.StopReason = "interrupted before the storm"
		if ctx.Err() == nil {
			res.StopReason = "-duration ran out before the storm (connecting took most of it)"
		}
		r.drain(ctx, settle.p)
		settleStep.recount(settle.p)
		rep.Steps = []Step{settleStep}
		return
	}

	storm := r.beginStep(1, cfg.Rate)
	stormStart := time.Unix(0, storm.p.startNano)
	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		r.sendAll(sendCtx, storm.p, period, stormStart, r.deadline)
	}()
	res.Dropped = r.dropStorm()
	res.DropSeconds = time.Since(stormStart).Seconds()
	r.printf("%s  dropped %d storm connections at once (TCP reset, no close frame) in %.0fms; they reconnect",
		r.elapsed(), res.Dropped, 1000*res.DropSeconds)

	timer.Reset(time.Until(r.deadline))
	select {
	case <-s.allBack:
		res.StopReason = "every storm client is back"
		// The window lasts at least Settle: what the storm leaves behind counts too.
		if minEnd := stormStart.Add(cfg.Settle); minEnd.Before(r.deadline) {
			until(minEnd)
		} else {
			until(r.deadline)
		}
	case <-timer.C:
		res.StopReason = "-duration ran out before every storm client was back"
	case <-ctx.Done():
	}
	if ctx.Err() != nil {
		res.StopReason = "interrupted"
	}
	stopSending()
	<-sending
	sendEnd := time.Now()
	res.WindowSeconds = sendEnd.Sub(stormStart).Seconds()
	res.Back = s.back.Load()
	res.NotBack = int64(cfg.Conns) - res.Back
	if res.NotBack == 0 {
		res.AllBackSeconds = time.Duration(s.lastBack.Load() - s.dropNano.Load()).Seconds()
	}
	r.printf("%s  storm window over after %.1fs: %s (%d of %d back)", r.elapsed(), res.WindowSeconds, res.StopReason, res.Back, res.Dropped)

	r.drain(ctx, storm.p, settle.p)
	stormStep := r.endStep(storm, stormStart, sendEnd)
	settleStep.recount(settle.p)
	rep.Steps = []Step{settleStep, stormStep}

	h := s.reconnectTime.snapshot()
	res.ReconnectTime = latencyOf(&h)
	res.Attempts, res.RetryAfter, res.GaveUp = s.attempts.Load(), s.retryAfter.Load(), s.gaveUp.Load()
	res.Refused, res.Failed = s.counts(s.refused), s.counts(s.failed)
}

// recount updates s's counts and latencies from p, whose last deliveries arrived after
// s was measured.
func (s *Step) recount(p *phase) {
	c, h := p.snapshot()
	s.Counts, s.Lost = c, c.Lost()
	s.Latency, s.p99, s.hist = latencyOf(&h), h.Quantile(0.99), &h
	if s.SendSeconds > 0 {
		s.DeliveriesPerSecond = float64(c.Delivered) / s.SendSeconds
	}
}

// failures sums the failed reconnect attempts.
func (res *StormResult) failures() int64 {
	var n int64
	for _, v := range res.Refused {
		n += v
	}
	for _, v := range res.Failed {
		n += v
	}
	return n
}
