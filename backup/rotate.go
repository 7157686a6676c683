package backup

import (
	"context"
	"fmt"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// MasterKeys is what master rotation needs from the token. *hsm.Token
// implements it.
type MasterKeys interface {
	Masters(ctx context.Context) ([]string, error)
	RotateMaster(ctx context.Context) (string, error)
	DeleteMaster(ctx context.Context, label string) error
	Rewrap(ctx context.Context, w hsm.Wrapped, kind hsm.KeyKind, toKEK string) (hsm.Wrapped, error)
}

var _ MasterKeys = (*hsm.Token)(nil)

// RotateRequest tunes RotateMaster.
type RotateRequest struct {
	// Settle keeps rotating until this long after the new master was made,
	// so that a running server, which notices a new master within ten
	// seconds, has switched to it and the keys it made meanwhile are
	// rewrapped too. Zero when no server runs.
	Settle time.Duration
	// Retire deletes the old masters afterwards when nothing is wrapped under
	// them any more. Only safe when no server runs (see RetireMasters).
	Retire   bool
	Progress Progress // nil: silent
	Workers  int      // concurrent rewraps; 0 means the number of CPUs (at least 2)
}

// RotateResult reports a rotation.
type RotateResult struct {
	Master    string   // the master every blob is now wrapped under
	Created   bool     // Master was made by this run (else an interrupted rotation resumed)
	Rewrapped int      // blobs moved to Master
	Retired   []string // old masters deleted
}

// RotateMaster moves every stored blob to the newest master. When every blob
// is already there it first creates a new master; otherwise it resumes the
// rotation that made the newest one. It works in batches, each one a
// compare-and-set transaction, so a server may keep running: a blob it
// changed meanwhile is simply picked up by the next pass.
func RotateMaster(ctx context.Context, keys MasterKeys, store Store, req RotateRequest) (RotateResult, error) {
	master, err := newest(ctx, keys)
	if err != nil {
		return RotateResult{}, fmt.Errorf("rotate master key: %w", err)
	}
	remaining, err := staleCount(ctx, store, master)
	if err != nil {
		return RotateResult{}, fmt.Errorf("rotate master key: %w", err)
	}
	res := RotateResult{Master: master}
	if remaining == 0 {
		if res.Master, err = keys.RotateMaster(ctx); err != nil {
			return RotateResult{}, fmt.Errorf("rotate master key: %w", err)
		}
		res.Created = true
		if remaining, err = staleCount(ctx, store, res.Master); err != nil {
			return res, fmt.Errorf("rotate master key: %w", err)
		}
	}
	start := time.Now()
	prog := &ticker{p: req.Progress, every: time.Second}
	workers := defaultWorkers(req.Workers)
	for {
		var stale []*meta.Object
		err := store.View(ctx, func(tx *meta.Tx) (err error) {
			stale, err = tx.WrappedNotUnder(res.Master, batchSize)
			return err
		})
		if err != nil {
			return res, fmt.Errorf("rotate master key: %w", err)
		}
		if len(stale) == 0 {
			wait := req.Settle - time.Since(start)
			if wait <= 0 {
				break
			}
			select {
			case <-time.After(min(wait, time.Second)):
				continue
			case <-ctx.Done():
				return res, fmt.Errorf("rotate master key: %w", ctx.Err())
			}
		}
		jobs := make([]*rewrapJob, len(stale))
		for i, o := range stale {
			jobs[i] = &rewrapJob{id: o.ID, kind: kindOf(o.Type, o.Algorithm), in: hsm.Wrapped{Blob: o.Wrapped, KEK: o.KEK}}
		}
		if err := rewrapAll(ctx, keys, jobs, res.Master, workers); err != nil {
			return res, fmt.Errorf("rotate master key (run it again to resume): %w", err)
		}
		moved := 0
		err = store.Update(ctx, func(tx *meta.Tx) error {
			moved = 0
			for _, j := range jobs {
				ok, err := tx.SetWrapped(j.id, j.in.Blob, j.in.KEK, j.out.Blob, j.out.KEK)
				if err != nil {
					return err
				}
				if ok {
					moved++
				}
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("rotate master key (run it again to resume): %w", err)
		}
		res.Rewrapped += moved
		prog.report(min(res.Rewrapped, remaining), max(remaining, res.Rewrapped))
	}
	if req.Retire {
		retired, err := RetireMasters(ctx, keys, store)
		res.Retired = retired
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// staleCount counts blobs not under master.
func staleCount(ctx context.Context, store Store, master string) (int, error) {
	var n int
	err := store.View(ctx, func(tx *meta.Tx) error {
		use, err := tx.KEKUsage()
		for kek, c := range use {
			if kek != master {
				n += c
			}
		}
		return err
	})
	return n, err
}

// RetireMasters deletes every master older than the newest that no stored
// blob is wrapped under, and returns their labels. A master still in use is
// kept and reported in the error. The caller must make sure no server runs:
// a server may hold blobs under an old master in its object cache.
func RetireMasters(ctx context.Context, keys MasterKeys, store Store) ([]string, error) {
	masters, err := keys.Masters(ctx)
	if err != nil {
		return nil, fmt.Errorf("retire master keys: %w", err)
	}
	if len(masters) < 2 {
		return nil, nil
	}
	var use map[string]int
	if err := store.View(ctx, func(tx *meta.Tx) (err error) {
		use, err = tx.KEKUsage()
		return err
	}); err != nil {
		return nil, fmt.Errorf("retire master keys: %w", err)
	}
	var retired, busy []string
	for _, m := range masters[:len(masters)-1] {
		if n := use[m]; n > 0 {
			busy = append(busy, fmt.Sprintf("%s wraps %d keys", m, n))
			continue
		}
		if err := keys.DeleteMaster(ctx, m); err != nil {
			return retired, fmt.Errorf("retire master keys: %w", err)
		}
		retired = append(retired, m)
	}
	if len(busy) > 0 {
		return retired, fmt.Errorf("retire master keys: kept %v (run `hsmkms kek rotate-master` to move those keys first)", busy)
	}
	return retired, nil
}
