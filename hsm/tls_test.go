package hsm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/hsm/hsmtest"
)

// TestTLSKeyInToken generates a TLS key pair in the token, signs with it through
// crypto.Signer (digests, a certificate, a real TLS handshake) and checks that the
// private key cannot be made twice or found under another label.
func TestTLSKeyInToken(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tok := hsmtest.Token(t)
	label := "tls-" + strings.ReplaceAll(t.Name(), "/", "-")
	pub, err := tok.GenerateTLSKey(ctx, label)
	if err != nil {
		t.Fatalf("GenerateTLSKey: %v", err)
	}
	if _, err := tok.GenerateTLSKey(ctx, label); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("second GenerateTLSKey: %v, want ErrInvalidInput", err)
	}
	if _, err := tok.TLSSigner(ctx, label+"-missing"); !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("TLSSigner of a missing label: %v, want ErrNotFound", err)
	}
	signer, err := tok.TLSSigner(ctx, label)
	if err != nil {
		t.Fatalf("TLSSigner: %v", err)
	}
	if !pub.Equal(signer.Public()) {
		t.Fatal("signer's public key differs from the generated one")
	}

	msg := []byte("handshake transcript")
	s256, s384 := sha256.Sum256(msg), sha512.Sum384(msg)
	tests := []struct {
		name    string
		digest  []byte
		hash    crypto.Hash
		wantErr bool
	}{
		{"SHA-256", s256[:], crypto.SHA256, false},
		{"SHA-384", s384[:], crypto.SHA384, false},
		{"length does not match the hash", s256[:], crypto.SHA384, true},
		{"no hash", s256[:], 0, true},
	}
	for _, tt := range tests {
		sig, err := signer.Sign(rand.Reader, tt.digest, tt.hash)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: Sign error %v, wantErr %v", tt.name, err, tt.wantErr)
			continue
		}
		if err == nil && !ecdsa.VerifyASN1(pub, tt.digest, sig) {
			t.Errorf("%s: signature does not verify", tt.name)
		}
	}

	// A self-signed certificate made by the token key serves a TLS 1.2 and a 1.3
	// handshake, which sign with it.
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		t.Fatalf("certificate signed by the token key: %v", err)
	}
	leaf, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	server := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: signer, Leaf: leaf}}}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		a, b := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- tls.Server(a, server).Handshake() }()
		cerr := tls.Client(b, &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: v}).Handshake()
		a.Close()
		b.Close()
		if serr := <-done; cerr != nil || serr != nil {
			t.Errorf("TLS %x handshake: client %v, server %v", v, cerr, serr)
		}
	}
}

// TestProbe checks that each step Probe reports fails on its own cause. A wrong PIN
// cannot be seen here: the shared token keeps this process logged in, and a PKCS#11
// login belongs to the whole process (`config check` runs in its own, and cmd/hsmkms
// tests that case).
func TestProbe(t *testing.T) {
	t.Parallel()
	good := hsmtest.Config(t)
	tests := []struct {
		name   string
		mod    func(*hsm.Config)
		steps  int    // how many steps ran
		failed string // the failing step, "" for none
	}{
		{"all good", func(*hsm.Config) {}, 3, ""},
		{"module missing", func(c *hsm.Config) { c.Module = "/nonexistent/libpkcs11.so" }, 1, hsm.ProbeModule},
		{"no such token", func(c *hsm.Config) { c.TokenLabel = "no-such-token" }, 2, hsm.ProbeToken},
		{"PIN file missing", func(c *hsm.Config) { c.PIN = hsm.PINSource{File: "/nonexistent/pin"} }, 3, hsm.ProbeLogin},
	}
	for _, tt := range tests {
		cfg := good
		tt.mod(&cfg)
		res := hsm.Probe(t.Context(), cfg)
		if len(res) != tt.steps {
			t.Errorf("%s: %d steps ran: %+v", tt.name, len(res), res)
			continue
		}
		for _, r := range res {
			if (r.Err != nil) != (r.Step == tt.failed) {
				t.Errorf("%s: step %q: %v", tt.name, r.Step, r.Err)
			}
		}
	}
	if err := hsmtest.Token(t).Ping(t.Context()); err != nil {
		t.Errorf("the shared token broke after probing: %v", err)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	tok := hsmtest.Open(t)
	st := tok.Stats()
	if st.Sessions <= 0 || st.SessionsInUse != 0 {
		t.Errorf("stats of an idle token: %+v", st)
	}
	// A wrapped blob the token cannot unwrap fails with a CKR code, which is counted.
	bad := hsm.Key{ID: "stats-bad", Kind: hsm.KindAES, Wrapped: hsm.Wrapped{Blob: make([]byte, 40), KEK: hsm.MasterLabel}}
	if _, err := tok.Encrypt(t.Context(), hsm.CipherRequest{Key: bad, Mode: hsm.ModeGCM, Data: []byte("x")}); err == nil {
		t.Fatal("encrypt with a garbage blob succeeded")
	}
	var total uint64
	for name, n := range tok.Stats().Errors {
		if !strings.HasPrefix(name, "CKR_") {
			t.Errorf("error name %q", name)
		}
		total += n
	}
	if total != 1 {
		t.Errorf("errors counted %v, want one", tok.Stats().Errors)
	}
}
