package backup_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/backup"
	"github.com/hsmkms/hsmkms/hsm"
)

type sealed struct {
	file []byte
	pass []byte
}

func splitAndSeal(t *testing.T, secret []byte, n, k int) []sealed {
	t.Helper()
	fp, err := hsm.BackupFingerprint(secret)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("custodian-%d", i+1))
	}
	shares, err := backup.SplitSecret(secret, k, names)
	if err != nil {
		t.Fatal(err)
	}
	var out []sealed
	for i, s := range shares {
		pass := []byte(fmt.Sprintf("correct horse %d battery", i))
		b, err := backup.SealShare(backup.ShareInfo{Custodian: names[i], Index: int(s.X), Threshold: k, Shares: n,
			Fingerprint: fp, ApplianceID: "a", Created: time.Now().UTC()}, s.Y, pass)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, s.Y) {
			t.Fatalf("share file holds the share in the clear")
		}
		out = append(out, sealed{b, pass})
	}
	return out
}

// opened is a share file opened with its passphrase (scrypt is slow under
// the race detector, so each file is opened once).
type opened struct {
	info backup.ShareInfo
	y    []byte
	err  error
}

func open(f sealed) opened {
	info, y, err := backup.OpenShare(f.file, f.pass)
	return opened{info, y, err}
}

func combine(shares []opened) ([]byte, error) {
	var infos []backup.ShareInfo
	var ys [][]byte
	for _, s := range shares {
		if s.err != nil {
			return nil, s.err
		}
		infos, ys = append(infos, s.info), append(ys, s.y)
	}
	return backup.CombineShares(infos, ys)
}

func TestShares(t *testing.T) {
	t.Parallel()
	secret := make([]byte, hsm.BackupSecretSize)
	rand.Read(secret)
	files := splitAndSeal(t, secret, 5, 3)
	var o []opened
	for _, f := range files {
		o = append(o, open(f))
	}
	other := make([]byte, hsm.BackupSecretSize)
	rand.Read(other)
	stranger := open(splitAndSeal(t, other, 2, 2)[1])

	changed := bytes.Clone(files[1].file)
	var m map[string]any
	json.Unmarshal(changed, &m)
	m["share"].(map[string]any)["threshold"] = 2
	changed, _ = json.Marshal(m)

	for _, tc := range []struct {
		name    string
		shares  []opened
		wantErr error
	}{
		{"three", []opened{o[0], o[2], o[4]}, nil},
		{"other three", []opened{o[3], o[1], o[2]}, nil},
		{"all five", o, nil},
		{"two", o[:2], backup.ErrTooFewShares},
		{"none", nil, backup.ErrTooFewShares},
		{"wrong passphrase", []opened{o[0], o[1], open(sealed{files[2].file, files[3].pass})}, backup.ErrShare},
		{"repeated", []opened{o[0], o[1], o[1]}, backup.ErrShare},
		{"another secret's share", []opened{o[0], o[1], stranger}, backup.ErrShare},
		{"threshold lowered in the file", []opened{o[0], open(sealed{changed, files[1].pass})}, backup.ErrShare},
		{"not JSON", []opened{o[0], o[1], open(sealed{[]byte("garbage"), files[2].pass})}, backup.ErrShare},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := combine(tc.shares)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && !bytes.Equal(got, secret) {
				t.Fatalf("combined another secret")
			}
		})
	}
	if _, err := backup.SealShare(backup.ShareInfo{Custodian: "x"}, []byte("y"), []byte("short")); !errors.Is(err, backup.ErrShare) {
		t.Errorf("short passphrase: %v", err)
	}
	if _, err := backup.SplitSecret(secret, 2, []string{"a", "../etc"}); !errors.Is(err, backup.ErrShare) {
		t.Errorf("custodian name with a path: %v", err)
	}
	if _, err := backup.SplitSecret(secret, 2, []string{"a", "a"}); !errors.Is(err, backup.ErrShare) {
		t.Errorf("custodian named twice: %v", err)
	}
}
