package loadgen

import (
	"sync/atomic"
)

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
