package backup_test

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/backup"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// KMIP values used by the fixtures.
const (
	typeSymmetric = 2
	typePublic    = 3
	typePrivate   = 4
	typeSecret    = 7
	algAES        = 3
	algRSA        = 4
	algECDSA      = 6
)

var states = []uint32{1, 2, 3, 4, 5, 6} // Pre-Active .. Destroyed Compromised

func destroyed(state uint32) bool { return state == 5 || state == 6 }

// fixture stores n objects of every kind and state in st, material made in
// tok, and returns each one's plaintext (nil when destroyed) by ID.
func fixture(t testing.TB, tok *hsm.Token, st *meta.Store, n int) map[string][]byte {
	t.Helper()
	ctx := t.Context()
	plain := map[string][]byte{}
	var objs []*meta.Object
	for i := range n {
		now := time.Unix(1700000000+int64(i), 0).UTC()
		o := &meta.Object{ID: fmt.Sprintf("key-%05d", i), State: states[i%len(states)], Owner: "app-" + fmt.Sprint(i%3),
			UsageMask: 12, Format: 1, Created: now, Updated: now.Add(time.Minute),
			Attrs: []meta.Attr{{Name: "Name", Value: []byte(fmt.Sprintf("name %d", i))}, {Name: "x-note", Index: 1, Value: []byte{byte(i)}}}}
		var kind hsm.KeyKind
		var w hsm.Wrapped
		var err error
		switch i % 4 {
		case 0, 1:
			o.Type, o.Algorithm, o.Length, kind = typeSymmetric, algAES, int32(128+128*(i%4)), hsm.KindAES
			w, _, err = tok.Generate(ctx, int(o.Length))
		case 2, 3:
			o.Type, o.SecretType, kind = typeSecret, 2, hsm.KindSecret
			material := make([]byte, 5+91*(i%4-2))
			rand.Read(material)
			w, err = tok.Import(ctx, hsm.KindSecret, material)
		}
		if err != nil {
			t.Fatal(err)
		}
		if destroyed(o.State) {
			o.Destroyed = now.Add(time.Hour)
			plain[o.ID] = nil
		} else {
			o.Wrapped, o.KEK = w.Blob, w.KEK
			p, err := tok.ExportPlain(ctx, hsm.Key{ID: o.ID, Kind: kind, Wrapped: w})
			if err != nil {
				t.Fatal(err)
			}
			plain[o.ID] = p
		}
		if o.State == 4 {
			o.Compromise, o.RevocationReason, o.RevocationMessage = now, 2, "lost laptop"
		}
		objs = append(objs, o)
	}
	// Key pairs: the private key wrapped, the public key stored in the clear.
	for i, req := range []hsm.KeyPairRequest{{Kind: hsm.KindEC, Curve: elliptic.P256()}, {Kind: hsm.KindRSA, Bits: 2048}} {
		kp, err := tok.GenerateKeyPair(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Unix(1710000000, 0).UTC()
		alg := uint32(algECDSA)
		if req.Kind == hsm.KindRSA {
			alg = algRSA
		}
		prv := &meta.Object{ID: fmt.Sprintf("private-%d", i), Type: typePrivate, State: 2, Owner: "pki", Algorithm: alg,
			Wrapped: kp.Private.Blob, KEK: kp.Private.KEK, Created: now, Updated: now}
		pub := &meta.Object{ID: fmt.Sprintf("public-%d", i), Type: typePublic, State: 2, Owner: "pki", Algorithm: alg,
			Wrapped: kp.Public, Created: now, Updated: now}
		p, err := tok.ExportPlain(ctx, hsm.Key{ID: prv.ID, Kind: req.Kind, Wrapped: kp.Private})
		if err != nil {
			t.Fatal(err)
		}
		plain[prv.ID], plain[pub.ID] = p, kp.Public
		objs = append(objs, prv, pub)
	}
	err := st.Update(ctx, func(tx *meta.Tx) error {
		for i, o := range objs {
			if err := tx.Create(o); err != nil {
				return err
			}
			if i%5 == 0 {
				if err := tx.Grant(o.ID, "reader-"+fmt.Sprint(i%2)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

// snapshot reads every object and its grants.
func snapshot(t testing.TB, st *meta.Store) map[string]*meta.Object {
	t.Helper()
	out := map[string]*meta.Object{}
	err := st.View(t.Context(), func(tx *meta.Tx) error {
		return tx.Walk(func(o *meta.Object, grants []string) error {
			for _, g := range grants {
				o.Attrs = append(o.Attrs, meta.Attr{Name: "grant", Value: []byte(g)})
			}
			out[o.ID] = o
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// requireRestored compares dst with src object by object, material by value.
func requireRestored(t testing.TB, src, dst map[string]*meta.Object, plain map[string][]byte, tok *hsm.Token) {
	t.Helper()
	if len(dst) != len(src) {
		t.Fatalf("restored %d objects, want %d", len(dst), len(src))
	}
	for id, s := range src {
		d := dst[id]
		if d == nil {
			t.Fatalf("object %s missing after restore", id)
		}
		a, b := *s, *d
		a.Wrapped, a.KEK, b.Wrapped, b.KEK = nil, "", nil, ""
		// Mirror revisions are the destination's own: a restore is a new write there.
		a.Rev, b.Rev = meta.Rev{}, meta.Rev{}
		if fmt.Sprintf("%+v", a) != fmt.Sprintf("%+v", b) {
			t.Fatalf("object %s differs:\n src %+v\n dst %+v", id, a, b)
		}
		if want := plain[id]; want == nil {
			if d.Wrapped != nil {
				t.Fatalf("destroyed object %s has material after restore", id)
			}
			continue
		}
		if d.Type == typePublic {
			if d.KEK != "" || !bytes.Equal(d.Wrapped, plain[id]) {
				t.Fatalf("public key %s: restored as %q under %q", id, d.Wrapped, d.KEK)
			}
			continue
		}
		kind := map[uint32]hsm.KeyKind{typeSymmetric: hsm.KindAES, typeSecret: hsm.KindSecret, typePrivate: hsm.KindEC}[d.Type]
		if d.Type == typePrivate && d.Algorithm == algRSA {
			kind = hsm.KindRSA
		}
		got, err := tok.ExportPlain(t.Context(), hsm.Key{ID: id, Kind: kind, Wrapped: hsm.Wrapped{Blob: d.Wrapped, KEK: d.KEK}})
		if err != nil {
			t.Fatalf("object %s: %v", id, err)
		}
		if !bytes.Equal(got, plain[id]) {
			t.Fatalf("object %s: restored material differs", id)
		}
	}
}

// shareSecret gives both tokens the same imported backup pair, as the key
// ceremony does.
func shareSecret(t testing.TB, toks ...*hsm.Token) hsm.BackupKEK {
	t.Helper()
	secret := make([]byte, hsm.BackupSecretSize)
	rand.Read(secret)
	var k hsm.BackupKEK
	for _, tok := range toks {
		got, created, err := tok.ImportBackupSecret(t.Context(), secret)
		if err != nil || !created {
			t.Fatalf("ImportBackupSecret: %v (created %v)", err, created)
		}
		if k.Fingerprint != "" && got.Fingerprint != k.Fingerprint {
			t.Fatalf("fingerprints differ between tokens: %s, %s", k.Fingerprint, got.Fingerprint)
		}
		k = got
	}
	return k
}

func writeBackup(t testing.TB, tok *hsm.Token, st *meta.Store) (string, backup.Summary) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.hkb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var calls atomic.Int32
	sum, err := backup.Create(t.Context(), tok, st, f, backup.CreateRequest{ApplianceID: "test-a",
		Progress: func(done, total int) { calls.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() == 0 {
		t.Errorf("no progress reported")
	}
	return path, sum
}

func restoreFile(t testing.TB, tok *hsm.Token, st *meta.Store, path string, force bool) (backup.RestoreResult, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return backup.Restore(t.Context(), tok, st, f, backup.RestoreRequest{Force: force})
}

func TestDisasterRecovery(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tokA, tokB := newToken(t), newToken(t)
	stA, stB := newStore(t), newStore(t)
	kek := shareSecret(t, tokA, tokB)
	plain := fixture(t, tokA, stA, 600)
	const n = 604 // and two key pairs
	path, sum := writeBackup(t, tokA, stA)
	if sum.Header.BackupKEK.Fingerprint != kek.Fingerprint || sum.Header.Objects != n || !sum.Sealed {
		t.Fatalf("summary %+v: want %d objects sealed under %s (the newest pair)", sum, n, kek.Fingerprint)
	}
	total := 0
	for _, c := range sum.Header.Counts {
		total += c.Count
		if c.TypeName == "" || c.StateName == "" {
			t.Errorf("count without names: %+v", c)
		}
	}
	if total != n || len(sum.Header.Counts) != 2*len(states)+2 {
		t.Errorf("counts %+v", sum.Header.Counts)
	}

	f, _ := os.Open(path)
	v, err := backup.Verify(ctx, tokB, f)
	f.Close()
	if err != nil || !v.Sealed || v.Header.ApplianceID != "test-a" {
		t.Fatalf("Verify on B: %+v, %v", v, err)
	}
	f, _ = os.Open(path)
	v, err = backup.Verify(ctx, nil, f)
	f.Close()
	if err != nil || v.Sealed {
		t.Fatalf("Verify without a token: %+v, %v (want structure only)", v, err)
	}

	res, err := restoreFile(t, tokB, stB, path, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Created != n || res.Skipped+res.Updated+res.Conflicted != 0 {
		t.Fatalf("first restore: %+v", res)
	}
	requireRestored(t, snapshot(t, stA), snapshot(t, stB), plain, tokB)

	res, err = restoreFile(t, tokB, stB, path, false)
	if err != nil || res.Skipped != n || res.Created+res.Updated+res.Conflicted != 0 {
		t.Fatalf("second restore is not a no-op: %+v, %v", res, err)
	}

	// Local changes: one newer (kept unless forced), one older (replaced).
	newer, older := "key-00001", "key-00002"
	err = stB.Update(ctx, func(tx *meta.Tx) error {
		o, err := tx.Get(newer)
		if err != nil {
			return err
		}
		o.Owner, o.Updated = "thief", o.Updated.Add(time.Hour)
		if err := tx.Put(o); err != nil {
			return err
		}
		if o, err = tx.Get(older); err != nil {
			return err
		}
		o.Owner, o.Updated = "stale", o.Updated.Add(-time.Hour)
		return tx.Put(o)
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err = restoreFile(t, tokB, stB, path, false)
	if err != nil || res.Conflicted != 1 || res.Updated != 1 || res.Skipped != n-2 || !slices.Equal(res.Conflicts, []string{newer}) {
		t.Fatalf("restore over local changes: %+v, %v", res, err)
	}
	if o := snapshot(t, stB)[newer]; o.Owner != "thief" {
		t.Fatalf("a newer local change was overwritten without --force")
	}
	res, err = restoreFile(t, tokB, stB, path, true)
	if err != nil || res.Overwritten != 1 || res.Skipped != n-1 {
		t.Fatalf("forced restore: %+v, %v", res, err)
	}
	requireRestored(t, snapshot(t, stA), snapshot(t, stB), plain, tokB)
}

func TestForeignFileChangesNothing(t *testing.T) {
	t.Parallel()
	tokA, tokC := newToken(t), newToken(t)
	stA, stC := newStore(t), newStore(t)
	fixture(t, tokA, stA, 10)
	path, _ := writeBackup(t, tokA, stA)
	_, err := restoreFile(t, tokC, stC, path, false)
	if !errors.Is(err, backup.ErrForeignKEK) {
		t.Fatalf("restore onto a token without the backup KEK: %v", err)
	}
	if n := len(snapshot(t, stC)); n != 0 {
		t.Fatalf("a refused restore wrote %d objects", n)
	}
}

// TestEveryByteChangeDetected changes each byte of a small backup file (and
// cuts it at every length): Verify must refuse each one, and a restore of a
// changed file must write nothing.
func TestEveryByteChangeDetected(t *testing.T) {
	t.Parallel()
	tok := newToken(t)
	st := newStore(t)
	fixture(t, tok, st, 6)
	path, _ := writeBackup(t, tok, st)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(b []byte) error {
		_, err := backup.Verify(t.Context(), tok, bytes.NewReader(b))
		return err
	}
	if err := verify(orig); err != nil {
		t.Fatalf("the original does not verify: %v", err)
	}
	kinds := map[string]int{}
	for i := range orig {
		for _, x := range []byte{0xff} {
			b := bytes.Clone(orig)
			b[i] ^= x
			err := verify(b)
			switch {
			case errors.Is(err, backup.ErrSeal):
				kinds["seal"]++
			case errors.Is(err, backup.ErrFormat):
				kinds["format"]++
			case errors.Is(err, backup.ErrForeignKEK):
				kinds["foreign"]++
			default:
				t.Fatalf("byte %d ^ %#x: err = %v", i, x, err)
			}
		}
	}
	for n := range len(orig) {
		if err := verify(orig[:n]); !errors.Is(err, backup.ErrFormat) {
			t.Fatalf("cut at %d of %d bytes: err = %v", n, len(orig), err)
		}
	}
	if err := verify(append(bytes.Clone(orig), 0)); !errors.Is(err, backup.ErrFormat) {
		t.Fatalf("a trailing byte: err = %v", err)
	}
	t.Logf("%d bytes, each changed: %v", len(orig), kinds)

	dst := newStore(t)
	for _, i := range []int{len(orig) / 2, len(orig) - 1} {
		b := bytes.Clone(orig)
		b[i] ^= 1
		p := filepath.Join(t.TempDir(), "changed.hkb")
		os.WriteFile(p, b, 0o600)
		if _, err := restoreFile(t, tok, dst, p, false); err == nil {
			t.Fatalf("restore of a file changed at byte %d succeeded", i)
		}
	}
	if n := len(snapshot(t, dst)); n != 0 {
		t.Fatalf("refused restores wrote %d objects", n)
	}
}

// TestBackupDuringCreates takes a backup while another goroutine keeps
// creating objects: the backup holds exactly the first K objects created.
func TestBackupDuringCreates(t *testing.T) {
	t.Parallel()
	tok := newToken(t)
	st := newStore(t)
	fixture(t, tok, st, 300)
	w, _, err := tok.Generate(t.Context(), 256)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int)
	var made atomic.Int32
	go func() {
		n := 0
		for ctx.Err() == nil {
			o := &meta.Object{ID: fmt.Sprintf("late-%05d", n), Type: typeSymmetric, State: 2, Algorithm: algAES, Length: 256,
				Wrapped: w.Blob, KEK: w.KEK, Created: time.Now(), Updated: time.Now()}
			if err := st.Update(context.Background(), func(tx *meta.Tx) error { return tx.Create(o) }); err != nil {
				break
			}
			n++
			made.Store(int32(n))
		}
		done <- n
	}()
	for made.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	path, sum := writeBackup(t, tok, st)
	cancel()
	created := <-done

	dst := newStore(t)
	res, err := restoreFile(t, tok, dst, path, false)
	if err != nil {
		t.Fatal(err)
	}
	late, got := 0, snapshot(t, dst)
	for id := range got {
		if bytes.HasPrefix([]byte(id), []byte("late-")) {
			late++
		}
	}
	for i := range late {
		if _, ok := got[fmt.Sprintf("late-%05d", i)]; !ok {
			t.Fatalf("the backup holds %d late objects but not late-%05d: not a prefix", late, i)
		}
	}
	if res.Created != sum.Header.Objects || late == 0 || late >= created {
		t.Fatalf("restored %d (header %d), %d of %d late objects: want a strict, non-empty prefix", res.Created, sum.Header.Objects, late, created)
	}
	t.Logf("backup caught %d of %d concurrent creates", late, created)
}
