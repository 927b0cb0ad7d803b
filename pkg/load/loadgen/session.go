package loadgen

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// Session is a run of a scenario whose clients reconnect (release, soak), in progress:
// Start connects the clients and starts the traffic, Stop ends it and reports. Tests use
// it to run the release scenario around a deployment step; roomcast-loadgen uses it
// through Run. Its methods are safe for concurrent use.
type Session struct {
	r          *runner
	rep        *Report
	step       *stepRun
	start      time.Time
	cancelSend context.CancelFunc
	sending    chan struct{} // closed once sending has ended

	stopOnce sync.Once
	report   *Report
	err      error
}

// Start validates cfg, connects its clients (ctx bounds the connecting) and starts the
// traffic, which goes on until Stop or until cfg.Duration has passed; after that the
// clients stay connected (and keep reconnecting) until Stop. It takes the scenarios
// whose clients reconnect, Release and Soak; Run takes every scenario. It fails as Run
// does, for instance when a client cannot connect.
func Start(ctx context.Context, cfg Config) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Scenario.reconnects() {
		return nil, &ConfigError{Setting: "scenario", Value: strconv.Quote(string(cfg.Scenario)),
			Want: "Start takes release or soak; Run takes every scenario"}
	}
	r := newRunner(cfg)
	rep, err := r.setup()
	if err != nil {
		return nil, err
	}
	if err := r.connect(ctx, rep); err != nil {
		return nil, err
	}
	var period time.Duration
	rate := cfg.Rate
	if cfg.Scenario == Soak {
		rate, period = 0, cfg.SendEvery
		if period > 0 {
			rate = float64(time.Second) / float64(period)
		}
	} else {
		period = time.Duration(float64(time.Second) / rate)
	}
	sendCtx, cancel := context.WithCancel(context.Background())
	s := &Session{r: r, rep: rep, cancelSend: cancel, sending: make(chan struct{})}
	s.step = r.beginStep(0, rate)
	s.start = time.Now()
	end := s.start.Add(cfg.Duration)
	go func() {
		defer close(s.sending)
		if period > 0 {
			r.sendAll(sendCtx, s.step.p, period, s.start, end)
		}
		// The last send slot can come a period before the end: hold until the end.
		t := time.NewTimer(time.Until(end))
		defer t.Stop()
		select {
		case <-t.C:
		case <-sendCtx.Done():
		}
	}()
	return s, nil
}

// Done is closed once the session has run for its Duration (or Stop was called).
func (s *Session) Done() <-chan struct{} { return s.sending }

// Connected counts the clients connected now, by the X-Roomcast-Color of their
// connection's upgrade response ("" when it had none).
func (s *Session) Connected() map[string]int {
	out := make(map[string]int)
	for _, m := range s.r.members {
		if l := m.link.Load(); l != nil {
			out[l.color]++
		}
	}
	return out
}

// Clients returns every client's connections so far.
func (s *Session) Clients() []Client {
	out := make([]Client, len(s.r.members))
	for i, m := range s.r.members {
		out[i] = m.client()
	}
	return out
}

// Stop ends the traffic, waits up to Grace for the deliveries still due (clients that
// are reconnecting resume meanwhile), closes every connection and returns the report.
// Later calls return the same report.
func (s *Session) Stop() (*Report, error) {
	s.stopOnce.Do(func() {
		r := s.r
		s.cancelSend()
		<-s.sending
		sendEnd := time.Now()
		r.drain(context.Background(), s.step.p)
		s.rep.Steps = []Step{r.endStep(s.step, s.start, sendEnd)}
		s.report, s.err = r.finish(s.rep)
	})
	return s.report, s.err
}

// runSession is Run for the scenarios that reconnect: until Duration, or until ctx
// ends, which is release's normal end and a soak's interruption.
func runSession(ctx context.Context, cfg Config) (*Report, error) {
	s, err := Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	interrupted := false
	select {
	case <-s.Done():
	case <-ctx.Done():
		interrupted = cfg.Scenario == Soak
	}
	rep, err := s.Stop()
	if rep != nil {
		rep.Interrupted = interrupted
	}
	return rep, err
}

// reconnectResult sums up the clients' connections once every read loop has ended.
func (r *runner) reconnectResult(rep *Report) *ReconnectResult {
	h := r.reconnectTime.snapshot()
	res := &ReconnectResult{
		Reconnects:       r.reconnects.Load(),
		Resumed:          r.resumes.Load(),
		ConnectFailures:  r.connectFailures.Load(),
		ReconnectTime:    latencyOf(&h),
		HistoryTruncated: rep.ErrorFrames["history_truncated"],
		StartColors:      map[string]int{},
		EndColors:        map[string]int{},
		Paths:            map[string]int{},
	}
	if rep.readersDone {
		// Before the clients, which carry their shares.
		res.LostUntold = r.lostUntold()
		res.Unconfirmed, res.Unanswered = r.senderLosses()
	}
	for _, m := range r.members {
		c := m.client()
		if len(c.Connections) > 0 {
			res.StartColors[c.Connections[0].Color]++
			if last := c.Connections[len(c.Connections)-1]; last.CloseCode == 0 {
				res.EndColors[last.Color]++
			} else {
				res.EndColors["(disconnected)"]++
			}
		}
		res.Paths[c.path()]++
		if r.cfg.Scenario == Release {
			res.Clients = append(res.Clients, c)
		}
	}
	return res
}

// lostUntold counts the deliveries missing at members that were never told they may
// have missed messages (no history_truncated or history_unavailable frame), of messages
// that reached at least one member of their room: what the system delivered, it
// delivers to every member of the room or says it could not. It reads every Inbox: call
// it only once the read loops have ended.
func (r *runner) lostUntold() int64 {
	var n int64
	for _, sender := range r.members {
		if sender.inbox == nil {
			continue
		}
		first := sender.room * r.cfg.Members
		room := r.members[first : first+sender.roomSize]
		k := sender.id - first
		for seq := range sender.sent.Load() {
			reached := false
			for _, m := range room {
				if m.inbox.Has(k, seq) {
					reached = true
					break
				}
			}
			if !reached {
				continue
			}
			for _, m := range room {
				if !m.inbox.Has(k, seq) && !m.told.Load() {
					m.untold.Add(1)
					n++
				}
			}
		}
	}
	return n
}

// senderLosses counts the messages that reached no member of their room beyond the
// unavailable frames that came on the connection each was sent on: on a connection the
// server cut, unconfirmed (sent into a closing connection, or the server went before it
// answered); on one that lasted to the end, unanswered (taken and lost, nobody told). A
// message whose write failed was never sent and is neither. A refused message stored
// after all cancels one of its connection's: both are lower bounds. It reads every
// Inbox: call it only once the read loops have ended.
func (r *runner) senderLosses() (unconfirmed, unanswered int64) {
	for _, m := range r.members {
		if m.inbox == nil {
			continue
		}
		first := m.room * r.cfg.Members
		reached := func(seq uint64) bool {
			for k := range m.roomSize {
				if r.members[first+k].inbox.Has(m.id-first, seq) {
					return true
				}
			}
			return false
		}
		m.mu.Lock()
		notSent := make(map[uint64]bool, len(m.failedSends))
		for _, seq := range m.failedSends {
			notSent[seq] = true
		}
		m.mu.Unlock()
		for _, on := range m.sentOn {
			var nowhere int64
			for seq := on.from; seq < on.to; seq++ {
				if notSent[seq] || reached(seq) {
					continue
				}
				nowhere++
				if len(m.nowhere) < 32 {
					m.nowhere = append(m.nowhere, seq)
				}
			}
			n := max(nowhere-on.refused, 0)
			if on.cut {
				unconfirmed += n
			} else {
				m.unanswered.Add(n)
				unanswered += n
			}
		}
	}
	return unconfirmed, unanswered
}
