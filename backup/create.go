package backup

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// CreateRequest tunes Create.
type CreateRequest struct {
	ApplianceID string    // names the appliance in the header
	Software    string    // e.g. "hsmkms v1.2.3"
	Now         time.Time // header time; zero means time.Now()
	Progress    Progress  // nil: silent
	Workers     int       // concurrent rewraps; 0 means the number of CPUs (at least 2)
}

// Summary describes a backup file: its header and how it was checked.
type Summary struct {
	Header Header
	// Sealed reports that the seal was checked (Verify with a token) or
	// made (Create).
	Sealed bool
}

// Create writes a backup of every object in store to w: one consistent
// snapshot, material rewrapped inside the token from its master to the
// newest backup KEK (generated first if the token has none), sealed by the
// token. On error w holds a partial file, which Verify and Restore refuse.
func Create(ctx context.Context, keys Keys, store Store, w io.Writer, req CreateRequest) (Summary, error) {
	kek, err := keys.EnsureBackupKEK(ctx)
	if err != nil {
		return Summary{}, fmt.Errorf("create backup: %w", err)
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	h := Header{
		ApplianceID: req.ApplianceID,
		Created:     now.UTC().Truncate(time.Second),
		Software:    req.Software,
		BackupKEK:   KEKInfo{Fingerprint: kek.Fingerprint, Label: kek.Label},
	}
	fw := newWriter(w)
	workers := defaultWorkers(req.Workers)
	prog := &ticker{p: req.Progress, every: time.Second}
	err = store.View(ctx, func(tx *meta.Tx) error {
		census, err := tx.Census()
		if err != nil {
			return err
		}
		h.Counts, h.Objects = countsOf(census)
		if err := fw.start(); err != nil {
			return err
		}
		if err := fw.json(frameHeader, h); err != nil {
			return err
		}
		done := 0
		var batch []entry
		var jobs []*rewrapJob
		flush := func() error {
			if err := rewrapAll(ctx, keys, jobs, kek.Label, workers); err != nil {
				return err
			}
			for _, e := range batch {
				if e.job != nil {
					e.rec.Material = e.job.out.Blob
				}
				if err := fw.json(frameObject, e.rec); err != nil {
					return err
				}
			}
			done += len(batch)
			prog.report(done, h.Objects)
			batch, jobs = batch[:0], jobs[:0]
			return nil
		}
		err = tx.Walk(func(o *meta.Object, grants []string) error {
			e := entry{rec: recordOf(o, grants)}
			switch {
			case o.Wrapped != nil && o.KEK != "":
				e.job = &rewrapJob{id: o.ID, kind: kindOf(o.Type, o.Algorithm), in: hsm.Wrapped{Blob: o.Wrapped, KEK: o.KEK}}
				jobs = append(jobs, e.job)
			case o.Wrapped != nil:
				e.rec.Clear = o.Wrapped // not secret, stored unwrapped
			}
			batch = append(batch, e)
			if len(batch) == batchSize {
				return flush()
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := flush(); err != nil {
			return err
		}
		if done != h.Objects {
			return fmt.Errorf("walked %d objects, counted %d in the same snapshot", done, h.Objects)
		}
		return fw.json(frameEnd, end{Objects: done})
	})
	if err != nil {
		return Summary{}, fmt.Errorf("create backup: %w", err)
	}
	digest, err := fw.digest()
	if err != nil {
		return Summary{}, fmt.Errorf("create backup: %w", err)
	}
	mac, err := keys.BackupMAC(ctx, kek, sealInput(digest))
	if err != nil {
		return Summary{}, fmt.Errorf("create backup: seal: %w", err)
	}
	if err := fw.frame(frameSeal, mac); err != nil {
		return Summary{}, fmt.Errorf("create backup: %w", err)
	}
	if err := fw.w.Flush(); err != nil {
		return Summary{}, fmt.Errorf("create backup: %w", err)
	}
	return Summary{Header: h, Sealed: true}, nil
}

// entry is a record waiting for its material.
type entry struct {
	rec *Record
	job *rewrapJob // nil: no material
}
