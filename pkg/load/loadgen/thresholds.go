package loadgen

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
)

// Metric is one k6-named metric of a report.
type Metric struct {
	Type MetricKind `json:"type"`
	// Value is a counter's total, a rate's share of passes, or a trend's sample count.
	Value float64 `json:"value"`
	// Trend is a trend's distribution, in milliseconds.
	Trend *Latency `json:"trend,omitempty"`

	hist *Histogram
}

// ThresholdResult is a threshold and how the run did against it.
type ThresholdResult struct {
	Threshold
	// Value is what Expr's aggregation measured (milliseconds for trends).
	Value float64 `json:"value"`
	Pass  bool    `json:"pass"`
}

// ThresholdsPassed reports whether every threshold held (true when there are none).
func (rep *Report) ThresholdsPassed() bool {
	for _, t := range rep.Thresholds {
		if !t.Pass {
			return false
		}
	}
	return true
}

// evaluate fills rep.Metrics with the scenario's k6 metrics and rep.Thresholds with
// their verdicts.
func (rep *Report) evaluate(cfg Config, reconnectTime Histogram) {
	names := Metrics(cfg.Scenario)
	if len(names) == 0 {
		return
	}
	var (
		c    Counts
		lost int64
		lat  Histogram
	)
	steps := rep.Steps
	if cfg.Scenario == ReconnectStorm {
		// The storm window alone: the settle step is the baseline.
		steps = slices.DeleteFunc(slices.Clone(steps), func(s Step) bool { return s.Phase != "storm" })
	}
	for _, s := range steps {
		c.Sent += s.Sent
		c.Expected += s.Expected
		c.Delivered += s.Delivered
		c.Duplicated += s.Duplicated
		lost += s.Lost
		if s.hist != nil {
			lat.Merge(s.hist)
		}
	}
	var errorFrames int64
	for _, v := range rep.ErrorFrames {
		errorFrames += v
	}
	counters := map[string]int64{
		MetricSent:             c.Sent,
		MetricExpected:         c.Expected,
		MetricDelivered:        c.Delivered,
		MetricLost:             lost,
		MetricDuplicated:       c.Duplicated,
		MetricErrorFrames:      errorFrames,
		MetricUnexpectedCloses: rep.UnexpectedCloses,
		MetricHistoryTruncated: rep.ErrorFrames["history_truncated"],
		// Without reconnects a failed connection fails the run: none is ever counted.
		MetricConnectFailures: 0,
		// A failed first connection fails the run in every scenario.
		MetricJoinFailures: 0,
	}
	if rc := rep.Reconnect; rc != nil {
		counters[MetricUnconfirmed] = rc.Unconfirmed
		counters[MetricUnanswered] = rc.Unanswered
		counters[MetricLostUntold] = rc.LostUntold
		counters[MetricReconnects] = rc.Reconnects
		counters[MetricConnectFailures] = rc.ConnectFailures
	}
	if st := rep.Storm; st != nil {
		counters[MetricReconnects] = st.Back
		counters[MetricConnectFailures] = st.failures()
		counters[MetricStormNotBack] = st.NotBack
	}
	rep.Metrics = make(map[string]Metric, len(names))
	for _, n := range names {
		m := Metric{Type: n.Kind}
		switch n.Kind {
		case KindCounter:
			m.Value = float64(counters[n.Name])
		case KindTrend:
			h := &lat
			if n.Name == MetricReconnectTime {
				h = &reconnectTime
			}
			l := latencyOf(h)
			m.Value, m.Trend, m.hist = float64(h.Count()), &l, h
		case KindRate:
			var pass, total int64
			for _, r := range rep.Checks {
				pass += r.Passes
				total += r.Passes + r.Fails
			}
			if total > 0 {
				m.Value = float64(pass) / float64(total)
			}
		}
		rep.Metrics[n.Name] = m
	}
	for _, t := range Thresholds(cfg) {
		v, pass := evalThreshold(t.Expr, rep.Metrics[t.Metric])
		rep.Thresholds = append(rep.Thresholds, ThresholdResult{Threshold: t, Value: v, Pass: pass})
	}
}

// thresholdExpr is the part of k6's threshold syntax the scenarios use:
// an aggregation, an operator and a number.
var thresholdExpr = regexp.MustCompile(`^(count|rate|value|max|med|p\((\d+(?:\.\d+)?)\))\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?)$`)

// evalThreshold evaluates a k6 threshold expression against m; an expression it
// cannot read fails, with NaN as its value.
func evalThreshold(expr string, m Metric) (value float64, pass bool) {
	g := thresholdExpr.FindStringSubmatch(expr)
	if g == nil {
		return math.NaN(), false
	}
	limit, _ := strconv.ParseFloat(g[4], 64)
	switch agg := g[1]; {
	case agg == "count" || agg == "rate" || agg == "value":
		value = m.Value
	case m.hist == nil:
		return math.NaN(), false
	case agg == "max":
		value = ms(m.hist.Max())
	case agg == "med":
		value = ms(m.hist.Quantile(0.5))
	default:
		q, _ := strconv.ParseFloat(g[2], 64)
		value = ms(m.hist.Quantile(q / 100))
	}
	switch g[3] {
	case "<":
		pass = value < limit
	case "<=":
		pass = value <= limit
	case ">":
		pass = value > limit
	case ">=":
		pass = value >= limit
	case "==":
		pass = value == limit
	case "!=":
		pass = value != limit
	}
	return value, pass
}

func (t ThresholdResult) line() string {
	mark := "✓"
	if !t.Pass {
		mark = "✗"
	}
	agg := t.Expr
	if g := thresholdExpr.FindStringSubmatch(t.Expr); g != nil {
		agg = g[1]
	}
	return fmt.Sprintf("%s %s %s (%s=%s)", mark, t.Metric, t.Expr, agg, strconv.FormatFloat(t.Value, 'f', -1, 64))
}
