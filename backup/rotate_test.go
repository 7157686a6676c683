package backup_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/hsmkms/hsmkms/backup"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// failingKeys breaks Rewrap after a number of calls, as a crash would.
type failingKeys struct {
	*hsm.Token
	left atomic.Int32
}

var errInjected = errors.New("injected failure")

func (f *failingKeys) Rewrap(ctx context.Context, w hsm.Wrapped, kind hsm.KeyKind, to string) (hsm.Wrapped, error) {
	if f.left.Add(-1) < 0 {
		return hsm.Wrapped{}, errInjected
	}
	return f.Token.Rewrap(ctx, w, kind, to)
}

func kekUsage(t testing.TB, st *meta.Store) map[string]int {
	t.Helper()
	var use map[string]int
	if err := st.View(t.Context(), func(tx *meta.Tx) (err error) { use, err = tx.KEKUsage(); return err }); err != nil {
		t.Fatal(err)
	}
	return use
}

func TestRotateMaster(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tok := newToken(t)
	st := newStore(t)
	plain := fixture(t, tok, st, 700)
	before := snapshot(t, st)
	live := 0 // wrapped blobs; public keys are stored unwrapped
	for _, o := range before {
		if o.Wrapped != nil && o.KEK != "" {
			live++
		}
	}

	// Interrupted after 300 rewraps: the new master exists, part is moved.
	fk := &failingKeys{Token: tok}
	fk.left.Store(300)
	res, err := backup.RotateMaster(ctx, fk, st, backup.RotateRequest{})
	if !errors.Is(err, errInjected) || !res.Created || res.Master != "hsmkms-master-2" {
		t.Fatalf("interrupted rotation: %+v, %v", res, err)
	}
	use := kekUsage(t, st)
	if use["hsmkms-master-2"] == 0 || use[hsm.MasterLabel] == 0 {
		t.Fatalf("after the interruption: %v, want blobs under both masters", use)
	}
	// A key made now goes under the newest master.
	if w, _, err := tok.Generate(ctx, 128); err != nil || w.KEK != "hsmkms-master-2" {
		t.Fatalf("Generate after rotation: KEK %s, %v", w.KEK, err)
	}

	res, err = backup.RotateMaster(ctx, tok, st, backup.RotateRequest{Retire: true})
	if err != nil || res.Created || res.Master != "hsmkms-master-2" || !slices.Equal(res.Retired, []string{hsm.MasterLabel}) {
		t.Fatalf("resumed rotation: %+v, %v", res, err)
	}
	if use := kekUsage(t, st); len(use) != 1 || use["hsmkms-master-2"] != live {
		t.Fatalf("after rotation: %v, want %d blobs under hsmkms-master-2 only", use, live)
	}
	masters, err := tok.Masters(ctx)
	if err != nil || !slices.Equal(masters, []string{"hsmkms-master-2"}) {
		t.Fatalf("masters after retiring: %v, %v", masters, err)
	}
	// Nothing changed but the wrapping, and every key still opens.
	requireRestored(t, before, snapshot(t, st), plain, tok)

	// A second rotation makes master 3; without Retire master 2 stays.
	res, err = backup.RotateMaster(ctx, tok, st, backup.RotateRequest{})
	if err != nil || !res.Created || res.Master != "hsmkms-master-3" || res.Rewrapped != live {
		t.Fatalf("second rotation: %+v, %v", res, err)
	}
	if ms, _ := tok.Masters(ctx); len(ms) != 2 {
		t.Fatalf("masters %v, want 2 and 3", ms)
	}
	if err := tok.DeleteMaster(ctx, "hsmkms-master-3"); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("deleting the newest master: %v", err)
	}
	retired, err := backup.RetireMasters(ctx, tok, st)
	if err != nil || !slices.Equal(retired, []string{"hsmkms-master-2"}) {
		t.Fatalf("RetireMasters: %v, %v", retired, err)
	}
}

// TestRetireKeepsUsedMasters refuses to delete a master that still wraps keys.
func TestRetireKeepsUsedMasters(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tok := newToken(t)
	st := newStore(t)
	fixture(t, tok, st, 8)
	if _, err := tok.RotateMaster(ctx); err != nil {
		t.Fatal(err)
	}
	retired, err := backup.RetireMasters(ctx, tok, st)
	if err == nil || len(retired) != 0 {
		t.Fatalf("RetireMasters with keys under the old master: %v, %v", retired, err)
	}
	if ms, _ := tok.Masters(ctx); len(ms) != 2 {
		t.Fatalf("masters %v: the used master was deleted", ms)
	}
}
