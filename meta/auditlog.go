package meta

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// AuditLogOptions tunes an AuditLog. The zero value is usable.
type AuditLogOptions struct {
	// Interval is the longest a queued record waits for its commit. Zero
	// means 200ms.
	Interval time.Duration
	// MaxBatch commits as soon as this many records are queued. Zero means
	// 1000.
	MaxBatch int
	// Queue bounds the records waiting for a commit. Zero means 4 × MaxBatch.
	Queue int
	// MaxWait is how long Enqueue blocks on a full queue (the store is slow
	// or failing) before it fails. Zero means 2s.
	MaxWait time.Duration
	// Logger receives audit write failures; nil discards.
	Logger *slog.Logger
}

// AuditLog writes audit records two ways: Append commits one record before
// returning, Enqueue queues it for a batched commit. Records of operations
// that change state or reveal key material should be appended; records of
// frequent read-only operations can be queued, trading the last Interval of
// records on a crash for one commit per batch instead of one per record.
type AuditLog struct {
	st       *Store
	log      *slog.Logger
	interval time.Duration
	maxBatch int
	maxWait  time.Duration

	queue chan AuditRecord
	// mu is read-held by Enqueue while it sends and write-held by Close to
	// set closed, so nothing is sent after the flusher's last drain.
	mu     sync.RWMutex
	closed bool
	stop   chan struct{}
	done   chan struct{}
	err    error // set by the flusher before done closes: records it could not write
}

// OpenAuditLog starts the batching writer of st's audit trail. st must have
// been opened with Options.Audit. Close flushes and stops it; close it
// before st.
func OpenAuditLog(st *Store, opts AuditLogOptions) (*AuditLog, error) {
	if st.audit == nil {
		return nil, fmt.Errorf("open audit log: %w", ErrAuditDisabled)
	}
	l := &AuditLog{
		st:       st,
		log:      opts.Logger,
		interval: opts.Interval,
		maxBatch: opts.MaxBatch,
		maxWait:  opts.MaxWait,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.interval <= 0 {
		l.interval = 200 * time.Millisecond
	}
	if l.maxBatch <= 0 {
		l.maxBatch = 1000
	}
	if l.maxWait <= 0 {
		l.maxWait = 2 * time.Second
	}
	size := opts.Queue
	if size <= 0 {
		size = 4 * l.maxBatch
	}
	l.queue = make(chan AuditRecord, size)
	go l.run()
	return l, nil
}

// Append commits rec before it returns (sharing the fsync with concurrent
// Updates through group commit).
func (l *AuditLog) Append(ctx context.Context, rec AuditRecord) error {
	err := l.st.Update(ctx, func(tx *Tx) error { return tx.AppendAudit(rec) })
	if err != nil {
		l.log.Error("audit record not written", "op", rec.Operation, "err", err)
		return err
	}
	return nil
}

// Enqueue queues rec for the next batch commit. When the queue is full it
// blocks until there is room, ctx ends or MaxWait passes, and then fails
// rather than drop the record silently.
func (l *AuditLog) Enqueue(ctx context.Context, rec AuditRecord) error {
	if !rec.Kind.valid() {
		return fmt.Errorf("queue audit record: kind %q: %w", rec.Kind, ErrInvalid)
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return fmt.Errorf("queue audit record: audit log closed: %w", ErrClosed)
	}
	select {
	case l.queue <- rec:
		return nil
	default:
	}
	t := time.NewTimer(l.maxWait)
	defer t.Stop()
	select {
	case l.queue <- rec:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("queue audit record: %w", ctx.Err())
	case <-t.C:
		return fmt.Errorf("queue audit record: queue full for %v: %w", l.maxWait, ErrBusy)
	}
}

// Close stops taking records, commits the queued ones and stops the writer.
// It returns an error if some records could not be written. It is
// idempotent.
func (l *AuditLog) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.stop)
	}
	l.mu.Unlock()
	<-l.done
	return l.err
}

// run is the flusher: it commits a batch when MaxBatch records are queued or
// Interval passed. A failed batch is retried every Interval, and meanwhile
// nothing more is taken from the queue, so it fills and Enqueue pushes back
// on callers instead of memory growing.
func (l *AuditLog) run() {
	defer close(l.done)
	tick := time.NewTicker(l.interval)
	defer tick.Stop()
	var batch []AuditRecord
	final := func() {
		for len(l.queue) > 0 {
			batch = append(batch, <-l.queue)
		}
		if err := l.flush(batch); err != nil {
			l.err = fmt.Errorf("close audit log: %d records not written: %w", len(batch), err)
		}
	}
	for {
		select {
		case r := <-l.queue:
			batch = append(batch, r)
			if len(batch) < l.maxBatch {
				continue
			}
		case <-tick.C:
		case <-l.stop:
			final()
			return
		}
		for l.flush(batch) != nil {
			select {
			case <-tick.C:
			case <-l.stop:
				final()
				return
			}
		}
		batch = batch[:0]
	}
}

// flush commits batch in one Update.
func (l *AuditLog) flush(batch []AuditRecord) error {
	if len(batch) == 0 {
		return nil
	}
	// Not a caller's context: a batch must not fail because one client left.
	err := l.st.Update(context.Background(), func(tx *Tx) error { return tx.appendAudit(batch) })
	if err != nil {
		l.log.Error("audit records not written", "count", len(batch), "err", err)
	}
	return err
}
