package hsm_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/hsm/hsmtest"
)

// TestBackupKeys imports a backup secret and checks what the token does with
// it against Go's own computation; it adds a backup pair to the shared token
// but changes nothing other tests use.
func TestBackupKeys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tok := hsmtest.Token(t)
	secret := make([]byte, hsm.BackupSecretSize)
	rand.Read(secret)
	fp, err := hsm.BackupFingerprint(secret)
	if err != nil {
		t.Fatal(err)
	}
	k, created, err := tok.ImportBackupSecret(ctx, secret)
	if err != nil || !created || k.Fingerprint != fp {
		t.Fatalf("ImportBackupSecret = %+v, %v, %v; want a new pair with fingerprint %s", k, created, err, fp)
	}
	if again, created, err := tok.ImportBackupSecret(ctx, secret); err != nil || created || again != k {
		t.Fatalf("importing the same secret again = %+v, %v, %v; want the existing pair", again, created, err)
	}
	if _, _, err := tok.ImportBackupSecret(ctx, secret[:32]); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("a 32-byte secret: %v", err)
	}
	pairs, err := tok.BackupKEKs(ctx)
	if err != nil || len(pairs) < 2 || pairs[0].Label != "hsmkms-backup-1" {
		t.Fatalf("BackupKEKs = %+v, %v; want InitKeys' pair 1 and the imported one", pairs, err)
	}

	// The seal is standard HMAC-SHA256 under the second half of the secret.
	data := []byte("seal me")
	mac, err := tok.BackupMAC(ctx, k, data)
	if err != nil {
		t.Fatal(err)
	}
	h := hmac.New(sha256.New, secret[32:])
	h.Write(data)
	if !bytes.Equal(mac, h.Sum(nil)) {
		t.Fatalf("BackupMAC differs from HMAC-SHA256 under the seal key")
	}

	// Rewrap master -> backup KEK -> master keeps the key.
	w, _, err := tok.Generate(ctx, 256)
	if err != nil {
		t.Fatal(err)
	}
	key := hsm.Key{ID: "rewrap", Kind: hsm.KindAES, Wrapped: w}
	before, err := tok.ExportPlain(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	wb, err := tok.Rewrap(ctx, w, hsm.KindSecret, k.Label)
	if err != nil || wb.KEK != k.Label || len(wb.Blob) != len(w.Blob) || bytes.Equal(wb.Blob, w.Blob) {
		t.Fatalf("Rewrap to the backup KEK = %v, %v", wb, err)
	}
	back, err := tok.Rewrap(ctx, wb, hsm.KindAES, w.KEK)
	if err != nil {
		t.Fatal(err)
	}
	after, err := tok.ExportPlain(ctx, hsm.Key{ID: "rewrap-2", Kind: hsm.KindAES, Wrapped: back})
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the key changed through two rewraps (%v)", err)
	}
	bad := bytes.Clone(wb.Blob)
	bad[3] ^= 1
	for _, tc := range []struct {
		name string
		w    hsm.Wrapped
		kind hsm.KeyKind
		to   string
		want error
	}{
		{"tampered blob", hsm.Wrapped{Blob: bad, KEK: k.Label}, hsm.KindSecret, w.KEK, hsm.ErrBadCiphertext},
		{"unknown source KEK", hsm.Wrapped{Blob: wb.Blob, KEK: "no-such-kek"}, hsm.KindSecret, w.KEK, hsm.ErrNotFound},
		{"unknown target KEK", wb, hsm.KindSecret, "hsmkms-master-99", hsm.ErrNotFound},
		{"short blob", hsm.Wrapped{Blob: make([]byte, 8), KEK: k.Label}, hsm.KindSecret, w.KEK, hsm.ErrInvalidInput},
		{"bad kind", wb, hsm.KeyKind(99), w.KEK, hsm.ErrInvalidInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tok.Rewrap(ctx, tc.w, tc.kind, tc.to); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
