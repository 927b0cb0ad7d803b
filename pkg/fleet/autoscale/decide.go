package autoscale

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Policy is what Decide aims for.
type Policy struct {
	// Target is the load per replica to aim for (above 0).
	Target float64
	// Min and Max bound the desired count (1 <= Min <= Max).
	Min, Max int
	// Tolerance: no change while the load per replica is within ±Tolerance (a
	// fraction, 0 <= Tolerance < 1) of Target.
	Tolerance float64
	// ScaleDownWindow: a scale-down goes no lower than the highest recommendation of
	// this long (0: no stabilisation).
	ScaleDownWindow time.Duration
}

// Step limits, as the defaults of the Kubernetes HPA for scaling up (double, or four
// more, whichever is more) and one replica fewer per step for scaling down, so a
// WebSocket service sheds its connections one replica's drain at a time.
const (
	ScaleUpFactor  = 2
	ScaleUpMinStep = 4
	ScaleDownStep  = 1
)

// maxRecommendation keeps ceil(load/target) within an int for absurd loads; Max
// clamps it further.
const maxRecommendation = math.MaxInt32

const toleranceEpsilon = 1e-9

// Validate says what is wrong with p, if anything.
func (p Policy) Validate() error {
	switch {
	case !(p.Target > 0) || math.IsInf(p.Target, 0):
		return fmt.Errorf("target %v: want a number above 0", p.Target)
	case p.Min < 1:
		return fmt.Errorf("min replicas %d: want at least 1", p.Min)
	case p.Max < p.Min:
		return fmt.Errorf("max replicas %d: want at least min replicas (%d)", p.Max, p.Min)
	case !(p.Tolerance >= 0 && p.Tolerance < 1):
		return fmt.Errorf("tolerance %v: want a fraction from 0 to below 1", p.Tolerance)
	case p.ScaleDownWindow < 0:
		return errors.New("scale-down window: want 0 or more")
	}
	return nil
}

// Recommendation is what the HPA rule asked for at one time (before stabilisation,
// step limits and bounds).
type Recommendation struct {
	At       time.Time
	Replicas int
}

// Seed is the window of a target seen for the first time (at start, after a color
// change or a pause): its current count, as the Kubernetes HPA does, so that nothing
// scales down within a window of starting to watch it.
func Seed(now time.Time, current int) []Recommendation {
	return []Recommendation{{At: now, Replicas: current}}
}

// Reason says why a decision came out as it did. The set is closed: it is a metric
// label.
type Reason string

// Reasons of Decide, and of the loop around it (ReasonPaused, ReasonError).
const (
	ReasonScaleUp         Reason = "scale_up"         // the rule asks for more replicas (maybe capped at the step limit)
	ReasonScaleDown       Reason = "scale_down"       // the whole window asks for fewer (one fewer per step)
	ReasonWithinTolerance Reason = "within_tolerance" // load per replica within ±tolerance of the target
	ReasonNoChange        Reason = "no_change"        // the rule, rounded up, gives the current count
	ReasonStabilized      Reason = "stabilized"       // fewer wanted now, but not by the whole window
	ReasonAtMin           Reason = "at_min"           // fewer wanted, already at the minimum
	ReasonAtMax           Reason = "at_max"           // more wanted, already at the maximum
	ReasonBelowMin        Reason = "below_min"        // raised to the minimum
	ReasonAboveMax        Reason = "above_max"        // lowered to the maximum
	ReasonZeroReplicas    Reason = "zero_replicas"    // the service is at 0: someone stopped it on purpose; left alone
	ReasonNoData          Reason = "no_data"          // the load is not a finite number of 0 or more
	ReasonPaused          Reason = "paused"           // a release is under way (roomcast.promoting=true)
	ReasonError           Reason = "error"            // Docker or Prometheus failed, or their data was unusable
)

// Reasons lists every Reason, for metrics exported from start.
var Reasons = []Reason{ReasonScaleUp, ReasonScaleDown, ReasonWithinTolerance, ReasonNoChange,
	ReasonStabilized, ReasonAtMin, ReasonAtMax, ReasonBelowMin, ReasonAboveMax,
	ReasonZeroReplicas, ReasonNoData, ReasonPaused, ReasonError}

// Decision is the outcome of Decide, with its inputs.
type Decision struct {
	At      time.Time
	Current int
	Load    float64
	// LoadPerReplica is Load / Current; Ratio is LoadPerReplica / Target.
	LoadPerReplica, Ratio float64
	// Recommendation is the HPA rule's count: Current within the tolerance, else
	// ceil(Current × Ratio).
	Recommendation int
	// Stabilized is the recommendation after the scale-down window.
	Stabilized int
	// Desired is the count to set: Stabilized within the step limits and [Min, Max].
	Desired int
	// StepLimited is set when a step limit held Desired back.
	StepLimited bool
	Reason      Reason
	// History is the window to pass to the next Decide.
	History []Recommendation
}

// Decide applies the Kubernetes HPA rule to a service at current replicas carrying
// load (the sum over its replicas), at time now, given the recommendations of the
// window so far (history, which is not modified):
//
//  1. ratio = (load / current) / target; within ±tolerance of 1 (edges included) the
//     recommendation is current, else ceil(current × ratio) (that is,
//     ceil(load / target)).
//  2. Scale-up is at once; scale-down goes no lower than the highest recommendation of
//     the last ScaleDownWindow (this one included).
//  3. One step adds at most max(current × ScaleUpFactor, current + ScaleUpMinStep) and
//     removes at most ScaleDownStep replicas.
//  4. The result is clamped to [Min, Max], also when that means a change within the
//     tolerance (a count outside the bounds is always brought back).
//
// A load that is not a finite number of 0 or more keeps current (ReasonNoData) and
// records nothing; so does current <= 0 (ReasonZeroReplicas: a service stopped on
// purpose is left alone, as the HPA does).
func Decide(p Policy, history []Recommendation, now time.Time, current int, load float64) Decision {
	d := Decision{At: now, Current: current, Load: load, Recommendation: current, Stabilized: current, Desired: current}
	window := prune(history, now, p.ScaleDownWindow)
	if math.IsNaN(load) || math.IsInf(load, 0) || load < 0 {
		d.Reason, d.History = ReasonNoData, window
		return d
	}
	if current <= 0 {
		d.Reason, d.History = ReasonZeroReplicas, window
		return d
	}
	d.LoadPerReplica = load / float64(current)
	d.Ratio = d.LoadPerReplica / p.Target
	// The epsilon keeps the edge inclusive despite binary fractions: 110/100 is 1.1
	// within a tolerance of 0.1, as a person means it.
	within := math.Abs(d.Ratio-1) <= p.Tolerance+toleranceEpsilon
	if !within {
		// ceil(load/target) rather than ceil(current × ratio): the same number without
		// the rounding error of the extra multiplication.
		d.Recommendation = int(math.Min(math.Ceil(load/p.Target), maxRecommendation))
	}
	window = append(window, Recommendation{At: now, Replicas: d.Recommendation})
	d.History = window

	d.Stabilized = d.Recommendation
	if d.Recommendation < current {
		highest := d.Recommendation
		for _, r := range window {
			highest = max(highest, r.Replicas)
		}
		d.Stabilized = min(current, highest)
	}

	desired := d.Stabilized
	if up := max(current*ScaleUpFactor, current+ScaleUpMinStep); desired > up {
		desired, d.StepLimited = up, true
	}
	if down := current - ScaleDownStep; desired < down {
		desired, d.StepLimited = down, true
	}
	d.Desired = min(max(desired, p.Min), p.Max)
	if d.Desired != desired {
		d.StepLimited = false // the bounds, not the step, decided
	}

	switch {
	case d.Desired > current && d.Stabilized <= current:
		d.Reason = ReasonBelowMin
	case d.Desired > current:
		d.Reason = ReasonScaleUp
	case d.Desired < current && d.Stabilized >= current:
		d.Reason = ReasonAboveMax
	case d.Desired < current:
		d.Reason = ReasonScaleDown
	case within:
		d.Reason = ReasonWithinTolerance
	case d.Recommendation > current:
		d.Reason = ReasonAtMax
	case d.Recommendation == current:
		d.Reason = ReasonNoChange
	case current <= p.Min:
		d.Reason = ReasonAtMin
	default:
		d.Reason = ReasonStabilized
	}
	return d
}

// prune returns a copy of the recommendations made after now - window.
func prune(history []Recommendation, now time.Time, window time.Duration) []Recommendation {
	cutoff := now.Add(-window)
	out := make([]Recommendation, 0, len(history)+1)
	for _, r := range history {
		if r.At.After(cutoff) {
			out = append(out, r)
		}
	}
	return out
}
