package meta

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestQuota fills a store opened with MaxSize until writes fail, checks they fail
// with ErrFull and commit nothing, that reads go on, that a reopen with the same
// quota stays full and one with a larger quota accepts writes again.
func TestQuota(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "meta.db")
	open := func(maxSize int64) *Store {
		t.Helper()
		s, err := Open(t.Context(), path, Options{MaxSize: maxSize})
		if err != nil {
			t.Fatalf("Open(MaxSize %d): %v", maxSize, err)
		}
		return s
	}
	const quota = 256 << 10
	s := open(quota)
	var created int
	var err error
	for i := range 1000 {
		err = s.Update(t.Context(), func(tx *Tx) error {
			return tx.Create(&Object{ID: fmt.Sprintf("k%d", i), Wrapped: make([]byte, 2000)})
		})
		if err != nil {
			break
		}
		created++
	}
	if !errors.Is(err, ErrFull) {
		t.Fatalf("after %d objects: err = %v, want ErrFull", created, err)
	}
	if created < 10 {
		t.Fatalf("only %d objects fit in %d bytes", created, quota)
	}
	if n := count(t, s); n != created {
		t.Errorf("Count while full = %d, want %d (the failed write must leave nothing)", n, created)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		maxSize int64
		wantErr error
	}{
		{"same quota", quota, ErrFull},
		{"raised quota", 4 * quota, nil},
		{"unlimited", 0, nil},
	}
	for i, tt := range tests {
		s := open(tt.maxSize)
		err := s.Update(t.Context(), func(tx *Tx) error {
			return tx.Create(&Object{ID: fmt.Sprintf("after%d", i), Wrapped: make([]byte, 2000)})
		})
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.wantErr)
		}
		if err == nil {
			created++
		}
		if n := count(t, s); n != created {
			t.Errorf("%s: Count = %d, want %d", tt.name, n, created)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var ok string
	s = open(0)
	defer s.Close()
	if err := s.wconn.QueryRowContext(t.Context(), "PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Errorf("integrity_check = %q, %v", ok, err)
	}
}

// TestQuotaKeepsRoomForAudit: when objects fill the quota, the audit trail
// can still record (the failures among others): the object insert fails
// first, before anything commits.
func TestQuotaKeepsRoomForAudit(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "meta.db"), Options{Audit: testChainer, MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	name := strings.Repeat("n", 500)
	var i int
	for ; ; i++ {
		if i == 10000 {
			t.Fatal("10000 objects fit in 1 MiB")
		}
		err := s.Update(t.Context(), func(tx *Tx) error {
			return tx.Create(&Object{ID: fmt.Sprint("o", i), Attrs: []Attr{{Name: "Name", Value: []byte(name)}}})
		})
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for j := range 100 {
		if err := s.Update(t.Context(), func(tx *Tx) error {
			return tx.AppendAudit(AuditRecord{Kind: AuditKMIP, Operation: "Create", Status: "OperationFailed", Message: fmt.Sprint("full ", j)})
		}); err != nil {
			t.Fatalf("audit record %d after the store filled with %d objects: %v", j, i, err)
		}
	}
}
