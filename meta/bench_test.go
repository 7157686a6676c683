package meta

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCreate measures durable creates per second from 8 concurrent
// callers, the shape of a busy KMIP server: each Create is acknowledged only
// after its batch's fsync. Target: 1,500 creates/s on 2 cores.
func BenchmarkCreate(b *testing.B) {
	s, err := Open(b.Context(), filepath.Join(b.TempDir(), "meta.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var next atomic.Int64
	now := time.Now()
	b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0))) // 8 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("bench-%d", next.Add(1))
			err := s.Update(b.Context(), func(tx *Tx) error {
				return tx.Create(&Object{
					ID: id, Type: 2, State: 1, Owner: "CN=bench", Algorithm: 3, Length: 256,
					UsageMask: 12, Format: 1, Wrapped: make([]byte, 40), KEK: "master",
					Created: now, Updated: now,
					Attrs: []Attr{
						{Name: "Name", Value: []byte(id)},
						{Name: "Object Group", Value: []byte("bench")},
					},
				})
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
	b.ReportMetric(float64(s.calls.Load())/float64(s.batches.Load()), "fns/batch")
}
