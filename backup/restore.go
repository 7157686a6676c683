package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// RestoreRequest tunes Restore.
type RestoreRequest struct {
	// Force overwrites local objects that changed after the backup (or
	// differ with the same Last Change Date).
	Force    bool
	Progress Progress // nil: silent
	Workers  int      // concurrent rewraps; 0 means the number of CPUs (at least 2)
}

// RestoreResult counts what Restore did with each object of the file.
type RestoreResult struct {
	Header Header
	// Created objects were missing locally.
	Created int
	// Updated objects existed locally with an older Last Change Date and
	// were replaced by the backup's version.
	Updated int
	// Skipped objects were identical locally.
	Skipped int
	// Conflicted objects differ locally and are not older than the backup's
	// version; they were kept, or overwritten with Force (Overwritten).
	Conflicted  int
	Overwritten int
	// Conflicts lists the IDs of up to maxConflicts conflicted objects.
	Conflicts []string
}

const maxConflicts = 20

// Restore writes the objects of a backup file into store. It first reads
// the whole file and checks its structure and seal, changing nothing if
// either is wrong or the token lacks the file's backup KEK. Then it reads
// the file again, checking every batch against the first pass, and applies
// it batch by batch: material is rewrapped inside the token from the backup
// KEK to the newest master. Running it twice changes nothing the second
// time. It must not run while a server uses store (its cache would go
// stale); the caller guarantees that.
func Restore(ctx context.Context, keys Keys, store Store, f io.ReadSeeker, req RestoreRequest) (RestoreResult, error) {
	var sums [][]byte
	bs := newBatchSum()
	s, err := scan(f, func(_ *Record, raw []byte) error {
		if bs.add(raw) == restoreBatch {
			sums = append(sums, bs.sum())
		}
		return nil
	})
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore backup: %w", err)
	}
	if bs.n > 0 {
		sums = append(sums, bs.sum())
	}
	kek, err := findKEK(ctx, keys, s.header.BackupKEK.Fingerprint)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore backup: %w", err)
	}
	if err := checkSeal(ctx, keys, kek, s); err != nil {
		return RestoreResult{}, fmt.Errorf("restore backup: %w", err)
	}
	master, err := newest(ctx, keys)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore backup: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return RestoreResult{}, fmt.Errorf("restore backup: rewind: %w", err)
	}

	a := &applier{keys: keys, store: store, kek: kek.Label, master: master, force: req.Force,
		workers: defaultWorkers(req.Workers), res: RestoreResult{Header: s.header}}
	prog := &ticker{p: req.Progress, every: time.Second}
	var batch []*Record
	done := 0
	apply := func() error {
		if len(sums) == 0 || !bytes.Equal(bs.sum(), sums[0]) {
			return fmt.Errorf("%w: the file changed while it was being restored", ErrSeal)
		}
		sums = sums[1:]
		if err := a.apply(ctx, batch); err != nil {
			return err
		}
		done += len(batch)
		prog.report(done, s.header.Objects)
		batch = nil // the batch is still being written
		return nil
	}
	_, err = scan(f, func(rec *Record, raw []byte) error {
		bs.add(raw)
		batch = append(batch, rec)
		if len(batch) == restoreBatch {
			return apply()
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		err = apply()
	}
	if werr := a.wait(); err == nil {
		err = werr
	}
	if err != nil {
		return a.res, fmt.Errorf("restore backup (after %d of %d objects; run it again to finish): %w", done, s.header.Objects, err)
	}
	return a.res, nil
}

// batchSum hashes the raw frames of one batch.
type batchSum struct {
	h hash.Hash
	n int
}

func newBatchSum() *batchSum { return &batchSum{h: sha256.New()} }

func (b *batchSum) add(raw []byte) int {
	var l [8]byte
	for i := range l {
		l[i] = byte(len(raw) >> (8 * i))
	}
	b.h.Write(l[:])
	b.h.Write(raw)
	b.n++
	return b.n
}

// sum returns the batch's digest and starts the next batch.
func (b *batchSum) sum() []byte {
	s := b.h.Sum(nil)
	b.h.Reset()
	b.n = 0
	return s
}

// restoreBatch is how many records one restore transaction writes: large,
// because each commit waits for an fsync.
const restoreBatch = 1024

// applier writes batches of records. One batch's transaction runs while the
// next batch is compared and rewrapped, so the token and the disk work at
// the same time.
type applier struct {
	keys     Keys
	store    Store
	kek      string // local label of the backup KEK
	master   string
	force    bool
	workers  int
	res      RestoreResult
	inflight chan written // the transaction in progress; nil: none
}

// written is the outcome of one batch's transaction.
type written struct {
	res RestoreResult
	err error
}

// wait waits for the transaction in progress and adds up its counts.
func (a *applier) wait() error {
	if a.inflight == nil {
		return nil
	}
	w := <-a.inflight
	a.inflight = nil
	if w.err != nil {
		return w.err
	}
	a.res.Created += w.res.Created
	a.res.Updated += w.res.Updated
	a.res.Skipped += w.res.Skipped
	a.res.Conflicted += w.res.Conflicted
	a.res.Overwritten += w.res.Overwritten
	for _, id := range w.res.Conflicts {
		if len(a.res.Conflicts) < maxConflicts {
			a.res.Conflicts = append(a.res.Conflicts, id)
		}
	}
	return nil
}

// action is what to do with one record.
type action int

const (
	skip action = iota
	create
	update    // local is older
	overwrite // local is not older, Force
	conflict  // local is not older: kept
)

// plan is one record's decision, with the local version it was made on.
type plan struct {
	rec   *Record
	act   action
	local *meta.Object // nil when missing
	job   *rewrapJob
}

func (a *applier) apply(ctx context.Context, batch []*Record) error {
	plans := make([]*plan, len(batch))
	ids := make([]string, len(batch))
	for i, r := range batch {
		ids[i] = r.ID
	}
	err := a.store.View(ctx, func(tx *meta.Tx) error {
		exists, err := tx.Existing(ids)
		if err != nil {
			return err
		}
		for i, r := range batch {
			if !exists[r.ID] {
				plans[i] = &plan{rec: r, act: create}
				continue
			}
			if plans[i], err = a.decide(tx, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	var jobs []*rewrapJob
	for _, p := range plans {
		if p.act != skip && p.act != conflict && p.rec.Material != nil {
			p.job = &rewrapJob{id: p.rec.ID, kind: kindOf(p.rec.Type, p.rec.Algorithm), in: hsm.Wrapped{Blob: p.rec.Material, KEK: a.kek}}
			jobs = append(jobs, p.job)
		}
	}
	if err := rewrapAll(ctx, a.keys, jobs, a.master, a.workers); err != nil {
		return err
	}
	if err := a.wait(); err != nil {
		return err
	}
	a.inflight = make(chan written, 1)
	go func(out chan<- written) {
		var res RestoreResult
		err := a.store.Update(ctx, func(tx *meta.Tx) error {
			res = RestoreResult{}
			for _, p := range plans {
				if err := a.write(tx, p, &res); err != nil {
					return err
				}
			}
			return nil
		})
		out <- written{res, err}
	}(a.inflight)
	return nil
}

// decide compares a record with the local object.
func (a *applier) decide(tx *meta.Tx, r *Record) (*plan, error) {
	local, err := tx.Get(r.ID)
	if errors.Is(err, meta.ErrNotFound) {
		return &plan{rec: r, act: create}, nil
	}
	if err != nil {
		return nil, err
	}
	grants, err := tx.Grants(r.ID)
	if err != nil {
		return nil, err
	}
	p := &plan{rec: r, local: local}
	switch {
	case same(local, grants, r):
		p.act = skip
	case r.Updated.After(local.Updated):
		p.act = update
	case a.force:
		p.act = overwrite
	default:
		p.act = conflict
	}
	return p, nil
}

// write applies one plan in tx, unless the local object changed since the
// plan was made (then it counts as a conflict).
func (a *applier) write(tx *meta.Tx, p *plan, res *RestoreResult) error {
	if p.act == skip || p.act == conflict {
		a.count(res, p.act, p.rec.ID)
		return nil
	}
	var w *hsm.Wrapped
	if p.job != nil {
		w = &p.job.out
	}
	o := p.rec.object(w)
	if p.local == nil {
		// Create refuses an ID that appeared since the plan was made.
		err := tx.Create(o)
		if errors.Is(err, meta.ErrExists) {
			a.count(res, conflict, p.rec.ID)
			return nil
		}
		if err != nil {
			return err
		}
	} else {
		cur, err := tx.Get(p.rec.ID)
		if errors.Is(err, meta.ErrNotFound) || (err == nil && !cur.Updated.Equal(p.local.Updated)) {
			a.count(res, conflict, p.rec.ID)
			return nil
		}
		if err == nil {
			err = tx.Put(o)
		}
		if err != nil {
			return err
		}
	}
	if len(p.rec.Grants) > 0 || p.local != nil {
		if err := tx.SetGrants(o.ID, p.rec.Grants); err != nil {
			return err
		}
	}
	a.count(res, p.act, p.rec.ID)
	return nil
}

func (a *applier) count(res *RestoreResult, act action, id string) {
	switch act {
	case skip:
		res.Skipped++
	case create:
		res.Created++
	case update:
		res.Updated++
	case overwrite:
		res.Conflicted++
		res.Overwritten++
	case conflict:
		res.Conflicted++
		res.Conflicts = append(res.Conflicts, id)
	}
}

// same reports whether the local object equals the record in everything a
// backup holds. Wrapped material is compared by presence (the local blob is
// wrapped under another KEK; the Digest attribute compares the values),
// clear material byte for byte.
func same(o *meta.Object, grants []string, r *Record) bool {
	l := recordOf(o, grants)
	switch {
	case o.Wrapped != nil && o.KEK != "":
		if r.Material == nil {
			return false
		}
	case !bytes.Equal(o.Wrapped, r.Clear) || (o.Wrapped == nil) != (r.Clear == nil) || r.Material != nil:
		return false
	}
	attrsEqual := slices.EqualFunc(l.Attrs, r.Attrs, func(x, y Attr) bool {
		return x.Name == y.Name && x.Index == y.Index && bytes.Equal(x.Value, y.Value)
	})
	return attrsEqual && slices.Equal(l.Grants, r.Grants) &&
		l.ID == r.ID && l.Type == r.Type && l.State == r.State && l.Owner == r.Owner &&
		l.Algorithm == r.Algorithm && l.Length == r.Length && l.UsageMask == r.UsageMask &&
		l.Format == r.Format && l.SecretType == r.SecretType &&
		l.Created.Equal(r.Created) && l.Updated.Equal(r.Updated) &&
		l.Activation.Equal(r.Activation) && l.Deactivation.Equal(r.Deactivation) &&
		l.Destroyed.Equal(r.Destroyed) && l.Compromise.Equal(r.Compromise) &&
		l.CompromiseOccurrence.Equal(r.CompromiseOccurrence) &&
		l.RevocationReason == r.RevocationReason && l.RevocationMessage == r.RevocationMessage
}
