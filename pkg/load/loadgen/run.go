package loadgen

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
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
		centrifugo: cfg.Protocol == ProtocolCentrifugo,
	}
	r.runBytes = []byte(r.run)
	r.deadline = r.start.Add(cfg.Duration)
	if cfg.Token != "" || cfg.Batch {
		r.header = http.Header{}
	}
	if cfg.Token != "" {
		r.header.Set("Authorization", "Bearer "+cfg.Token)
	}
	if cfg.Batch {
		r.header.Set("Sec-WebSocket-Protocol", BatchSubprotocol)
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
	// centrifugo: the clients speak Centrifugo's protocol (Config.Protocol).
	centrifugo bool

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
	rep := &Report{
		Scenario: cfg.Scenario, Run: r.run, URLs: cfg.URLs, Rooms: rooms, Members: cfg.Members,
	}
	if r.centrifugo {
		rep.Protocol = ProtocolCentrifugo
	}
	return rep, nil
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

func (r *runner) printf(format string, args ...any) {
	if r.cfg.Progress != nil {
		r.progressMu.Lock()
		defer r.progressMu.Unlock()
		fmt.Fprintf(r.cfg.Progress, format+"\n", args...)
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
