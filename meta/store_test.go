package meta

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func exists(t *testing.T, s *Store, id string) bool {
	t.Helper()
	var ok bool
	mustView(t, s, func(tx *Tx) error {
		_, err := tx.Get(id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		ok = err == nil
		return err
	})
	return ok
}

func TestUpdateRollback(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	tests := []struct {
		name      string
		fail      func() error // returns the error fn returns, or panics
		wantErr   error
		wantPanic any
	}{
		{name: "error", fail: func() error { return errBoom }, wantErr: errBoom},
		{name: "wrapped sentinel", fail: func() error { return fmt.Errorf("decide: %w", ErrConflict) }, wantErr: ErrConflict},
		{name: "panic", fail: func() error { panic("kaboom") }, wantPanic: "kaboom"},
		{name: "panic with error", fail: func() error { panic(errBoom) }, wantPanic: errBoom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _ := openTest(t)
			var err error
			gotPanic := func() (p any) {
				defer func() { p = recover() }()
				err = s.Update(t.Context(), func(tx *Tx) error {
					if err := tx.Create(&Object{ID: "x"}); err != nil {
						return err
					}
					if err := tx.Grant("x", "alice"); err != nil {
						return err
					}
					return tc.fail()
				})
				return nil
			}()
			if gotPanic != tc.wantPanic {
				t.Errorf("panic = %v, want %v", gotPanic, tc.wantPanic)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if exists(t, s, "x") {
				t.Error("rolled back object is visible")
			}
			// The store keeps working, and the ID is free again.
			create(t, s, &Object{ID: "x"})
			if n := count(t, s); n != 1 {
				t.Errorf("Count = %d, want 1", n)
			}
		})
	}
}

// TestBatchIsolation drives one batch by hand so that every kind of function
// is known to share the transaction.
func TestBatchIsolation(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	errBoom := errors.New("boom")
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	var ranCancelled atomic.Bool
	mk := func(id string, ctx context.Context, then func() error) *request {
		return &request{ctx: ctx, done: make(chan outcome, 1), fn: func(tx *Tx) error {
			if ctx == cancelled {
				ranCancelled.Store(true)
			}
			if err := tx.Create(&Object{ID: id}); err != nil {
				return err
			}
			return then()
		}}
	}
	ok := func() error { return nil }
	tests := []struct {
		req       *request
		id        string
		wantErr   error
		wantPanic bool
		stored    bool
	}{
		{req: mk("a", t.Context(), ok), id: "a", stored: true},
		{req: mk("b", t.Context(), func() error { return errBoom }), id: "b", wantErr: errBoom},
		{req: mk("c", cancelled, ok), id: "c", wantErr: context.Canceled},
		{req: mk("d", t.Context(), func() error { panic("d") }), id: "d", wantPanic: true},
		{req: mk("a", t.Context(), ok), id: "a", wantErr: ErrExists, stored: true},
		{req: mk("e", t.Context(), ok), id: "e", stored: true},
	}
	var batch []*request
	for _, tc := range tests {
		batch = append(batch, tc.req)
	}
	if left := s.runBatch(batch); len(left) != 0 {
		t.Fatalf("runBatch left %d requests", len(left))
	}
	for _, tc := range tests {
		out := <-tc.req.done
		if out.panicked != tc.wantPanic {
			t.Errorf("%s: panicked = %v, want %v", tc.id, out.panicked, tc.wantPanic)
		}
		if (tc.wantErr == nil) != (out.err == nil) || !errors.Is(out.err, tc.wantErr) {
			t.Errorf("%s: err = %v, want %v", tc.id, out.err, tc.wantErr)
		}
		if got := exists(t, s, tc.id); got != tc.stored {
			t.Errorf("%s: stored = %v, want %v", tc.id, got, tc.stored)
		}
	}
	if ranCancelled.Load() {
		t.Error("fn with a cancelled context ran")
	}
}

func TestGroupCommit(t *testing.T) {
	t.Parallel()
	const goroutines, perG = 64, 50
	s, path := openTest(t)
	var wg sync.WaitGroup
	var failed atomic.Int64
	errFail := errors.New("planned failure")
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				n := g*perG + i
				fail := n%10 == 0 // some functions fail inside busy batches
				err := s.Update(t.Context(), func(tx *Tx) error {
					if err := tx.Create(&Object{ID: fmt.Sprintf("k%d", n), Owner: "o", Wrapped: make([]byte, 40),
						Attrs: []Attr{{Name: "Name", Value: []byte(fmt.Sprint(n))}}}); err != nil {
						return err
					}
					if fail {
						return errFail
					}
					return nil
				})
				switch {
				case fail && errors.Is(err, errFail):
					failed.Add(1)
				case err != nil:
					t.Errorf("Update %d: %v", n, err)
				}
			}
		})
	}
	wg.Wait()
	want := goroutines*perG - int(failed.Load())
	if failed.Load() != goroutines*perG/10 {
		t.Errorf("failed = %d, want %d", failed.Load(), goroutines*perG/10)
	}
	batches, calls := s.batches.Load(), s.calls.Load()
	t.Logf("%d functions in %d batches", calls, batches)
	if batches >= calls {
		t.Errorf("no batching: %d functions in %d batches", calls, batches)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, path)
	if n := count(t, s); n != want {
		t.Errorf("Count after reopen = %d, want %d", n, want)
	}
	mustView(t, s, func(tx *Tx) error {
		for _, id := range []string{"k0", "k10", "k3190"} {
			if _, err := tx.Get(id); !errors.Is(err, ErrNotFound) {
				t.Errorf("failed fn's object %s: err = %v, want ErrNotFound", id, err)
			}
		}
		_, err := tx.Get("k3199")
		return err
	})
}

func TestViewSeesCommittedOnly(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	create(t, s, &Object{ID: "base"})

	// Inside an Update, a View does not see the uncommitted object.
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.Create(&Object{ID: "new"}); err != nil {
			return err
		}
		if _, err := tx.Get("new"); err != nil {
			t.Errorf("Update does not see its own write: %v", err)
		}
		if exists(t, s, "new") {
			t.Error("View sees an uncommitted object")
		}
		return nil
	})
	if !exists(t, s, "new") {
		t.Error("View does not see a committed object")
	}

	// A View keeps its snapshot while an Update commits.
	read, committed := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(read)
		mustView(t, s, func(tx *Tx) error {
			before, err := tx.Count()
			if err != nil {
				return err
			}
			read <- struct{}{}
			<-committed
			after, err := tx.Count()
			if err != nil {
				return err
			}
			if before != after {
				t.Errorf("snapshot moved: Count %d then %d", before, after)
			}
			return nil
		})
	})
	<-read
	create(t, s, &Object{ID: "during"})
	close(committed)
	wg.Wait()
	if n := count(t, s); n != 3 {
		t.Errorf("Count = %d, want 3", n)
	}
}

func TestConcurrentViewDuringUpdate(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	const writers, readers, perG = 4, 4, 30
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perG {
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := s.Update(t.Context(), func(tx *Tx) error {
					if err := tx.Create(&Object{ID: id, Type: 2, Owner: "o"}); err != nil {
						return err
					}
					return tx.Grant(id, "reader")
				}); err != nil {
					t.Errorf("Update: %v", err)
					return
				}
			}
		})
	}
	for range readers {
		wg.Go(func() {
			last := 0
			for range perG {
				err := s.View(t.Context(), func(tx *Tx) error {
					n, err := tx.Count()
					if err != nil {
						return err
					}
					if n < last {
						t.Errorf("Count went back from %d to %d", last, n)
					}
					last = n
					ids, err := tx.Locate(Filter{Type: 2, Owner: "reader"})
					if err != nil {
						return err
					}
					if len(ids) != n {
						t.Errorf("Locate found %d of %d objects in one snapshot", len(ids), n)
					}
					_, err = tx.List("", 10)
					return err
				})
				if err != nil {
					t.Errorf("View: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := count(t, s); n != writers*perG {
		t.Errorf("Count = %d, want %d", n, writers*perG)
	}
}

func TestUpdateContext(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)

	// Cancelled before the call.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var ran atomic.Bool
	if err := s.Update(ctx, func(*Tx) error { ran.Store(true); return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}

	// Cancelled while queued behind a busy writer.
	release, started := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		mustUpdate(t, s, func(tx *Tx) error {
			close(started)
			<-release
			return tx.Create(&Object{ID: "first"})
		})
	})
	<-started
	ctx, cancel = context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		errc <- s.Update(ctx, func(tx *Tx) error {
			ran.Store(true)
			return tx.Create(&Object{ID: "second"})
		})
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("queued Update err = %v, want context.Canceled", err)
	}
	close(release)
	wg.Wait()
	create(t, s, &Object{ID: "third"}) // the writer has moved past the cancelled request
	if ran.Load() {
		t.Error("a cancelled Update ran its function")
	}
	if exists(t, s, "second") || !exists(t, s, "first") {
		t.Error("wrong objects stored")
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	noop := func(*Tx) error { return nil }
	if err := s.Update(t.Context(), noop); !errors.Is(err, ErrClosed) {
		t.Errorf("Update after Close: %v, want ErrClosed", err)
	}
	if err := s.View(t.Context(), noop); !errors.Is(err, ErrClosed) {
		t.Errorf("View after Close: %v, want ErrClosed", err)
	}
}

// TestFull fakes a full disk with PRAGMA max_page_count on the writer
// connection: SQLite then fails writes with SQLITE_FULL exactly as on ENOSPC.
func TestFull(t *testing.T) {
	t.Parallel()
	s, path := openTest(t)
	create(t, s, &Object{ID: "before"})
	setMaxPages := func(extra int) {
		mustUpdate(t, s, func(tx *Tx) error {
			var pages int
			if err := tx.q.QueryRowContext(tx.ctx, "PRAGMA page_count").Scan(&pages); err != nil {
				return err
			}
			_, err := tx.q.ExecContext(tx.ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages+extra))
			return err
		})
	}
	setMaxPages(4)
	var (
		err     error
		created int
	)
	for i := range 100 {
		err = s.Update(t.Context(), func(tx *Tx) error {
			return tx.Create(&Object{ID: fmt.Sprintf("fill%d", i), Wrapped: make([]byte, 3000)})
		})
		if err != nil {
			break
		}
		created++
	}
	if !errors.Is(err, ErrFull) {
		t.Fatalf("err = %v, want ErrFull", err)
	}
	t.Logf("full after %d objects: %v", created, err)
	if !strings.Contains(err.Error(), "meta: ") || !strings.Contains(err.Error(), "create object") {
		t.Errorf("error lacks context: %q", err)
	}
	// A function that swallows the error still fails: SQLite may have undone
	// part of its work.
	err = s.Update(t.Context(), func(tx *Tx) error {
		_ = tx.Create(&Object{ID: "swallowed", Wrapped: make([]byte, 20000)})
		return nil
	})
	if !errors.Is(err, ErrFull) {
		t.Errorf("swallowed error: err = %v, want ErrFull", err)
	}
	t.Logf("swallowed: %v", err)
	if n := count(t, s); n != created+1 {
		t.Errorf("Count while full = %d, want %d", n, created+1)
	}

	setMaxPages(1 << 20) // space returns
	create(t, s, &Object{ID: "after", Wrapped: make([]byte, 20000)})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, path)
	if n := count(t, s); n != created+2 {
		t.Errorf("Count after reopen = %d, want %d", n, created+2)
	}
}

// TestBatchAbort simulates SQLite ending the shared transaction under one
// function (as it may on SQLITE_FULL or an I/O error).
func TestBatchAbort(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	errKilled := errors.New("transaction killed")
	mk := func(fn func(*Tx) error) *request {
		return &request{ctx: t.Context(), fn: fn, done: make(chan outcome, 1)}
	}
	before := mk(func(tx *Tx) error { return tx.Create(&Object{ID: "before"}) })
	killer := mk(func(tx *Tx) error {
		if _, err := tx.q.ExecContext(tx.ctx, "ROLLBACK"); err != nil {
			return err
		}
		return errKilled
	})
	after := mk(func(tx *Tx) error { return tx.Create(&Object{ID: "after"}) })

	left := s.runBatch([]*request{before, killer, after})
	if len(left) != 1 || left[0] != after {
		t.Fatalf("runBatch left %d requests, want only the one not yet run", len(left))
	}
	if out := <-before.done; !errors.Is(out.err, errKilled) {
		t.Errorf("earlier fn: err = %v, want the cause", out.err)
	}
	if out := <-killer.done; !errors.Is(out.err, errKilled) {
		t.Errorf("failing fn: err = %v, want its own error", out.err)
	}
	if left := s.runBatch(left); len(left) != 0 {
		t.Fatalf("second runBatch left %d requests", len(left))
	}
	if out := <-after.done; out.err != nil {
		t.Errorf("later fn: err = %v, want nil", out.err)
	}
	if exists(t, s, "before") || !exists(t, s, "after") {
		t.Error("wrong objects stored")
	}
}
