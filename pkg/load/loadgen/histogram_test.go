package loadgen_test

import (
	"math"
	"slices"
	"testing"
	"time"

	"roomcast/pkg/load/loadgen"
)

// exactQuantile is the sample of rank ceil(q·n), the definition Quantile approximates.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := max(int(math.Ceil(q*float64(len(sorted)))), 1)
	return sorted[rank-1]
}

func TestHistogramQuantiles(t *testing.T) {
	uniform := func(n int, step time.Duration) []time.Duration {
		var out []time.Duration
		for i := 1; i <= n; i++ {
			out = append(out, time.Duration(i)*step)
		}
		return out
	}
	tests := []struct {
		name    string
		samples []time.Duration
	}{
		{"one sample", []time.Duration{3 * time.Millisecond}},
		{"constant", slices.Repeat([]time.Duration{250 * time.Microsecond}, 1000)},
		{"sub-64µs exact", uniform(63, time.Microsecond)},
		{"uniform 1µs..10ms", uniform(10000, time.Microsecond)},
		{"uniform 1ms..10s", uniform(10000, time.Millisecond)},
		{"bimodal with a tail", append(append(slices.Repeat([]time.Duration{time.Millisecond}, 980),
			slices.Repeat([]time.Duration{50 * time.Millisecond}, 15)...), uniform(5, time.Second)...)},
		{"huge", []time.Duration{time.Microsecond, 1000 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h loadgen.Histogram
			for _, s := range tt.samples {
				h.Record(s)
			}
			sorted := slices.Sorted(slices.Values(tt.samples))
			if h.Count() != uint64(len(sorted)) {
				t.Fatalf("Count = %d, want %d", h.Count(), len(sorted))
			}
			if h.Max() != sorted[len(sorted)-1] {
				t.Fatalf("Max = %v, want %v", h.Max(), sorted[len(sorted)-1])
			}
			for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
				got, want := h.Quantile(q), exactQuantile(sorted, q)
				// A bucket's upper bound is at most 1/32 above any value in it (1µs
				// resolution); the last bucket clamps values over ~3 days, up to Max.
				if got < want || (float64(got) > float64(want)*(1+1.0/32)+float64(time.Microsecond) && got != h.Max()) {
					t.Errorf("Quantile(%v) = %v, want %v (within 1/32 above)", q, got, want)
				}
			}
		})
	}
}

func TestHistogramEmptyAndNegative(t *testing.T) {
	var h loadgen.Histogram
	if h.Quantile(0.99) != 0 || h.Max() != 0 || h.Count() != 0 {
		t.Fatalf("empty histogram: p99 %v, max %v, count %d", h.Quantile(0.99), h.Max(), h.Count())
	}
	h.Record(-time.Second) // a clock step backwards
	if h.Quantile(1) != 0 || h.Count() != 1 {
		t.Fatalf("negative sample: p100 %v, count %d; want 0, 1", h.Quantile(1), h.Count())
	}
}

func TestHistogramBucketBounds(t *testing.T) {
	// Each value v, recorded alongside a larger one, reads back as its bucket's upper
	// bound: never below v and at most 1/32 above it.
	for v := time.Duration(1); v < 20*time.Second; v = v*17/16 + time.Microsecond {
		var h loadgen.Histogram
		h.Record(v)
		h.Record(time.Hour)
		got := h.Quantile(0.5)
		us := v.Truncate(time.Microsecond)
		if got < us || float64(got-us) > float64(us)/32 {
			t.Fatalf("value %v reads back as %v", v, got)
		}
	}
}

func TestHistogramMergeAndSince(t *testing.T) {
	var a, b loadgen.Histogram
	for i := range 100 {
		a.Record(time.Duration(i) * time.Millisecond)
	}
	earlier := a
	for range 100 {
		a.Record(500 * time.Millisecond)
		b.Record(500 * time.Millisecond)
	}
	iv := a.Since(&earlier)
	if iv.Count() != 100 {
		t.Fatalf("Since: count %d, want 100", iv.Count())
	}
	if p := iv.Quantile(0.5); p < 500*time.Millisecond || p > 516*time.Millisecond {
		t.Fatalf("Since: p50 %v, want about 500ms", p)
	}
	var m loadgen.Histogram
	m.Merge(&earlier)
	m.Merge(&b)
	if m.Count() != a.Count() || m.Quantile(0.75) != a.Quantile(0.75) || m.Max() != a.Max() {
		t.Fatalf("Merge: count %d p75 %v max %v; want %d %v %v", m.Count(), m.Quantile(0.75), m.Max(), a.Count(), a.Quantile(0.75), a.Max())
	}
}
