package testenv

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Metric returns the value of the counter or gauge name whose labels include the given
// name/value pairs, failing the test if there is none.
func Metric(tb testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	tb.Helper()
	v, ok := LookupMetric(tb, g, name, labels...)
	if !ok {
		tb.Fatalf("metric %s%v not found", name, labels)
	}
	return v
}

// LookupMetric is Metric without the failure when the series does not exist.
func LookupMetric(tb testing.TB, g prometheus.Gatherer, name string, labels ...string) (float64, bool) {
	tb.Helper()
	m := series(tb, g, name, labels...)
	switch {
	case m == nil:
		return 0, false
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Untyped != nil:
		return m.Untyped.GetValue(), true
	}
	return 0, false
}

// Histogram returns the sample count and sum of the histogram name whose labels include
// the given name/value pairs, failing the test if there is none.
func Histogram(tb testing.TB, g prometheus.Gatherer, name string, labels ...string) (count uint64, sum float64) {
	tb.Helper()
	m := series(tb, g, name, labels...)
	if m == nil || m.Histogram == nil {
		tb.Fatalf("histogram %s%v not found", name, labels)
	}
	return m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum()
}

// series finds the first series of name whose labels include the given name/value
// pairs, or nil.
func series(tb testing.TB, g prometheus.Gatherer, name string, labels ...string) *dto.Metric {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
						break
					}
				}
				if !found {
					continue series
				}
			}
			if m.Counter != nil || m.Gauge != nil || m.Untyped != nil || m.Histogram != nil {
				return m
			}
		}
	}
	return nil
}
