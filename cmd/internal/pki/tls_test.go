package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
	"time"
)

// TestServerTLSSuites checks the TLS 1.2 suites: ECDHE key exchange and AEAD ciphers
// only, none of them insecure, and that a client offering nothing else is refused.
func TestServerTLSSuites(t *testing.T) {
	t.Parallel()
	f, ca := newTestPKI(t)
	cfg, err := ServerTLS(f.CA, f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x", cfg.MinVersion)
	}
	insecure := map[uint16]bool{}
	for _, s := range tls.InsecureCipherSuites() {
		insecure[s.ID] = true
	}
	aead := map[uint16]bool{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: true, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: true,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: true, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: true,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: true, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: true,
	}
	if len(cfg.CipherSuites) == 0 {
		t.Fatal("no suite list: Go's defaults include CBC suites")
	}
	for _, id := range cfg.CipherSuites {
		if !aead[id] || insecure[id] {
			t.Errorf("suite %s is not ECDHE with AEAD", tls.CipherSuiteName(id))
		}
	}

	client, err := ca.Issue(ClientRequest("suite-test", RoleClient, time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(client.CertPEM, client.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(f.CA)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	tests := []struct {
		name   string
		suites []uint16
		max    uint16
		ok     bool
	}{
		{"TLS 1.3", nil, tls.VersionTLS13, true},
		{"ECDHE-ECDSA-AES128-GCM", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, tls.VersionTLS12, true},
		{"ECDHE-ECDSA-CHACHA20", []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, tls.VersionTLS12, true},
		{"ECDHE-ECDSA-AES128-CBC", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}, tls.VersionTLS12, false},
		{"RSA key exchange GCM", []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384}, tls.VersionTLS12, false},
		{"TLS 1.1", nil, tls.VersionTLS11, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := handshake(t, cfg, &tls.Config{
				RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{pair},
				CipherSuites: tt.suites, MaxVersion: tt.max, MinVersion: tls.VersionTLS10,
			})
			if (err == nil) != tt.ok {
				t.Errorf("handshake error %v, want success %v", err, tt.ok)
			}
		})
	}
}

// handshake runs one TLS handshake between server and client over a pipe.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() { done <- tls.Server(a, server).Handshake() }()
	cerr := tls.Client(b, client).Handshake()
	b.Close()
	serr := <-done
	if cerr != nil {
		return cerr
	}
	return serr
}

// TestServerTLSSigner builds a config around a signer standing in for the token key
// and refuses one whose key the certificate does not certify.
func TestServerTLSSigner(t *testing.T) {
	t.Parallel()
	f, ca := newTestPKI(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	certPath := f.Dir + "/signer.pem"
	b, err := ca.CertifyFile(certPath, ServerRequest(nil, time.Hour), &key.PublicKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if b.KeyPEM != nil {
		t.Error("Certify returned a key")
	}
	cfg, err := ServerTLSSigner(f.CA, certPath, key)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Certificates[0].PrivateKey != key || len(cfg.CipherSuites) == 0 {
		t.Errorf("config does not use the signer and the suite list")
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := ServerTLSSigner(f.CA, certPath, other); err == nil {
		t.Error("a key the certificate does not certify was accepted")
	}
}
