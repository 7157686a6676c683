package backup

import (
	"context"
	"crypto/hmac"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// Keys is what backups and restores need from the token. *hsm.Token
// implements it.
type Keys interface {
	EnsureBackupKEK(ctx context.Context) (hsm.BackupKEK, error)
	BackupKEKs(ctx context.Context) ([]hsm.BackupKEK, error)
	BackupMAC(ctx context.Context, k hsm.BackupKEK, data []byte) ([]byte, error)
	Rewrap(ctx context.Context, w hsm.Wrapped, kind hsm.KeyKind, toKEK string) (hsm.Wrapped, error)
	Masters(ctx context.Context) ([]string, error)
}

// Store is what backups, restores and rotation need from the metadata
// database. *meta.Store implements it.
type Store interface {
	View(ctx context.Context, fn func(*meta.Tx) error) error
	Update(ctx context.Context, fn func(*meta.Tx) error) error
}

var (
	_ Keys  = (*hsm.Token)(nil)
	_ Store = (*meta.Store)(nil)
)

// Progress is told how many of total objects are done; it is called from
// one goroutine at a time, often, so it should rate-limit its own output.
type Progress func(done, total int)

// batchSize is how many objects are rewrapped concurrently and written in
// one transaction.
const batchSize = 256

// defaultWorkers is how many rewraps run at once: the token's throughput
// grows with concurrent sessions up to about the number of cores.
func defaultWorkers(n int) int {
	if n > 0 {
		return n
	}
	return max(2, runtime.GOMAXPROCS(0))
}

// rewrapJob is one blob to move to another KEK.
type rewrapJob struct {
	id   string
	kind hsm.KeyKind
	in   hsm.Wrapped
	out  hsm.Wrapped
}

// rewrapper and masterLister are the parts of Keys and MasterKeys that
// helpers shared by both need.
type (
	rewrapper interface {
		Rewrap(ctx context.Context, w hsm.Wrapped, kind hsm.KeyKind, toKEK string) (hsm.Wrapped, error)
	}
	masterLister interface {
		Masters(ctx context.Context) ([]string, error)
	}
)

// rewrapAll rewraps every job to toKEK with up to workers at once. The
// first error wins and names the object.
func rewrapAll(ctx context.Context, keys rewrapper, jobs []*rewrapJob, toKEK string, workers int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan *rewrapJob)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range min(workers, len(jobs)) {
		wg.Go(func() {
			for j := range next {
				out, err := keys.Rewrap(ctx, j.in, j.kind, toKEK)
				if err != nil {
					once.Do(func() {
						first = fmt.Errorf("rewrap object %q from %s to %s: %w", j.id, j.in.KEK, toKEK, err)
						cancel()
					})
					continue
				}
				j.out = out
			}
		})
	}
feed:
	for _, j := range jobs {
		select {
		case next <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// findKEK returns the token's backup pair with fingerprint fp.
func findKEK(ctx context.Context, keys Keys, fp string) (hsm.BackupKEK, error) {
	pairs, err := keys.BackupKEKs(ctx)
	if err != nil {
		return hsm.BackupKEK{}, err
	}
	for _, p := range pairs {
		if p.Fingerprint == fp {
			return p, nil
		}
	}
	return hsm.BackupKEK{}, fmt.Errorf("%w: the file needs backup KEK %s (import its custodian shares with `hsmkms kek import-shares`, or use the appliance that made it)", ErrForeignKEK, fp)
}

// checkSeal asks the token for the seal of s and compares.
func checkSeal(ctx context.Context, keys Keys, k hsm.BackupKEK, s *scanned) error {
	mac, err := keys.BackupMAC(ctx, k, sealInput(s.digest))
	if err != nil {
		return fmt.Errorf("compute seal: %w", err)
	}
	if !hmac.Equal(mac, s.seal) {
		return fmt.Errorf("%w: the file was changed after it was written", ErrSeal)
	}
	return nil
}

// newest returns the newest master label.
func newest(ctx context.Context, keys masterLister) (string, error) {
	ms, err := keys.Masters(ctx)
	if err != nil {
		return "", fmt.Errorf("list master keys: %w", err)
	}
	if len(ms) == 0 {
		return "", fmt.Errorf("list master keys: %w", hsm.ErrNotFound)
	}
	return ms[len(ms)-1], nil
}

// ticker rate-limits progress reports to about one per interval, plus the
// last one.
type ticker struct {
	p     Progress
	every time.Duration
	last  time.Time
}

func (t *ticker) report(done, total int) {
	if t.p == nil {
		return
	}
	if now := time.Now(); done == total || now.Sub(t.last) >= t.every {
		t.last = now
		t.p(done, total)
	}
}
