package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// maxBatch bounds how many Update functions share one SQLite transaction, so
// one commit's latency stays bounded however deep the queue gets.
const maxBatch = 256

// Options tunes a Store. The zero value is usable.
type Options struct {
	// Logger receives lifecycle events and commit failures; nil discards.
	Logger *slog.Logger
	// BusyTimeout is how long a statement waits for a lock held by another
	// process (an operator CLI, a backup) before failing with ErrBusy.
	// Zero means 5s.
	BusyTimeout time.Duration
	// Readers is the number of read-only connections serving View.
	// Zero means 4.
	Readers int
	// OnCommit is told of every committed batch: from BEGIN to the end of
	// COMMIT (fsync included), and the number of Updates it made durable. It
	// runs on the writer goroutine, so it must be fast. nil: not called.
	OnCommit func(d time.Duration, n int)
	// MaxSize caps the database in bytes (a quota): writes that would grow
	// it further fail with ErrFull, as on a full disk. Zero means unlimited.
	MaxSize int64
	// Audit chains audit records (see Tx.AppendAudit); nil disables the
	// audit methods.
	Audit Chainer
}

// Store is the metadata database. It is safe for concurrent use.
type Store struct {
	log   *slog.Logger
	audit Chainer
	wdb   *sql.DB
	wconn *sql.Conn // the only connection that writes; owned by run
	rdb   *sql.DB

	queue   chan *request // unbuffered: a request is queued while its sender blocks
	closing chan struct{}
	stopped chan struct{}

	closeOnce sync.Once
	closeErr  error

	batches  atomic.Int64 // committed or failed batches, for tests and stats
	calls    atomic.Int64 // Update functions run
	onCommit func(d time.Duration, n int)
	room     int64 // pages objects may fill; 0: no quota (quota.go)
}

// Open opens (creating if needed) the database at path and migrates it to
// the newest schema. The file is created with mode 0600 because it holds
// wrapped key blobs.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 5 * time.Second
	}
	readers := opts.Readers
	if readers <= 0 {
		readers = 4
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open metadata store %q: %w", path, err)
	}
	// SQLite gives the -wal and -shm files the mode of the database file.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open metadata store %q: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("open metadata store %q: %w", path, err)
	}
	busyMS := strconv.FormatInt(busy.Milliseconds(), 10)

	wdb, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_busy_timeout": {busyMS},
		"_journal_mode": {"WAL"},
		"_synchronous":  {"FULL"}, // fsync the WAL on every commit: acknowledged means durable
		"_foreign_keys": {"1"},
	}))
	if err != nil {
		return nil, fmt.Errorf("open metadata store %q: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	s := &Store{
		log:     log,
		audit:   opts.Audit,
		wdb:     wdb,
		queue:   make(chan *request),
		closing: make(chan struct{}),
		stopped: make(chan struct{}),

		onCommit: opts.OnCommit,
	}
	version, err := s.openWriter(ctx, abs, opts.MaxSize)
	if err != nil {
		_ = wdb.Close()
		return nil, err
	}
	rdb, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_busy_timeout": {busyMS},
		"_query_only":   {"1"},
	}))
	if err == nil {
		rdb.SetMaxOpenConns(readers)
		rdb.SetMaxIdleConns(readers)
		if err = rdb.PingContext(ctx); err != nil {
			_ = rdb.Close()
		}
	}
	if err != nil {
		_ = s.wconn.Close()
		_ = wdb.Close()
		return nil, fmt.Errorf("open metadata store %q readers: %w", path, dbErr(err))
	}
	s.rdb = rdb
	go s.run()
	log.Info("metadata store opened", "path", abs, "schema_version", version)
	return s, nil
}

// openWriter takes the writer connection, checks WAL took effect, migrates and
// sets the quota.
func (s *Store) openWriter(ctx context.Context, abs string, maxSize int64) (int, error) {
	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("open metadata store %q: %w", abs, dbErr(err))
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		_ = conn.Close()
		return 0, fmt.Errorf("read journal mode of %q: %w", abs, dbErr(err))
	}
	if mode != "wal" {
		_ = conn.Close()
		return 0, fmt.Errorf("enable WAL on %q: journal mode is %q (the filesystem may not support shared memory)", abs, mode)
	}
	version, err := migrate(ctx, conn)
	if err != nil {
		_ = conn.Close()
		return 0, fmt.Errorf("migrate %q: %w", abs, err)
	}
	if s.room, err = setQuota(ctx, conn, maxSize, s.log); err != nil {
		_ = conn.Close()
		return 0, fmt.Errorf("set quota of %q: %w", abs, err)
	}
	s.wconn = conn
	return version, nil
}

// dsn builds a file: URI so that any character in the path survives; the
// driver reads its own _parameters from the query and SQLite ignores them.
func dsn(abs string, q url.Values) string {
	u := url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}
	return u.String()
}

// Close waits for the batch in flight, fails queued Updates with ErrClosed and
// closes the database. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		<-s.stopped
		err := errors.Join(s.rdb.Close(), s.wconn.Close(), s.wdb.Close())
		if err != nil {
			s.closeErr = fmt.Errorf("close metadata store: %w", err)
		}
		s.log.Info("metadata store closed")
	})
	return s.closeErr
}

// View runs fn in a read-only transaction on a reader connection. fn sees one
// consistent snapshot of committed data (taken at its first read) and never
// the uncommitted work of a running Update. Write methods return ErrReadOnly.
func (s *Store) View(ctx context.Context, fn func(*Tx) error) error {
	select {
	case <-s.closing:
		return ErrClosed
	default:
	}
	stx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin view: %w", dbErr(err))
	}
	// Nothing to commit: ending the read transaction releases the snapshot,
	// also when fn panics.
	defer func() { _ = stx.Rollback() }()
	return fn(&Tx{ctx: ctx, q: stx, audit: s.audit})
}

// Update runs fn in a read-write transaction. A nil return commits; an error
// or a panic rolls back fn's writes (the panic is re-raised in the caller).
// Update returns only once fn's writes are durable, or with the error that
// prevented it.
//
// fn runs on the store's writer goroutine, batched with concurrent Updates
// (see the package doc): it must be short, must not call Update (that would
// deadlock) and must not touch slow external resources such as the HSM.
// If ctx is done before fn starts, Update returns ctx.Err() and fn never runs.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &request{ctx: ctx, fn: fn, done: make(chan outcome, 1)}
	select {
	case s.queue <- r:
	case <-s.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	var out outcome
	select {
	case out = <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(queued, abandoned) {
			return ctx.Err()
		}
		// fn already started: its fate is decided by the batch commit.
		out = <-r.done
	}
	if out.panicked {
		panic(out.panicVal)
	}
	return out.err
}

const (
	queued int32 = iota
	claimed
	abandoned
)

// request is one Update call waiting for the writer.
type request struct {
	ctx   context.Context
	fn    func(*Tx) error
	state atomic.Int32 // queued -> claimed by the writer, or -> abandoned by the caller
	done  chan outcome // buffered, so the writer never blocks on a caller
}

// claim reports whether the writer may still run r.
func (r *request) claim() bool { return r.state.CompareAndSwap(queued, claimed) }

type outcome struct {
	err      error
	panicked bool
	panicVal any
}

// run is the writer goroutine: it takes one queued request, adds whatever is
// already queued behind it (without waiting for more), and commits them as one
// batch.
func (s *Store) run() {
	defer close(s.stopped)
	var batch []*request
	for {
		if len(batch) == 0 {
			select {
			case r := <-s.queue:
				batch = append(batch, r)
			case <-s.closing:
				return
			}
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-s.queue:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		batch = s.runBatch(batch)
	}
}

// runBatch runs the batch in one transaction, each fn inside its own
// savepoint, and commits once. It returns the requests it could not start
// because the transaction died under an earlier fn; run retries them in the
// next batch.
//
// Statements use a background context on purpose: cancelling one would
// interrupt SQLite, which may roll back the whole shared transaction.
func (s *Store) runBatch(batch []*request) []*request {
	ctx := context.Background()
	s.batches.Add(1)
	start := time.Now()
	if _, err := s.wconn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		err = fmt.Errorf("begin batch: %w", dbErr(err))
		s.log.Error("metadata batch failed", "err", err)
		for _, r := range batch {
			if r.claim() {
				r.done <- outcome{err: err}
			}
		}
		return nil
	}
	var ok []*request
	for i, r := range batch {
		if !r.claim() {
			continue
		}
		if err := r.ctx.Err(); err != nil {
			r.done <- outcome{err: err}
			continue
		}
		s.calls.Add(1)
		out, cause := s.runOne(ctx, r.fn)
		if cause != nil {
			// SQLite ended the transaction (it may on SQLITE_FULL or an I/O
			// error): the writes of the fns before this one are gone too.
			s.rollback(ctx)
			r.done <- out
			err := fmt.Errorf("meta: batch aborted by a failed write: %w", cause)
			s.log.Warn("metadata batch aborted", "err", err)
			for _, o := range ok {
				o.done <- outcome{err: err}
			}
			return batch[i+1:]
		}
		if out.err != nil || out.panicked {
			r.done <- out // its savepoint is rolled back: nothing of it will commit
			continue
		}
		ok = append(ok, r)
	}
	if _, err := s.wconn.ExecContext(ctx, "COMMIT"); err != nil {
		err = fmt.Errorf("commit batch: %w", dbErr(err))
		s.rollback(ctx)
		s.log.Error("metadata batch failed", "err", err, "size", len(ok))
		for _, o := range ok {
			o.done <- outcome{err: err}
		}
		return nil
	}
	s.observeCommit(start, len(ok))
	for _, o := range ok {
		o.done <- outcome{}
	}
	return nil
}

// runOne runs fn inside a savepoint. A non-nil cause means the enclosing
// transaction is no longer usable; cause is the best description of why.
func (s *Store) runOne(ctx context.Context, fn func(*Tx) error) (out outcome, cause error) {
	if _, err := s.wconn.ExecContext(ctx, "SAVEPOINT fn"); err != nil {
		err = fmt.Errorf("open savepoint: %w", dbErr(err))
		return outcome{err: err}, err
	}
	tx := &Tx{ctx: ctx, q: s.wconn, writable: true, audit: s.audit, room: s.room}
	out = s.call(tx, fn)
	end := "RELEASE fn"
	if out.err != nil || out.panicked {
		end = "ROLLBACK TO fn; RELEASE fn"
	}
	if _, err := s.wconn.ExecContext(ctx, end); err != nil {
		err = fmt.Errorf("close savepoint: %w", dbErr(err))
		if out.err == nil && !out.panicked {
			out.err = err
		}
		// fn's own error (say ErrFull) explains the failure better than
		// "no such savepoint".
		if out.err != nil {
			err = out.err
		}
		return out, err
	}
	return out, nil
}

// call runs fn, turning a panic into an outcome. A Tx that saw an SQLite
// error fails even if fn swallowed that error, because SQLite may have
// undone part of fn's work.
func (s *Store) call(tx *Tx, fn func(*Tx) error) (out outcome) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("metadata update panicked", "stack", string(debug.Stack()))
			out = outcome{panicked: true, panicVal: v}
		}
	}()
	err := fn(tx)
	if err == nil && tx.err != nil {
		err = fmt.Errorf("meta: update ignored an error: %w", tx.err)
	}
	return outcome{err: err}
}

// rollback ends the batch transaction; it fails harmlessly when SQLite has
// already rolled it back.
func (s *Store) rollback(ctx context.Context) {
	_, _ = s.wconn.ExecContext(ctx, "ROLLBACK")
}

// dbErr classifies an SQLite error: the conditions callers act on become
// sentinels, the rest is marked as coming from meta. The original error stays
// in the chain.
func dbErr(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%w: %w", ErrFull, err)
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return fmt.Errorf("%w: %w", ErrBusy, err)
	case sqlite3.SQLITE_READONLY:
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	}
	return fmt.Errorf("meta: sqlite: %w", err)
}
