package loadgen

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

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
