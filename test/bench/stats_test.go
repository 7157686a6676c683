package bench

import (
	"testing"
	"time"
)

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func seq(n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value p50", ms(7), 50, 7 * time.Millisecond},
		{"one value p99", ms(7), 99, 7 * time.Millisecond},
		{"two values p50 is the lower", ms(1, 2), 50, 1 * time.Millisecond},
		{"two values p99 is the upper", ms(1, 2), 99, 2 * time.Millisecond},
		{"1..100 p50", seq(100), 50, 50 * time.Millisecond},
		{"1..100 p99", seq(100), 99, 99 * time.Millisecond},
		{"1..100 p100", seq(100), 100, 100 * time.Millisecond},
		{"1..10 p99 rounds up to the max", seq(10), 99, 10 * time.Millisecond},
		{"1..1000 p99", seq(1000), 99, 990 * time.Millisecond},
		{"tiny p never below the min", seq(10), 0.001, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name     string
		lat      []time.Duration
		elapsed  time.Duration
		wantRate float64
		wantP50  time.Duration
		wantP99  time.Duration
	}{
		{"unsorted input", ms(9, 1, 5, 3, 7), time.Second, 5, 5 * time.Millisecond, 9 * time.Millisecond},
		{"half a second", seq(100), 500 * time.Millisecond, 200, 50 * time.Millisecond, 99 * time.Millisecond},
		{"nothing completed", nil, time.Second, 0, 0, 0},
		{"no time elapsed", ms(1), 0, 0, time.Millisecond, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := summarize(tt.lat, tt.elapsed)
			if s.Ops != len(tt.lat) || s.Rate() != tt.wantRate || s.P50 != tt.wantP50 || s.P99 != tt.wantP99 {
				t.Errorf("summarize = %+v (rate %v), want %d ops, rate %v, p50 %v, p99 %v",
					s, s.Rate(), len(tt.lat), tt.wantRate, tt.wantP50, tt.wantP99)
			}
		})
	}
}
