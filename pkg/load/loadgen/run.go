package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Run executes cfg's scenario and returns its report. It returns an error and no report
// when cfg is invalid (a *ConfigError), a server process cannot be read, or a
// client cannot connect. When ctx ends it stops sending, waits at most a second for what
// is in flight, and returns what it measured with Report.Interrupted set. Soak and
// release (see Start) instead wait up to Grace for what is due and report in full; a soak
// cut short is still marked Interrupted, while release's normal end is being told to
// stop.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Scenario.reconnects() {
		return runSession(ctx, cfg)
	}
	r := newRunner(cfg)
	return r.execute(ctx)
}

func newRunner(cfg Config) *runner {
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = time.Second
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &runner{
		cfg: cfg, log: log, run: runToken(), procs: procSet(cfg.ServerPIDs), start: time.Now(),
		reconnecting: cfg.Scenario.reconnects(), stopRedials: make(chan struct{}),
	}
	r.runBytes = []byte(r.run)
	r.deadline = r.start.Add(cfg.Duration)
	if cfg.Token != "" {
		r.header = http.Header{"Authorization": {"Bearer " + cfg.Token}}
	}
	if cfg.Scenario == ReconnectStorm {
		r.storm = newStormState()
	}
	return r
}

// runToken is 6 random characters of [a-z0-9]: rooms and messages of concurrent runs
// never mix.
func runToken() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	for i := range b {
		b[i] = alphabet[rand.N(len(alphabet))]
	}
	return string(b)
}

// Error frame codes counted one by one; anything else counts as "other".
var knownCodes = [...]string{"bad_request", "message_too_large", "rate_limited", "unavailable", "forbidden", "history_truncated", "history_unavailable", "other"}

const (
	numShards  = 8                     // latency and delivery counters, by member id
	maxLag     = time.Second           // a sender further behind skips sends
	coalesce   = time.Millisecond      // sends due this soon are sent without sleeping
	maxWarn    = 20                    // warnings logged before they are only counted
	closeWait  = 10 * time.Second      // for read loops to end after closing
	drainPoll  = 10 * time.Millisecond // how often the drain checks for completion
	interGrace = time.Second           // drain after an interruption
	maxWorkers = 4                     // sender goroutines
)

type runner struct {
	cfg      Config
	log      *slog.Logger
	run      string
	runBytes []byte
	procs    procSet
	start    time.Time
	// deadline is start + Duration: the end of a reconnect storm at the latest.
	deadline time.Time
	// header goes with every upgrade request (the token); read only.
	header http.Header
	// members are every client; senders those that send: all of them but a reconnect
	// storm's storm clients, which come after the senders.
	members []*member
	senders []*member
	// storm is the reconnect storm's state; nil in the other scenarios.
	storm *stormState
	// progressMu makes the writes to Config.Progress one at a time: a progress line and
	// a line of the run's own may come together.
	progressMu sync.Mutex
	// reconnecting: clients reconnect when the server closes them, resuming from the
	// room's last seq, and keep their connection history.
	reconnecting bool

	live    atomic.Int64
	readers sync.WaitGroup // one per read loop
	closing atomic.Bool    // we are closing the connections: closes are expected

	// Reconnects: each runs in a goroutine counted by redials, started unless
	// redialsStopped; stopRedials ends their waits.
	redialMu       sync.Mutex
	redialsStopped bool
	redials        sync.WaitGroup
	stopRedials    chan struct{}

	reconnects       atomic.Int64
	resumes          atomic.Int64
	connectFailures  atomic.Int64
	unexpectedCloses atomic.Int64
	reconnectTime    liveHistogram

	// phases are the sending steps so far, in order; a receiver finds a message's step
	// from its send time. Only the run goroutine appends.
	phases  [maxSteps]atomic.Pointer[phase]
	nPhases atomic.Int32

	errorFrames [len(knownCodes)]atomic.Int64
	foreign     atomic.Int64
	misrouted   atomic.Int64
	otherFrames atomic.Int64
	sendErrors  atomic.Int64
	warnings    atomic.Int64

	closesMu sync.Mutex
	closes   map[uint16]int64 // connections the server ended, by close code
}

// phase is one sending step: its counts and latencies.
type phase struct {
	name      string // reconnect-storm's settle or storm; set before sending
	rate      float64
	startNano int64 // messages sent from then on belong to this phase
	sent      atomic.Int64
	expected  atomic.Int64
	skipped   atomic.Int64
	shards    [numShards]phaseShard
}

type phaseShard struct {
	delivered  atomic.Int64
	duplicated atomic.Int64
	latency    liveHistogram
	_          [64]byte // keep shards' hot counters on separate cache lines
}

func (p *phase) snapshot() (Counts, Histogram) {
	c := Counts{Sent: p.sent.Load(), Expected: p.expected.Load()}
	var h Histogram
	for i := range p.shards {
		c.Delivered += p.shards[i].delivered.Load()
		c.Duplicated += p.shards[i].duplicated.Load()
		p.shards[i].latency.addTo(&h)
	}
	return c, h
}

func (r *runner) addPhase(p *phase) {
	n := r.nPhases.Load()
	r.phases[n].Store(p)
	r.nPhases.Store(n + 1)
}

// phaseAt is the phase a message sent at sentNano belongs to, or nil.
func (r *runner) phaseAt(sentNano int64) *phase {
	for i := r.nPhases.Load() - 1; i >= 0; i-- {
		if p := r.phases[i].Load(); sentNano >= p.startNano {
			return p
		}
	}
	return nil
}

func (r *runner) otherFrame(frame []byte) {
	code, ok := ErrorCode(frame)
	if !ok {
		r.otherFrames.Add(1)
		return
	}
	for i, known := range knownCodes {
		if string(code) == known || i == len(knownCodes)-1 {
			r.errorFrames[i].Add(1)
			return
		}
	}
}

// expectedClose reports whether the scenario expects the server to close a client with
// code: release expects 1012 (service restart, the drain of the old color).
func (r *runner) expectedClose(code uint16) bool {
	return r.cfg.Scenario == Release && code == 1012
}

// redial runs a member's reconnect in its own goroutine, unless the run is stopping.
func (r *runner) redial(reconnect func()) {
	r.redialMu.Lock()
	defer r.redialMu.Unlock()
	if r.redialsStopped {
		return
	}
	r.redials.Go(reconnect)
}

// stopRedialing stops the reconnects and waits for those in progress; no dial starts
// afterwards.
func (r *runner) stopRedialing() {
	r.redialMu.Lock()
	if !r.redialsStopped {
		r.redialsStopped = true
		close(r.stopRedials)
	}
	r.redialMu.Unlock()
	r.redials.Wait()
}

func (r *runner) countClose(code uint16) {
	r.closesMu.Lock()
	defer r.closesMu.Unlock()
	if r.closes == nil {
		r.closes = make(map[uint16]int64)
	}
	r.closes[code]++
}

// warn logs the first maxWarn warnings of a run and counts the rest.
func (r *runner) warn(msg string, args ...any) {
	switch n := r.warnings.Add(1); {
	case n < maxWarn:
		r.log.Warn(msg, args...)
	case n == maxWarn:
		r.log.Warn(msg+" (further warnings are not logged)", args...)
	}
}

// setup checks the limits and creates the members, and the report's shape.
func (r *runner) setup() (*Report, error) {
	cfg := r.cfg
	n, rooms := cfg.Rooms*cfg.Members, cfg.Rooms
	senders := n
	switch {
	case cfg.Scenario.connsShaped():
		n, rooms = cfg.Conns, (cfg.Conns+cfg.Members-1)/cfg.Members
		senders = n
	case cfg.Scenario == ReconnectStorm:
		n += cfg.Conns // the storm clients, in rooms of their own after the members'
	}
	if err := checkFileLimit(n); err != nil {
		return nil, err
	}
	if _, err := r.procs.sample(); err != nil {
		return nil, err
	}
	r.members = make([]*member, n)
	for i := range r.members {
		m := &member{r: r, id: i, room: i / cfg.Members, urlIndex: i % len(cfg.URLs), storm: i >= senders}
		// Rooms are full but the last of the senders' and the last of the storm's.
		end := senders
		if m.storm {
			end = n
		}
		m.roomSize = min(cfg.Members, end-m.room*cfg.Members)
		m.roomName = "lg-" + r.run + "-" + strconv.Itoa(m.room)
		if cfg.Scenario.sends() && !m.storm {
			m.inbox = NewInbox(cfg.Members)
		}
		r.members[i] = m
	}
	r.senders = r.members[:senders]
	if !cfg.Scenario.sends() {
		r.senders = nil
	}
	return &Report{
		Scenario: cfg.Scenario, Run: r.run, URLs: cfg.URLs, Rooms: rooms, Members: cfg.Members,
	}, nil
}

// connect connects every client and records how long it took.
func (r *runner) connect(ctx context.Context, rep *Report) error {
	t := time.Now()
	connectAll := r.connectAll
	if r.storm != nil {
		connectAll = r.joinAll
	}
	if err := connectAll(ctx); err != nil {
		return errors.Join(err, r.closeAll())
	}
	rep.Connections = len(r.members)
	rep.ConnectSeconds = time.Since(t).Seconds()
	r.printf("connected %d clients in %.1fs (run %s)", len(r.members), rep.ConnectSeconds, r.run)
	return nil
}

func (r *runner) execute(ctx context.Context) (*Report, error) {
	cfg := r.cfg
	rep, err := r.setup()
	if err != nil {
		return nil, err
	}
	var checks checkSet
	if cfg.Scenario == Smoke {
		checks = r.checkReady(ctx)
	}
	var before []ProcSample
	if cfg.Scenario == Idle {
		before, _ = r.procs.sample()
	}
	if err := r.connect(ctx, rep); err != nil {
		return nil, err
	}
	if cfg.Scenario == Smoke {
		checks.add(checkOpens, int64(len(r.members)), 0)
		rep.Checks = checks
	}

	switch cfg.Scenario {
	case FanoutSmall, FanoutLarge, Smoke:
		rep.Steps = []Step{r.runStep(ctx, 0, cfg.Rate, cfg.Duration)}
	case Ramp:
		r.runRamp(ctx, rep)
	case Idle:
		rep.Idle = r.hold(ctx, before)
	case ReconnectStorm:
		r.runStorm(ctx, rep)
	}
	rep.Interrupted = ctx.Err() != nil
	return r.finish(rep)
}

// finish closes the connections and completes rep with the run's counts, metrics and
// thresholds.
func (r *runner) finish(rep *Report) (*Report, error) {
	rep.ConnectionsAtEnd = int(r.live.Load())
	err := r.closeAll()
	rep.readersDone = err == nil

	rep.Foreign, rep.Misrouted = r.foreign.Load(), r.misrouted.Load()
	rep.OtherFrames, rep.SendErrors = r.otherFrames.Load(), r.sendErrors.Load()
	for i := range r.errorFrames {
		if v := r.errorFrames[i].Load(); v > 0 {
			if rep.ErrorFrames == nil {
				rep.ErrorFrames = make(map[string]int64)
			}
			rep.ErrorFrames[knownCodes[i]] = v
		}
	}
	r.closesMu.Lock()
	for code, v := range r.closes {
		if rep.ServerCloses == nil {
			rep.ServerCloses = make(map[string]int64)
		}
		rep.ServerCloses[strconv.Itoa(int(code))] = v
	}
	r.closesMu.Unlock()
	rep.UnexpectedCloses = r.unexpectedCloses.Load()
	if self, err := ReadProc(os.Getpid()); err == nil {
		rep.LoadgenRSSBytes = self.RSSBytes
	}
	if r.reconnecting {
		rep.Reconnect = r.reconnectResult(rep)
	}
	reconnectTime := r.reconnectTime.snapshot()
	if r.storm != nil {
		reconnectTime = r.storm.reconnectTime.snapshot()
	}
	rep.evaluate(r.cfg, reconnectTime)
	return rep, err
}

// checkFileLimit fails early, with advice, when RLIMIT_NOFILE cannot hold n connections.
func checkFileLimit(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // nothing to check against; connecting will tell
	}
	if need := uint64(n) + 64; lim.Cur < need {
		return fmt.Errorf("%d connections need about %d file descriptors, but RLIMIT_NOFILE is %d (hard limit %d); raise it with ulimit -n",
			n, need, lim.Cur, lim.Max)
	}
	return nil
}

func (r *runner) printf(format string, args ...any) {
	if r.cfg.Progress != nil {
		r.progressMu.Lock()
		defer r.progressMu.Unlock()
		fmt.Fprintf(r.cfg.Progress, format+"\n", args...)
	}
}

// connectAll connects every member, ConnectParallel at a time, and returns the first
// error; the others still connecting finish, and no new ones start.
func (r *runner) connectAll(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     = make(chan *member)
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		done     atomic.Int64
	)
	stop := r.progress(func() string {
		return fmt.Sprintf("%s  connecting %d/%d", r.elapsed(), done.Load(), len(r.members))
	})
	defer stop()
	for range min(r.cfg.ConnectParallel, len(r.members)) {
		wg.Go(func() {
			for m := range next {
				if ctx.Err() != nil {
					continue
				}
				if _, err := m.dial(0); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					continue
				}
				done.Add(1)
			}
		})
	}
feed:
	for _, m := range r.members {
		select {
		case next <- m:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("connected %d of %d clients: %w", done.Load(), len(r.members), firstErr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("connected %d of %d clients: %w", done.Load(), len(r.members), err)
	}
	return nil
}

// closeAll stops the reconnects, closes every connection and waits for the read loops
// to end.
func (r *runner) closeAll() error {
	r.stopRedialing()
	r.closing.Store(true)
	for _, m := range r.members {
		if l := m.link.Load(); l != nil {
			// A server that does not read must not hold us up.
			_ = l.conn.SetWriteDeadline(time.Now().Add(time.Second))
			_ = l.conn.WriteClose(1000, nil)
		}
	}
	done := make(chan struct{})
	go func() { r.readers.Wait(); close(done) }()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return fmt.Errorf("closing connections: read loops still running after %v", closeWait)
	}
}

// progress prints line() every ProgressEvery until the returned stop is called.
func (r *runner) progress(line func() string) (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(r.cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				text := line()
				r.progressMu.Lock()
				fmt.Fprintln(r.cfg.Progress, text)
				r.progressMu.Unlock()
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit); <-finished }) }
}

func (r *runner) elapsed() string { return fmt.Sprintf("[%6.1fs]", time.Since(r.start).Seconds()) }

// runStep sends at rate messages/s per member for sendFor, waits for the deliveries (at
// most Grace), and measures.
func (r *runner) runStep(ctx context.Context, index int, rate float64, sendFor time.Duration) Step {
	st := r.beginStep(index, rate)
	start := time.Now()
	r.sendAll(ctx, st.p, time.Duration(float64(time.Second)/rate), start, start.Add(sendFor))
	sendEnd := time.Now()
	r.drain(ctx, st.p)
	return r.endStep(st, start, sendEnd)
}

// stepRun is a step in progress: its phase and the readings it started from.
type stepRun struct {
	index        int
	p            *phase
	t0           time.Time
	srv0         []ProcSample
	srvErr       error
	self0        time.Duration
	stopProgress func()
}

func (r *runner) beginStep(index int, rate float64) *stepRun {
	st := &stepRun{index: index, p: &phase{rate: rate}}
	label := ""
	switch r.cfg.Scenario {
	case Ramp:
		label = fmt.Sprintf("  step %d @ %s/s", index+1, fmtRate(rate))
	case ReconnectStorm:
		st.p.name = stormPhases[min(index, len(stormPhases)-1)]
		label = "  " + st.p.name
	}
	st.srv0, st.srvErr = r.procs.sample()
	st.self0 = selfCPU()
	st.t0 = time.Now()
	st.p.startNano = st.t0.UnixNano()
	r.addPhase(st.p)
	st.stopProgress = r.progress(r.stepLine(st.p, label))
	return st
}

// sendAll runs the sender goroutines of p from start to end (or until ctx ends), every
// sender sending every period.
func (r *runner) sendAll(ctx context.Context, p *phase, period time.Duration, start, end time.Time) {
	workers := min(maxWorkers, len(r.senders))
	lists := make([][]*member, workers)
	for _, m := range r.senders {
		lists[m.id%workers] = append(lists[m.id%workers], m)
	}
	var wg sync.WaitGroup
	for _, list := range lists {
		wg.Go(func() { r.sendLoop(ctx, p, list, period, start, end) })
	}
	wg.Wait()
}

// endStep measures a step whose sending ran from start to sendEnd and whose drain is
// over.
func (r *runner) endStep(st *stepRun, start, sendEnd time.Time) Step {
	st.stopProgress()
	srv1, srvErr1 := r.procs.sample()
	window := time.Since(st.t0)
	c, h := st.p.snapshot()
	s := Step{
		Index:       st.index + 1,
		Phase:       st.p.name,
		Rate:        st.p.rate,
		SendSeconds: sendEnd.Sub(start).Seconds(),
		Seconds:     window.Seconds(),
		Counts:      c,
		Lost:        c.Lost(),
		Skipped:     st.p.skipped.Load(),
		Latency:     latencyOf(&h),
		p99:         h.Quantile(0.99),
		hist:        &h,
	}
	if s.SendSeconds > 0 {
		s.SentPerSecond = float64(c.Sent) / s.SendSeconds
		s.DeliveriesPerSecond = float64(c.Delivered) / s.SendSeconds
	}
	s.Loadgen = usage(selfCPU()-st.self0, window, c.Delivered)
	if self, err := ReadProc(os.Getpid()); err == nil {
		s.Loadgen.RSSBytes = self.RSSBytes
	}
	if len(r.procs) > 0 {
		if err := errors.Join(st.srvErr, srvErr1); err != nil {
			r.warn("server processes not measured", "err", err)
		} else {
			u := usage(totalCPU(srv1)-totalCPU(st.srv0), window, c.Delivered)
			u.RSSBytes, u.Processes = totalRSS(srv1), srv1
			s.Server = &u
		}
	}
	return s
}

func usage(cpu, window time.Duration, delivered int64) Usage {
	u := Usage{CPUSeconds: cpu.Seconds()}
	if window > 0 {
		u.CPUPercent = 100 * cpu.Seconds() / window.Seconds()
	}
	if delivered > 0 {
		u.CPUMicrosPerDelivery = float64(cpu.Microseconds()) / float64(delivered)
	}
	return u
}

// sendLoop sends for the members of list from start to end. Every member sends every
// period; member i's sends are offset by i/N of a period, so the N members spread their
// sends evenly instead of all sending on the same tick. Slots are taken in time order;
// a slot more than maxLag late is skipped and counted, so a slow generator never sends
// a burst to catch up.
func (r *runner) sendLoop(ctx context.Context, p *phase, list []*member, period time.Duration, start, end time.Time) {
	n := len(list)
	offsets := make([]time.Duration, n)
	for j, m := range list {
		offsets[j] = time.Duration(int64(period) * int64(m.id) / int64(len(r.senders)))
	}
	rounds := int64(end.Sub(start)/period) + 1
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	buf := make([]byte, 0, 128)
	for k := int64(0); k < rounds*int64(n); k++ {
		j, round := int(k%int64(n)), k/int64(n)
		due := start.Add(offsets[j] + time.Duration(round)*period)
		if !due.Before(end) {
			return // slots are in time order: every later one is past the end too
		}
		now := time.Now()
		if wait := due.Sub(now); wait > coalesce {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
			now = time.Now()
		} else if now.Sub(due) > maxLag {
			p.skipped.Add(1)
			continue
		}
		if k%256 == 0 && ctx.Err() != nil {
			return
		}
		buf = list[j].send(p, buf, now)
	}
}

// drain waits until every expected delivery of ps has arrived, or Grace has passed
// (a second at most once ctx has ended).
func (r *runner) drain(ctx context.Context, ps ...*phase) {
	deadline := time.Now().Add(r.cfg.Grace)
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for {
		now := time.Now()
		if ctx.Err() != nil && deadline.Sub(now) > interGrace {
			deadline = now.Add(interGrace)
		}
		due := false
		for _, p := range ps {
			if c, _ := p.snapshot(); c.Delivered < c.Expected {
				due = true
			}
		}
		if !due || !now.Before(deadline) {
			return
		}
		<-t.C
	}
}

// stepLine is the progress line of a step: counts so far, an estimate of what is lost
// (deliveries expected from messages sent over Grace ago that have not arrived), and the
// p99 of the last interval.
func (r *runner) stepLine(p *phase, label string) func() string {
	type mark struct {
		at       time.Time
		expected int64
	}
	var (
		prev  Histogram
		marks []mark
	)
	return func() string {
		c, h := p.snapshot()
		iv := h.Since(&prev)
		prev = h
		now := time.Now()
		marks = append(marks, mark{now, c.Expected})
		for len(marks) > 1 && now.Sub(marks[1].at) >= r.cfg.Grace {
			marks = marks[1:]
		}
		var settled int64
		if now.Sub(marks[0].at) >= r.cfg.Grace {
			settled = marks[0].expected
		}
		p99 := "-"
		if iv.Count() > 0 {
			p99 = fmtMS(iv.Quantile(0.99))
		}
		line := fmt.Sprintf("%s%s  conns %d  sent %d  delivered %d  lost~ %d  p99 %s",
			r.elapsed(), label, r.live.Load(), c.Sent, c.Delivered, max(settled-c.Delivered, 0), p99)
		if r.reconnecting {
			line += fmt.Sprintf("  reconnects %d (failed attempts %d)", r.reconnects.Load(), r.connectFailures.Load())
		}
		if r.storm != nil {
			line += r.storm.progress()
		}
		return line
	}
}

// runRamp raises the rate step by step until a step fails, the maximum rate has been
// held, maxSteps steps have run, Duration is used up, or ctx ends.
func (r *runner) runRamp(ctx context.Context, rep *Report) {
	cfg := r.cfg
	ramp := &RampResult{MaxP99MS: ms(cfg.RampMaxP99), Factor: cfg.RampFactor, MaxRate: cfg.RampMaxRate}
	rep.Ramp = ramp
	deadline := time.Now().Add(cfg.Duration)
	rate := cfg.Rate
	for i := range maxSteps {
		if ctx.Err() != nil {
			ramp.StopReason = "interrupted"
			return
		}
		if time.Now().Add(cfg.RampStep).After(deadline) {
			ramp.StopReason = "the ramp's time (-duration) is used up"
			return
		}
		s := r.runStep(ctx, i, rate, cfg.RampStep)
		s.Pass, s.Reason = judge(s, cfg.RampMaxP99)
		if ctx.Err() != nil && s.Pass {
			s.Pass, s.Reason = false, "interrupted"
		}
		rep.Steps = append(rep.Steps, s)
		r.printf("%s", s.line())
		if !s.Pass {
			ramp.StopReason = "step " + strconv.Itoa(s.Index) + " failed: " + s.Reason
			return
		}
		if ramp.Held == 0 || s.DeliveriesPerSecond > ramp.HeldDeliveriesPerSecond {
			ramp.Held, ramp.HeldRate, ramp.HeldDeliveriesPerSecond = s.Index, s.Rate, s.DeliveriesPerSecond
		}
		if rate >= cfg.RampMaxRate {
			ramp.StopReason = "the maximum rate passed"
			return
		}
		rate = min(rate*cfg.RampFactor, cfg.RampMaxRate)
	}
	ramp.StopReason = fmt.Sprintf("%d steps run", maxSteps)
}

// judge says whether a ramp step held its rate.
func judge(s Step, maxP99 time.Duration) (bool, string) {
	switch {
	case s.Sent == 0:
		return false, "nothing was sent"
	case s.Lost > 0:
		return false, fmt.Sprintf("lost %d of %d deliveries", s.Lost, s.Expected)
	case s.Duplicated > 0:
		return false, fmt.Sprintf("%d duplicate deliveries", s.Duplicated)
	case s.Skipped > 0:
		return false, fmt.Sprintf("the load generator fell over %v behind schedule (%d sends skipped)", maxLag, s.Skipped)
	case s.p99 > maxP99:
		return false, fmt.Sprintf("p99 %s > %s", fmtMS(s.p99), fmtMS(maxP99))
	}
	return true, ""
}

// hold keeps the idle connections open for Duration and measures server memory.
func (r *runner) hold(ctx context.Context, before []ProcSample) *IdleResult {
	stop := r.progress(func() string {
		line := fmt.Sprintf("%s  idle  conns %d", r.elapsed(), r.live.Load())
		if s, err := r.procs.sample(); err == nil && len(s) > 0 {
			line += "  server RSS " + fmtBytes(totalRSS(s))
		}
		return line
	})
	t0 := time.Now()
	t := time.NewTimer(r.cfg.Duration)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	stop()
	res := &IdleResult{Connections: len(r.members), HeldSeconds: time.Since(t0).Seconds(), Open: int(r.live.Load())}
	if self, err := ReadProc(os.Getpid()); err == nil {
		res.LoadgenRSSBytes = self.RSSBytes
	}
	if len(r.procs) == 0 {
		return res
	}
	after, err := r.procs.sample()
	if err != nil || before == nil {
		r.warn("server memory not measured", "err", err)
		return res
	}
	res.RSSBeforeBytes, res.RSSAfterBytes = totalRSS(before), totalRSS(after)
	res.Before, res.After = before, after
	res.BytesPerConnection = float64(res.RSSAfterBytes-res.RSSBeforeBytes) / float64(len(r.members))
	return res
}
