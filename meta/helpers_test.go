package meta

import (
	"path/filepath"
	"testing"
)

// openTest opens a fresh store in t.TempDir and closes it at cleanup.
func openTest(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meta.db")
	return reopen(t, path), path
}

// reopen opens the store at path and closes it at cleanup.
func reopen(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func mustUpdate(t *testing.T, s *Store, fn func(*Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func mustView(t *testing.T, s *Store, fn func(*Tx) error) {
	t.Helper()
	if err := s.View(t.Context(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

func create(t *testing.T, s *Store, objs ...*Object) {
	t.Helper()
	mustUpdate(t, s, func(tx *Tx) error {
		for _, o := range objs {
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
}

func count(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	mustView(t, s, func(tx *Tx) (err error) {
		n, err = tx.Count()
		return err
	})
	return n
}
