package bench

import (
	"math"
	"slices"
	"time"
)

// Sample is the outcome of one timed run: how many operations completed in how long,
// and the latency percentiles computed exactly from every recorded latency.
type Sample struct {
	Ops     int
	Elapsed time.Duration
	P50     time.Duration
	P99     time.Duration
}

// Rate is operations per second; 0 for an empty sample.
func (s Sample) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Ops) / s.Elapsed.Seconds()
}

// summarize builds a Sample from the latencies of every completed operation. It sorts
// lat in place.
func summarize(lat []time.Duration, elapsed time.Duration) Sample {
	slices.Sort(lat)
	return Sample{Ops: len(lat), Elapsed: elapsed, P50: percentile(lat, 50), P99: percentile(lat, 99)}
}

// percentile is the nearest-rank percentile p (0 < p <= 100) of sorted: the smallest
// value with at least p% of the values at or below it. 0 for no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
