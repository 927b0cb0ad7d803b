package loadgen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
)

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
// period; the N senders' sends are offset by slot/N of a period (see sendSlot), so they
// spread evenly instead of all sending on the same tick. Slots are taken in time order;
// a slot more than maxLag late is skipped and counted, so a slow generator never sends
// a burst to catch up.
func (r *runner) sendLoop(ctx context.Context, p *phase, list []*member, period time.Duration, start, end time.Time) {
	n := len(list)
	slots := r.sendSlots()
	list = slices.Clone(list)
	slices.SortFunc(list, func(a, b *member) int { return r.sendSlot(a) - r.sendSlot(b) })
	offsets := make([]time.Duration, n)
	for j, m := range list {
		offsets[j] = time.Duration(int64(period) * int64(r.sendSlot(m)) / int64(slots))
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

// sendSlots is how many send slots a period has: one per sender, or with Interleave
// one per member position in each room (the last room may not be full).
func (r *runner) sendSlots() int {
	if !r.cfg.Interleave || r.cfg.Members < 1 {
		return len(r.senders)
	}
	members := r.cfg.Members
	return (len(r.senders) + members - 1) / members * members
}

// sendSlot is the slot of m's sends in a period: its place among the senders, or with
// Interleave its position in its room first and its room second.
func (r *runner) sendSlot(m *member) int {
	if !r.cfg.Interleave || r.cfg.Members < 1 {
		return m.id
	}
	members := r.cfg.Members
	rooms := (len(r.senders) + members - 1) / members
	return m.id%members*rooms + m.id/members
}
