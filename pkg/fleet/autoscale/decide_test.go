package autoscale_test

import (
	"math"
	"testing"
	"time"

	"roomcast/pkg/fleet/autoscale"
)

var t0 = time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)

// hpa is the policy of the worked examples: target 100 per replica, ±10%, [1, 20],
// a 5-minute window.
var hpa = autoscale.Policy{Target: 100, Min: 1, Max: 20, Tolerance: 0.1, ScaleDownWindow: 5 * time.Minute}

// follow as a step's current means the previous step's desired count (the scale was
// applied).
const follow = -1

type step struct {
	at      time.Duration // since t0
	current int
	load    float64
	rec     int // want Recommendation
	desired int // want Desired
	reason  autoscale.Reason
}

func TestDecideOneStep(t *testing.T) {
	tests := []struct {
		name   string
		policy autoscale.Policy
		step   step
		capped bool
	}{
		// https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#algorithm-details
		{"HPA docs: 200 per replica for a target of 100 doubles", hpa, step{0, 3, 600, 6, 6, autoscale.ReasonScaleUp}, false},
		{"HPA docs: 50 per replica for a target of 100 halves (one fewer per step)", hpa, step{0, 4, 200, 2, 3, autoscale.ReasonScaleDown}, true},
		{"within tolerance above: 108 per replica", hpa, step{0, 4, 432, 4, 4, autoscale.ReasonWithinTolerance}, false},
		{"within tolerance below: 92 per replica", hpa, step{0, 4, 368, 4, 4, autoscale.ReasonWithinTolerance}, false},
		{"tolerance edge is inclusive: exactly 110 per replica", hpa, step{0, 4, 440, 4, 4, autoscale.ReasonWithinTolerance}, false},
		{"tolerance edge is inclusive: exactly 90 per replica", hpa, step{0, 4, 360, 4, 4, autoscale.ReasonWithinTolerance}, false},
		{"just over the tolerance: 111 per replica", hpa, step{0, 4, 444, 5, 5, autoscale.ReasonScaleUp}, false},
		{"tolerance 0: any difference acts", withTolerance(hpa, 0), step{0, 4, 404, 5, 5, autoscale.ReasonScaleUp}, false},
		{"outside the tolerance but rounding up gives the same count", hpa, step{0, 2, 170, 2, 2, autoscale.ReasonNoChange}, false},
		{"the Swarm test: 100 connections, 20 per replica, from 2", autoscale.Policy{Target: 20, Min: 2, Max: 20, Tolerance: 0.1, ScaleDownWindow: 20 * time.Second}, step{0, 2, 100, 5, 5, autoscale.ReasonScaleUp}, false},
		{"scale-up is capped at double or +4: from 2 at most 6", hpa, step{0, 2, 2000, 20, 6, autoscale.ReasonScaleUp}, true},
		{"scale-up is capped at double or +4: from 8 at most 16", hpa, step{0, 8, 2000, 20, 16, autoscale.ReasonScaleUp}, true},
		{"clamped to max", hpa, step{0, 16, 5000, 50, 20, autoscale.ReasonScaleUp}, false},
		{"at max, more wanted", hpa, step{0, 20, 5000, 50, 20, autoscale.ReasonAtMax}, false},
		{"no load at the minimum", withMin(hpa, 2), step{0, 2, 0, 0, 2, autoscale.ReasonAtMin}, false},
		{"no load, scale-down to the minimum only", withMin(hpa, 3), step{0, 4, 0, 0, 3, autoscale.ReasonScaleDown}, true},
		{"below the minimum within tolerance: raised", withMin(hpa, 3), step{0, 1, 100, 1, 3, autoscale.ReasonBelowMin}, false},
		{"above the maximum within tolerance: lowered at once", hpa, step{0, 25, 2500, 25, 20, autoscale.ReasonAboveMax}, false},
		{"absurd load is clamped, not overflowed", hpa, step{0, 4, 1e300, math.MaxInt32, 8, autoscale.ReasonScaleUp}, true},
		{"a service at 0 replicas is left alone", hpa, step{0, 0, 500, 0, 0, autoscale.ReasonZeroReplicas}, false},
		{"NaN keeps the count", hpa, step{0, 4, math.NaN(), 4, 4, autoscale.ReasonNoData}, false},
		{"+Inf keeps the count", hpa, step{0, 4, math.Inf(1), 4, 4, autoscale.ReasonNoData}, false},
		{"a negative load keeps the count", hpa, step{0, 4, -5, 4, 4, autoscale.ReasonNoData}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := autoscale.Decide(tt.policy, nil, t0, tt.step.current, tt.step.load)
			if d.Recommendation != tt.step.rec || d.Desired != tt.step.desired || d.Reason != tt.step.reason || d.StepLimited != tt.capped {
				t.Fatalf("Decide(current %d, load %v) = recommendation %d, desired %d, %s, step limited %v; want %d, %d, %s, %v",
					tt.step.current, tt.step.load, d.Recommendation, d.Desired, d.Reason, d.StepLimited,
					tt.step.rec, tt.step.desired, tt.step.reason, tt.capped)
			}
			if d.Current != tt.step.current || d.Load != tt.step.load && !math.IsNaN(tt.step.load) || !d.At.Equal(t0) {
				t.Errorf("inputs not reported: %+v", d)
			}
		})
	}
}

func TestDecideReportsItsInputs(t *testing.T) {
	d := autoscale.Decide(hpa, nil, t0, 4, 600)
	if d.LoadPerReplica != 150 || d.Ratio != 1.5 || d.Recommendation != 6 || d.Stabilized != 6 || d.Desired != 6 {
		t.Fatalf("%+v", d)
	}
	if len(d.History) != 1 || d.History[0] != (autoscale.Recommendation{At: t0, Replicas: 6}) {
		t.Fatalf("history %+v, want the one recommendation", d.History)
	}
}

func TestDecideSequences(t *testing.T) {
	hpa20s := autoscale.Policy{Target: 20, Min: 2, Max: 20, Tolerance: 0.1, ScaleDownWindow: 20 * time.Second}
	tests := []struct {
		name   string
		policy autoscale.Policy
		seed   []autoscale.Recommendation
		steps  []step
	}{
		{
			name:   "scale-up at once, scale-down only after the window, one replica a step",
			policy: hpa20s,
			steps: []step{
				{0, 2, 100, 5, 5, autoscale.ReasonScaleUp},
				{2 * time.Second, follow, 100, 5, 5, autoscale.ReasonWithinTolerance},
				{4 * time.Second, follow, 0, 0, 5, autoscale.ReasonStabilized},
				{20 * time.Second, follow, 0, 0, 5, autoscale.ReasonStabilized},  // the 5 of t=2s is 18s old
				{22 * time.Second, follow, 0, 0, 4, autoscale.ReasonScaleDown},   // it is 20s old: out
				{24 * time.Second, follow, 0, 0, 3, autoscale.ReasonScaleDown},   // one a step
				{26 * time.Second, follow, 0, 0, 2, autoscale.ReasonScaleDown},   // the minimum
				{28 * time.Second, follow, 0, 0, 2, autoscale.ReasonAtMin},       // stays
				{30 * time.Second, follow, 100, 5, 5, autoscale.ReasonScaleUp},   // up at once again
				{32 * time.Second, follow, 50, 3, 5, autoscale.ReasonStabilized}, // 10 per replica
			},
		},
		{
			name:   "scale-down goes only to the highest recommendation of the window",
			policy: hpa,
			steps: []step{
				{0, 10, 1000, 10, 10, autoscale.ReasonWithinTolerance},
				{1 * time.Minute, follow, 800, 8, 10, autoscale.ReasonStabilized},
				{2 * time.Minute, follow, 600, 6, 10, autoscale.ReasonStabilized},
				{3 * time.Minute, follow, 200, 2, 10, autoscale.ReasonStabilized},
				{5 * time.Minute, follow, 200, 2, 9, autoscale.ReasonScaleDown}, // the 10 of t=0 is out; 8 is the highest; one a step
				{5*time.Minute + 15*time.Second, follow, 200, 2, 8, autoscale.ReasonScaleDown},
				{5*time.Minute + 30*time.Second, follow, 200, 2, 8, autoscale.ReasonStabilized}, // the 8 of 1m holds
				{6 * time.Minute, follow, 200, 2, 7, autoscale.ReasonScaleDown},                 // it is out; the 6 of 2m is the highest
				{6*time.Minute + 15*time.Second, follow, 200, 2, 6, autoscale.ReasonScaleDown},
				{6*time.Minute + 30*time.Second, follow, 200, 2, 6, autoscale.ReasonStabilized},
				{7 * time.Minute, follow, 200, 2, 5, autoscale.ReasonScaleDown}, // only 2s left in the window
			},
		},
		{
			name:   "a seeded window holds the count at start",
			policy: hpa,
			seed:   autoscale.Seed(t0, 6),
			steps: []step{
				{15 * time.Second, 6, 0, 0, 6, autoscale.ReasonStabilized},
				{4*time.Minute + 59*time.Second, 6, 0, 0, 6, autoscale.ReasonStabilized},
				{5 * time.Minute, 6, 0, 0, 5, autoscale.ReasonScaleDown},
			},
		},
		{
			name:   "a seeded window never holds back a scale-up",
			policy: hpa,
			seed:   autoscale.Seed(t0, 2),
			steps: []step{
				{15 * time.Second, 2, 500, 5, 5, autoscale.ReasonScaleUp},
			},
		},
		{
			name:   "window 0: no stabilisation",
			policy: autoscale.Policy{Target: 100, Min: 1, Max: 20, Tolerance: 0.1},
			steps: []step{
				{0, 5, 500, 5, 5, autoscale.ReasonWithinTolerance},
				{15 * time.Second, follow, 100, 1, 4, autoscale.ReasonScaleDown},
			},
		},
		{
			name:   "NaN in the middle keeps the count and the window",
			policy: hpa20s,
			steps: []step{
				{0, 2, 100, 5, 5, autoscale.ReasonScaleUp},
				{2 * time.Second, follow, math.NaN(), 5, 5, autoscale.ReasonNoData},
				{4 * time.Second, follow, 0, 0, 5, autoscale.ReasonStabilized},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			history := tt.seed
			current := 0
			for i, s := range tt.steps {
				if s.current != follow {
					current = s.current
				}
				d := autoscale.Decide(tt.policy, history, t0.Add(s.at), current, s.load)
				if d.Recommendation != s.rec || d.Desired != s.desired || d.Reason != s.reason {
					t.Fatalf("step %d at +%v (current %d, load %v): recommendation %d, desired %d, %s; want %d, %d, %s (window %+v)",
						i, s.at, current, s.load, d.Recommendation, d.Desired, d.Reason, s.rec, s.desired, s.reason, history)
				}
				history, current = d.History, d.Desired
			}
		})
	}
}

// Load that flaps every tick between twice the target and a fifth of it: without a
// window the count would saw up and down every tick; with one it stays up.
func TestFlappingLoadDoesNotFlapTheCount(t *testing.T) {
	for _, tt := range []struct {
		name        string
		window      time.Duration
		wantChanges int
	}{
		{"5m window", 5 * time.Minute, 1}, // the first scale-up only
		{"no window", 0, 40},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := autoscale.Policy{Target: 100, Min: 2, Max: 20, Tolerance: 0.1, ScaleDownWindow: tt.window}
			var history []autoscale.Recommendation
			current, changes := 4, 0
			for i := range 40 { // 10 minutes of 15s ticks
				load := 800.0 // 8 replicas' worth
				if i%2 == 1 {
					load = 80
				}
				d := autoscale.Decide(p, history, t0.Add(time.Duration(i)*15*time.Second), current, load)
				if d.Desired != current {
					changes++
				}
				if tt.window > 0 && i > 0 && d.Desired != 8 {
					t.Fatalf("tick %d: desired %d (%s), want 8 throughout", i, d.Desired, d.Reason)
				}
				history, current = d.History, d.Desired
			}
			if changes != tt.wantChanges {
				t.Fatalf("%d changes of the count in 40 ticks, want %d", changes, tt.wantChanges)
			}
		})
	}
}

func TestDecideDoesNotModifyItsHistory(t *testing.T) {
	history := []autoscale.Recommendation{{At: t0, Replicas: 9}, {At: t0.Add(time.Minute), Replicas: 3}}
	before := append([]autoscale.Recommendation(nil), history...)
	d := autoscale.Decide(hpa, history[:1], t0.Add(6*time.Minute), 9, 100)
	if history[1] != before[1] || history[0] != before[0] {
		t.Fatalf("history modified: %+v", history)
	}
	if len(d.History) != 1 || d.History[0].Replicas != 1 {
		t.Fatalf("window %+v: the old 9 should be out, the new 1 in", d.History)
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    autoscale.Policy
		ok   bool
	}{
		{"default", autoscale.Policy{Target: 5000, Min: 2, Max: 20, Tolerance: 0.1, ScaleDownWindow: 5 * time.Minute}, true},
		{"min equals max", autoscale.Policy{Target: 1, Min: 3, Max: 3}, true},
		{"target 0", autoscale.Policy{Target: 0, Min: 1, Max: 2}, false},
		{"target NaN", autoscale.Policy{Target: math.NaN(), Min: 1, Max: 2}, false},
		{"min 0", autoscale.Policy{Target: 1, Min: 0, Max: 2}, false},
		{"max below min", autoscale.Policy{Target: 1, Min: 3, Max: 2}, false},
		{"tolerance 1", autoscale.Policy{Target: 1, Min: 1, Max: 2, Tolerance: 1}, false},
		{"negative window", autoscale.Policy{Target: 1, Min: 1, Max: 2, ScaleDownWindow: -time.Second}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.p.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func withTolerance(p autoscale.Policy, tol float64) autoscale.Policy { p.Tolerance = tol; return p }
func withMin(p autoscale.Policy, n int) autoscale.Policy             { p.Min = n; return p }
