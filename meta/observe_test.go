package meta

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestOnCommit runs concurrent Updates, some failing, and checks that OnCommit hears
// of every commit with the number of Updates it made durable.
func TestOnCommit(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		commits int
		durable int
		slowest time.Duration
	)
	path := filepath.Join(t.TempDir(), "meta.db")
	s, err := Open(t.Context(), path, Options{OnCommit: func(d time.Duration, n int) {
		mu.Lock()
		defer mu.Unlock()
		commits++
		durable += n
		slowest = max(slowest, d)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const ok, failing = 40, 10
	boom := errors.New("boom")
	var wg sync.WaitGroup
	for i := range ok + failing {
		wg.Go(func() {
			err := s.Update(t.Context(), func(tx *Tx) error {
				if i >= ok {
					return boom
				}
				return tx.Create(&Object{ID: "obj-" + string(rune('A'+i)), Type: 2, State: 1, Owner: "o"})
			})
			if (err != nil) != (i >= ok) {
				t.Errorf("update %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if durable != ok || commits < 1 || commits > ok+failing || slowest <= 0 {
		t.Errorf("OnCommit heard %d commits of %d updates (slowest %v); want %d updates", commits, durable, slowest, ok)
	}
}

func TestSchemaVersion(t *testing.T) {
	t.Parallel()
	_, path := openTest(t)
	have, want, err := SchemaVersion(t.Context(), path)
	if err != nil || have != want || want < 1 {
		t.Errorf("fresh store: have %d, want %d, err %v", have, want, err)
	}
	empty := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if have, _, err := SchemaVersion(t.Context(), empty); err != nil || have != 0 {
		t.Errorf("empty file: have %d, err %v; want 0, nil", have, err)
	}
	missing := filepath.Join(t.TempDir(), "missing.db")
	if _, _, err := SchemaVersion(t.Context(), missing); err == nil {
		t.Error("missing file: no error")
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("SchemaVersion created the missing file")
	}
	garbage := filepath.Join(t.TempDir(), "garbage.db")
	if err := os.WriteFile(garbage, []byte("this is not an SQLite database, not at all, no"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := SchemaVersion(t.Context(), garbage); err == nil {
		t.Error("garbage file: no error")
	}
}
