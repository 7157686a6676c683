package pki

import (
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSerial(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"1f2e", "1f2e", false},
		{"0x1F2E", "1f2e", false},
		{"1f:2e", "1f2e", false},
		{"  abc\n", "abc", false},
		{"", "", true},
		{"0", "", true},
		{"xyz", "", true},
		{"-5", "", true},
	}
	for _, tt := range tests {
		got, err := ParseSerial(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseSerial(%q) error %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && got.Text(16) != tt.want {
			t.Errorf("ParseSerial(%q) = %s, want %s", tt.in, got.Text(16), tt.want)
		}
	}
}

func TestRevokeFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), RevokedName)
	added, err := Revoke(path, big.NewInt(0xabc), big.NewInt(0x12))
	if err != nil || len(added) != 2 {
		t.Fatalf("first revoke: %v, added %v", err, added)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("revocation list mode %v (%v), want 0600", fi.Mode(), err)
	}
	added, err = Revoke(path, big.NewInt(0xabc), big.NewInt(0x99))
	if err != nil || len(added) != 1 || added[0].Int64() != 0x99 {
		t.Fatalf("second revoke: %v, added %v; want only 99", err, added)
	}
	got, err := ReadRevoked(path)
	if err != nil || len(got) != 3 || !got["abc"] || !got["12"] || !got["99"] {
		t.Fatalf("list %v, %v", got, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	if _, err := Revoke(path, big.NewInt(0)); err == nil {
		t.Error("serial 0 accepted")
	}
	if err := os.WriteFile(path, []byte("abc\nnot-hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRevoked(path); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("malformed list: %v, want an error naming line 2", err)
	}
}

// TestRevocationListReloads changes the file under a RevocationList: each change is
// seen on the next call, a broken file keeps the last good list, a removed one
// revokes nothing.
func TestRevocationListReloads(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), RevokedName)
	cert := func(serial int64) *x509.Certificate { return &x509.Certificate{SerialNumber: big.NewInt(serial)} }
	l := NewRevocationList(path, nil)
	if l.Revoked(cert(0xabc)) {
		t.Fatal("revoked without a list")
	}
	if _, err := Revoke(path, big.NewInt(0xabc)); err != nil {
		t.Fatal(err)
	}
	if !l.Revoked(cert(0xabc)) || l.Revoked(cert(0xabd)) {
		t.Fatal("first revocation not seen, or the wrong serial revoked")
	}
	if _, err := Revoke(path, big.NewInt(0xabd)); err != nil {
		t.Fatal(err)
	}
	if !l.Revoked(cert(0xabd)) {
		t.Fatal("second revocation not seen")
	}
	// A broken rewrite (with a new mtime) keeps the last good list.
	if err := os.WriteFile(path, []byte("zz-not-hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute)
	os.Chtimes(path, future, future)
	if !l.Revoked(cert(0xabc)) || !l.Revoked(cert(0xabd)) {
		t.Fatal("a broken list dropped the revocations in force")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if l.Revoked(cert(0xabc)) {
		t.Fatal("still revoked after the list was removed")
	}
	if l.Revoked(nil) || l.Revoked(&x509.Certificate{}) {
		t.Fatal("a certificate without serial is revoked")
	}
}

func TestTokenKeyLabel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		label   string
		ok      bool
		wantErr bool
	}{
		{"pki/server-key.pem", "", false, false},
		{"/etc/hsmkms/key.pem", "", false, false},
		{"pkcs11:object=hsmkms-tls", "hsmkms-tls", true, false},
		{"pkcs11:object=my%20key;type=private", "my key", true, false},
		{"pkcs11:type=private;object=k?pin-source=file:/x", "k", true, false},
		{"pkcs11:", "", true, true},
		{"pkcs11:type=public;object=k", "", true, true},
		{"pkcs11:token=other;object=k", "", true, true},
		{"pkcs11:object=%zz", "", true, true},
	}
	for _, tt := range tests {
		label, ok, err := TokenKeyLabel(tt.in)
		if label != tt.label || ok != tt.ok || (err != nil) != tt.wantErr {
			t.Errorf("TokenKeyLabel(%q) = %q, %v, %v; want %q, %v, error %v", tt.in, label, ok, err, tt.label, tt.ok, tt.wantErr)
		}
	}
}
