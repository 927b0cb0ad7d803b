package loadgen

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Latencies are counted in microseconds in log-linear buckets (the HDR histogram idea):
// one bucket per microsecond below 64 µs, then 32 buckets per power of two, so a bucket's
// upper bound is within 1/32 (3.2%) of any value in it. Values from about 2^38 µs (3 days)
// up share the last bucket.
const (
	subBits    = 5
	subBuckets = 1 << subBits   // buckets per power of two
	linearMax  = 2 * subBuckets // values below this have a bucket each
	maxExp     = 32             // highest shift
	numBuckets = linearMax + maxExp*subBuckets
)

func bucketOf(us uint64) int {
	if us < linearMax {
		return int(us)
	}
	e := bits.Len64(us) - (subBits + 1) // ≥ 1; us>>e is in [32, 64)
	if e > maxExp {
		return numBuckets - 1
	}
	return linearMax + (e-1)*subBuckets + int(us>>e) - subBuckets
}

// bucketUpper is the largest value counted in bucket i.
func bucketUpper(i int) uint64 {
	if i < linearMax {
		return uint64(i)
	}
	e := (i-linearMax)/subBuckets + 1
	m := uint64((i-linearMax)%subBuckets + subBuckets)
	return (m+1)<<e - 1
}

// Histogram is a latency histogram of fixed size (about 9 KiB), whatever the number of
// samples. The zero value is empty and ready. It is not safe for concurrent use.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	maxUS  uint64
}

// Record counts one latency; negative latencies (clock steps) count as 0.
func (h *Histogram) Record(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	h.counts[bucketOf(us)]++
	h.n++
	h.maxUS = max(h.maxUS, us)
}

// Count is the number of latencies recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest latency recorded, to the microsecond.
func (h *Histogram) Max() time.Duration { return time.Duration(h.maxUS) * time.Microsecond }

// Quantile returns the latency under which a fraction q (0 to 1) of the samples fall: the
// upper bound of the bucket holding the sample of rank ceil(q·n), never above Max. It is
// 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(min(max(q, 0), 1) * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == numBuckets-1 {
				return h.Max() // the last bucket has no upper bound
			}
			return time.Duration(min(bucketUpper(i), h.maxUS)) * time.Microsecond
		}
	}
	return h.Max()
}

// Merge adds the samples of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.maxUS = max(h.maxUS, o.maxUS)
}

// Since returns the samples in h that were not yet in earlier, an older copy of the same
// histogram: the latencies of an interval. Its Max is the upper bound of its highest
// bucket (capped by h's Max), since the exact maximum of an interval is not kept.
func (h *Histogram) Since(earlier *Histogram) Histogram {
	var d Histogram
	for i := range h.counts {
		d.counts[i] = h.counts[i] - earlier.counts[i]
		if d.counts[i] > 0 {
			d.maxUS = h.maxUS
			if i < numBuckets-1 {
				d.maxUS = min(bucketUpper(i), h.maxUS)
			}
		}
	}
	d.n = h.n - earlier.n
	return d
}

// liveHistogram is a Histogram that many goroutines record into at once.
type liveHistogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	maxUS  atomic.Uint64
}

func (h *liveHistogram) record(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	h.counts[bucketOf(us)].Add(1)
	h.n.Add(1)
	for {
		old := h.maxUS.Load()
		if us <= old || h.maxUS.CompareAndSwap(old, us) {
			return
		}
	}
}

// addTo adds a snapshot of h to dst. Buckets are read one by one while others record,
// so a snapshot taken during a run may be a few samples off; n is derived from the
// buckets read, so it is always consistent with them.
func (h *liveHistogram) addTo(dst *Histogram) {
	for i := range h.counts {
		c := h.counts[i].Load()
		dst.counts[i] += c
		dst.n += c
	}
	dst.maxUS = max(dst.maxUS, h.maxUS.Load())
}

func (h *liveHistogram) snapshot() Histogram {
	var s Histogram
	h.addTo(&s)
	return s
}
