package meta

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// hmacChainer is the chain MAC in software: HMAC-SHA256 as the token computes
// it, so meta's tests need no HSM.
type hmacChainer struct{ key []byte }

func (c hmacChainer) MAC(prev, record []byte) ([]byte, error) {
	m := hmac.New(sha256.New, c.key)
	m.Write(prev)
	m.Write(record)
	return m.Sum(nil), nil
}

var testChainer = hmacChainer{key: []byte("0123456789abcdef0123456789abcdef")}

// openAudit opens a fresh store with the test chainer.
func openAudit(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "meta.db"), Options{Audit: testChainer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func rec(i int, at time.Time) AuditRecord {
	return AuditRecord{
		Time: at, Kind: AuditKMIP, Actor: fmt.Sprintf("client-%d", i), Fingerprint: "ab12",
		RemoteAddr: "127.0.0.1:40000", Version: "1.2", Operation: "Get",
		ObjectIDs: []string{fmt.Sprintf("id-%d", i)}, Status: "Success",
	}
}

// appendN appends n records, one minute apart from t0, i from first.
func appendN(t *testing.T, s *Store, first, n int) {
	t.Helper()
	mustUpdate(t, s, func(tx *Tx) error {
		for i := first; i < first+n; i++ {
			if err := tx.AppendAudit(rec(i, t0.Add(time.Duration(i)*time.Minute))); err != nil {
				return err
			}
		}
		return nil
	})
}

func allAudit(t *testing.T, s *Store) []AuditRecord {
	t.Helper()
	var out []AuditRecord
	mustView(t, s, func(tx *Tx) error {
		after := int64(0)
		for {
			page, err := tx.AuditRange(after, 3)
			if err != nil {
				return err
			}
			if len(page) == 0 {
				return nil
			}
			out = append(out, page...)
			after = page[len(page)-1].Seq
		}
	})
	return out
}

func verify(t *testing.T, s *Store) AuditVerdict {
	t.Helper()
	v, err := s.VerifyAudit(t.Context())
	if err != nil {
		t.Fatalf("VerifyAudit: %v", err)
	}
	return v
}

func TestAuditChain(t *testing.T) {
	t.Parallel()
	s := openAudit(t)
	appendN(t, s, 1, 4)
	appendN(t, s, 5, 1)
	got := allAudit(t, s)
	if len(got) != 5 {
		t.Fatalf("%d records, want 5", len(got))
	}
	prev := make([]byte, 32)
	for i, r := range got {
		if r.Seq != int64(i+1) {
			t.Errorf("record %d has seq %d", i, r.Seq)
		}
		want := rec(i+1, t0.Add(time.Duration(i+1)*time.Minute))
		want.Seq, want.Time, want.MAC = r.Seq, want.Time.UTC(), r.MAC
		if r.Time.Location() != time.UTC || !r.Time.Equal(want.Time) {
			t.Errorf("record %d time %v, want %v in UTC", r.Seq, r.Time, want.Time)
		}
		r.Time = want.Time
		if fmt.Sprint(r) != fmt.Sprint(want) {
			t.Errorf("record %d = %+v, want %+v", r.Seq, r, want)
		}
		m, _ := testChainer.MAC(prev, want.canonical())
		if !bytes.Equal(m, r.MAC) {
			t.Errorf("record %d MAC is not HMAC(previous MAC, canonical record)", r.Seq)
		}
		prev = r.MAC
	}
	if v := verify(t, s); !v.OK || v.Count != 5 || v.FirstSeq != 1 || v.LastSeq != 5 {
		t.Errorf("verdict %+v, want OK with 5 records 1..5", v)
	}
}

func TestAuditCanonicalIsInjective(t *testing.T) {
	t.Parallel()
	base := rec(1, t0)
	base.Seq = 7
	variants := map[string]func(*AuditRecord){
		"seq":          func(r *AuditRecord) { r.Seq++ },
		"time":         func(r *AuditRecord) { r.Time = r.Time.Add(time.Nanosecond) },
		"kind":         func(r *AuditRecord) { r.Kind = AuditCLI },
		"field border": func(r *AuditRecord) { r.Actor, r.Fingerprint = r.Actor+"a", "b12" },
		"ids split":    func(r *AuditRecord) { r.ObjectIDs = []string{"id", "-1"} },
		"ids empty":    func(r *AuditRecord) { r.ObjectIDs = []string{} },
		"ids nil":      func(r *AuditRecord) { r.ObjectIDs = nil },
		"message":      func(r *AuditRecord) { r.Message = "x" },
	}
	seen := map[string]string{string(base.canonical()): "base"}
	for name, change := range variants {
		r := base
		r.ObjectIDs = slices.Clone(base.ObjectIDs)
		change(&r)
		c := string(r.canonical())
		if other, dup := seen[c]; dup && !(name == "ids nil" && other == "ids empty" || name == "ids empty" && other == "ids nil") {
			t.Errorf("%s encodes like %s", name, other)
		}
		seen[c] = name
	}
}

func TestAuditDisabledAndInvalid(t *testing.T) {
	t.Parallel()
	plain, _ := openTest(t)
	err := plain.Update(t.Context(), func(tx *Tx) error { return tx.AppendAudit(rec(1, t0)) })
	if !errors.Is(err, ErrAuditDisabled) {
		t.Errorf("AppendAudit without a Chainer: %v, want ErrAuditDisabled", err)
	}
	if _, err := plain.VerifyAudit(t.Context()); !errors.Is(err, ErrAuditDisabled) {
		t.Errorf("VerifyAudit without a Chainer: %v", err)
	}
	if _, err := OpenAuditLog(plain, AuditLogOptions{}); !errors.Is(err, ErrAuditDisabled) {
		t.Errorf("OpenAuditLog without a Chainer: %v", err)
	}

	s := openAudit(t)
	bad := rec(1, t0)
	bad.Kind = "shell"
	if err := s.Update(t.Context(), func(tx *Tx) error { return tx.AppendAudit(bad) }); !errors.Is(err, ErrInvalid) {
		t.Errorf("AppendAudit of kind %q: %v, want ErrInvalid", bad.Kind, err)
	}
	err = s.View(t.Context(), func(tx *Tx) error { return tx.AppendAudit(rec(1, t0)) })
	if !errors.Is(err, ErrReadOnly) {
		t.Errorf("AppendAudit in View: %v, want ErrReadOnly", err)
	}
}

// failingChainer fails or returns a short MAC, like a token that went away.
type failingChainer struct{ short bool }

func (f failingChainer) MAC(prev, record []byte) ([]byte, error) {
	if f.short {
		return []byte{1, 2, 3}, nil
	}
	return nil, errors.New("token gone")
}

func TestAuditChainerFailureRollsBack(t *testing.T) {
	t.Parallel()
	for _, f := range []failingChainer{{}, {short: true}} {
		s, err := Open(t.Context(), filepath.Join(t.TempDir(), "meta.db"), Options{Audit: f})
		if err != nil {
			t.Fatal(err)
		}
		err = s.Update(t.Context(), func(tx *Tx) error {
			if err := tx.Create(&Object{ID: "k", Type: 2, State: 1}); err != nil {
				return err
			}
			return tx.AppendAudit(rec(1, t0))
		})
		if err == nil {
			t.Errorf("%+v: AppendAudit succeeded", f)
		}
		if n := count(t, s); n != 0 {
			t.Errorf("%+v: the failed Update left %d objects", f, n)
		}
		s.Close()
	}
}

// tamper runs raw SQL against the trail, as an attacker with the file would.
func tamper(t *testing.T, s *Store, stmts ...string) {
	t.Helper()
	mustUpdate(t, s, func(tx *Tx) error {
		for _, q := range stmts {
			if _, err := tx.q.ExecContext(tx.ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	})
}

// content is every column but seq and mac.
const content = `time_ns, kind, actor, fingerprint, remote_addr, kmip_version, operation, object_ids, status, reason, message`

func TestAuditVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	swap := func(a, b int, cols string) []string {
		return []string{
			fmt.Sprintf(`CREATE TEMP TABLE x AS SELECT * FROM audit WHERE seq IN (%d, %d)`, a, b),
			fmt.Sprintf(`UPDATE audit SET (%[1]s) = (SELECT %[1]s FROM x WHERE x.seq = %[3]d) WHERE seq = %[2]d`, cols, a, b),
			fmt.Sprintf(`UPDATE audit SET (%[1]s) = (SELECT %[1]s FROM x WHERE x.seq = %[2]d) WHERE seq = %[3]d`, cols, a, b),
			`DROP TABLE x`,
		}
	}
	// shift renumbers records from seq on by d (negative first, so the
	// primary key never collides).
	shift := func(from, d int) []string {
		return []string{
			fmt.Sprintf(`UPDATE audit SET seq = -(seq + %d) WHERE seq >= %d`, d, from),
			`UPDATE audit SET seq = -seq WHERE seq < 0`,
		}
	}
	forged := fmt.Sprintf(`INSERT INTO audit (seq, %s, mac) VALUES (%%d, 0, 'kmip', 'mallory', '', '', '1.2', 'Get', '["k"]', 'Success', '', '', randomblob(32))`, content)
	tests := []struct {
		name    string
		prune   bool // prune the first 3 records before tampering
		tamper  []string
		bad     int64
		problem AuditProblem
	}{
		{name: "modified operation", tamper: []string{`UPDATE audit SET operation = 'Destroy' WHERE seq = 5`}, bad: 5, problem: AuditModified},
		{name: "modified ids", tamper: []string{`UPDATE audit SET object_ids = '["other"]' WHERE seq = 1`}, bad: 1, problem: AuditModified},
		{name: "modified with MAC", tamper: []string{`UPDATE audit SET actor = 'x', mac = randomblob(32) WHERE seq = 4`}, bad: 4, problem: AuditModified},
		{name: "newest modified", tamper: []string{`UPDATE audit SET status = 'Success!' WHERE seq = 10`}, bad: 10, problem: AuditModified},
		{name: "appended forgery", tamper: []string{fmt.Sprintf(forged, 11)}, bad: 11, problem: AuditModified},
		{name: "deleted middle", tamper: []string{`DELETE FROM audit WHERE seq = 6`}, bad: 6, problem: AuditDeleted},
		{name: "deleted two", tamper: []string{`DELETE FROM audit WHERE seq IN (3, 4)`}, bad: 3, problem: AuditDeleted},
		{name: "deleted first", tamper: []string{`DELETE FROM audit WHERE seq = 1`}, bad: 1, problem: AuditDeleted},
		{name: "deleted and renumbered", tamper: append([]string{`DELETE FROM audit WHERE seq = 6`}, shift(7, -1)...), bad: 6, problem: AuditDeleted},
		{name: "inserted and renumbered", tamper: append(shift(4, 1), fmt.Sprintf(forged, 4)), bad: 4, problem: AuditInserted},
		{name: "two inserted", tamper: append(shift(4, 2), fmt.Sprintf(forged, 4), fmt.Sprintf(forged, 5)), bad: 4, problem: AuditInserted},
		{name: "rows swapped", tamper: swap(3, 7, content+", mac"), bad: 3, problem: AuditReordered},
		{name: "adjacent rows swapped", tamper: swap(5, 6, content+", mac"), bad: 5, problem: AuditReordered},
		{name: "contents swapped", tamper: swap(2, 8, content), bad: 2, problem: AuditReordered},
		{name: "after prune: modified", prune: true, tamper: []string{`UPDATE audit SET operation = 'Destroy' WHERE seq = 4`}, bad: 4, problem: AuditModified},
		{name: "after prune: head deleted", prune: true, tamper: []string{`DELETE FROM audit WHERE seq = 4`}, bad: 4, problem: AuditDeleted},
		{name: "after prune: anchor moved", prune: true, tamper: []string{
			`DELETE FROM audit WHERE seq = 4`,
			`UPDATE audit_anchor SET seq = 4, mac = (SELECT mac FROM audit WHERE seq = 5)`}, bad: 4, problem: AuditAnchorForged},
		{name: "after prune: record restored before anchor", prune: true, tamper: []string{fmt.Sprintf(forged, 2)}, bad: 2, problem: AuditInserted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openAudit(t)
			appendN(t, s, 1, 10)
			if tc.prune {
				mustUpdate(t, s, func(tx *Tx) error {
					_, err := tx.PruneAudit(t0.Add(4 * time.Minute))
					return err
				})
			}
			if v := verify(t, s); !v.OK {
				t.Fatalf("before tampering: %+v", v)
			}
			tamper(t, s, tc.tamper...)
			v := verify(t, s)
			if v.OK || v.BadSeq != tc.bad || v.Problem != tc.problem {
				t.Errorf("verdict %+v, want seq %d %s", v, tc.bad, tc.problem)
			}
			if v.Detail == "" {
				t.Error("verdict has no detail")
			}
		})
	}
}

func TestAuditPrune(t *testing.T) {
	t.Parallel()
	s := openAudit(t)
	appendN(t, s, 1, 10) // times t0+1m .. t0+10m
	prune := func(before time.Time) int64 {
		t.Helper()
		var n int64
		mustUpdate(t, s, func(tx *Tx) (err error) {
			n, err = tx.PruneAudit(before)
			return err
		})
		return n
	}
	anchor := func() AuditAnchor {
		t.Helper()
		var a AuditAnchor
		mustView(t, s, func(tx *Tx) (err error) {
			a, err = tx.AuditAnchor()
			return err
		})
		return a
	}
	if a := anchor(); a.Seq != 0 || !bytes.Equal(a.MAC, make([]byte, 32)) || a.Tag != nil {
		t.Fatalf("genesis anchor = %+v", a)
	}
	before := allAudit(t, s)

	if n := prune(t0.Add(5 * time.Minute)); n != 4 {
		t.Fatalf("pruned %d records before t0+5m, want 4 (seq 1-4)", n)
	}
	a := anchor()
	if a.Seq != 4 || !bytes.Equal(a.MAC, before[3].MAC) || !a.Time.Equal(before[3].Time) || len(a.Tag) != 32 {
		t.Fatalf("anchor after prune = %+v, want record 4's seq, MAC and time", a)
	}
	if got := allAudit(t, s); len(got) != 6 || got[0].Seq != 5 {
		t.Fatalf("after prune: %d records from %d", len(got), got[0].Seq)
	}
	if n := prune(t0.Add(5 * time.Minute)); n != 0 {
		t.Errorf("pruning again deleted %d", n)
	}
	if v := verify(t, s); !v.OK || v.Anchor != 4 || v.Count != 6 || v.FirstSeq != 5 {
		t.Errorf("verdict after prune %+v", v)
	}

	// Everything pruned: the next record still continues the chain.
	if n := prune(t0.Add(time.Hour)); n != 6 {
		t.Fatalf("pruned %d, want the remaining 6", n)
	}
	appendN(t, s, 11, 2)
	got := allAudit(t, s)
	if len(got) != 2 || got[0].Seq != 11 || got[1].Seq != 12 {
		t.Fatalf("after pruning everything, new records got seqs %v", got)
	}
	if v := verify(t, s); !v.OK || v.Anchor != 10 || v.Count != 2 {
		t.Errorf("verdict %+v", v)
	}
}

func TestAuditPruneKeepsRecordsAfterAClockStep(t *testing.T) {
	t.Parallel()
	s := openAudit(t)
	mins := []int{1, 2, 10, 3, 4}
	mustUpdate(t, s, func(tx *Tx) error {
		for i, m := range mins {
			if err := tx.AppendAudit(rec(i, t0.Add(time.Duration(m)*time.Minute))); err != nil {
				return err
			}
		}
		return nil
	})
	var n int64
	mustUpdate(t, s, func(tx *Tx) (err error) {
		n, err = tx.PruneAudit(t0.Add(5 * time.Minute))
		return err
	})
	if n != 2 {
		t.Errorf("pruned %d, want 2: record 3 (t0+10m) and those after it stay", n)
	}
	var since int64
	mustView(t, s, func(tx *Tx) (err error) {
		since, err = tx.AuditSince(t0.Add(4 * time.Minute))
		return err
	})
	if since != 2 {
		t.Errorf("AuditSince(t0+4m) = %d, want 2", since)
	}
}

func TestAuditLogBatches(t *testing.T) {
	t.Parallel()
	s := openAudit(t)
	l, err := OpenAuditLog(s, AuditLogOptions{Interval: time.Hour, MaxBatch: 100})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 250 {
		if err := l.Enqueue(t.Context(), rec(i, time.Time{})); err != nil {
			t.Fatal(err)
		}
	}
	// Two full batches commit without waiting for the interval.
	deadline := time.Now().Add(10 * time.Second)
	for len(allAudit(t, s)) < 200 {
		if time.Now().After(deadline) {
			t.Fatalf("full batches not committed: %d records", len(allAudit(t, s)))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := l.Append(t.Context(), rec(1000, time.Time{})); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := l.Enqueue(t.Context(), rec(1, t0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close: %v, want ErrClosed", err)
	}
	got := allAudit(t, s)
	if len(got) != 251 {
		t.Fatalf("%d records after Close, want 251", len(got))
	}
	if v := verify(t, s); !v.OK || v.Count != 251 {
		t.Errorf("verdict %+v", v)
	}
}

func TestAuditLogInterval(t *testing.T) {
	t.Parallel()
	s := openAudit(t)
	l, err := OpenAuditLog(s, AuditLogOptions{Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Enqueue(t.Context(), rec(1, time.Time{})); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(allAudit(t, s)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a queued record was not committed after the interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAuditLogPushesBackWhenFull(t *testing.T) {
	t.Parallel()
	s := openAudit(t)
	l, err := OpenAuditLog(s, AuditLogOptions{Interval: time.Millisecond, MaxBatch: 1, Queue: 2, MaxWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Hold the store's writer so that no batch can commit.
	held, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		s.Update(t.Context(), func(*Tx) error {
			close(held)
			<-release
			return nil
		})
	})
	<-held
	var busy error
	for i := range 10 {
		if err := l.Enqueue(t.Context(), rec(i, time.Time{})); err != nil {
			busy = err
			break
		}
	}
	if !errors.Is(busy, ErrBusy) {
		t.Errorf("Enqueue on a full queue: %v, want ErrBusy after MaxWait", busy)
	}
	close(release)
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if v := verify(t, s); !v.OK || v.Count < 3 {
		t.Errorf("verdict %+v, want the queued records committed", v)
	}
}

func TestAuditConcurrentWriters(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "meta.db")
	s := reopenAudit(t, path)
	other := reopenAudit(t, path) // a second process, e.g. the CLI next to serve
	l, err := OpenAuditLog(s, AuditLogOptions{Interval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for i := range 40 {
				r := rec(g*100+i, time.Time{})
				var err error
				switch g % 3 {
				case 0:
					err = l.Append(t.Context(), r)
				case 1:
					err = l.Enqueue(t.Context(), r)
				default:
					err = other.Update(t.Context(), func(tx *Tx) error { return tx.AppendAudit(r) })
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if v := verify(t, s); !v.OK || v.Count != 240 {
		t.Errorf("verdict %+v, want 240 chained records", v)
	}
}

func reopenAudit(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, Options{Audit: testChainer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
