package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Validity periods of what init creates; `certs issue --days` overrides the client one.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 2 * 365 * 24 * time.Hour
	ClientValidity = 2 * 365 * 24 * time.Hour
)

// backdate is subtracted from NotBefore so a client whose clock runs a little behind
// still accepts a certificate issued a moment ago.
const backdate = time.Hour

// Role is what a client certificate's holder may do on the appliance.
type Role string

// Roles and the Subject OrganizationalUnit values that carry them.
const (
	RoleAdmin  Role = "admin"
	RoleClient Role = "client"

	OUAdmin  = "hsmkms-admin"
	OUClient = "hsmkms-client"
)

// ParseRole accepts "admin" or "client".
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleClient:
		return r, nil
	}
	return "", fmt.Errorf("parse role %q: want admin or client", s)
}

func (r Role) ou() string {
	if r == RoleAdmin {
		return OUAdmin
	}
	return OUClient
}

// RoleOf reads the role a certificate carries; ok is false when its subject has no
// hsmkms OU. A certificate carrying both is an admin only if it says nothing else,
// so an ambiguous one falls back to client.
func RoleOf(cert *x509.Certificate) (role Role, ok bool) {
	if cert == nil {
		return "", false
	}
	ous := cert.Subject.OrganizationalUnit
	admin, client := slices.Contains(ous, OUAdmin), slices.Contains(ous, OUClient)
	switch {
	case admin && !client:
		return RoleAdmin, true
	case client:
		return RoleClient, true
	}
	return "", false
}

// Files is where an appliance keeps its PKI.
type Files struct {
	Dir     string // DIR/pki, mode 0700
	CA      string // ca.pem: the CA certificate clients and the server trust
	CAKey   string // ca-key.pem, 0600
	Cert    string // server.pem
	Key     string // server-key.pem, 0600
	Admin   string // admin.pem: administrator certificate and key in one file, 0600
	Issued  string // issued/: a copy of every certificate issued, without keys
	Revoked string // revoked.txt: serials the server refuses (see Revoke)
}

// Layout returns the file names inside dir.
func Layout(dir string) Files {
	return Files{
		Dir:     dir,
		CA:      filepath.Join(dir, "ca.pem"),
		CAKey:   filepath.Join(dir, "ca-key.pem"),
		Cert:    filepath.Join(dir, "server.pem"),
		Key:     filepath.Join(dir, "server-key.pem"),
		Admin:   filepath.Join(dir, "admin.pem"),
		Issued:  filepath.Join(dir, "issued"),
		Revoked: filepath.Join(dir, RevokedName),
	}
}

// CA signs certificates.
type CA struct {
	Cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	issued string // directory recording issued certificates; "" records nothing
}

// Request describes a certificate to issue.
type Request struct {
	CommonName string
	Role       Role     // client certificates only
	SANs       []string // server certificates only: DNS names or IP addresses
	Server     bool
	Validity   time.Duration
}

// ServerRequest asks for the server certificate: SANs localhost, 127.0.0.1, ::1 and sans.
func ServerRequest(sans []string, validity time.Duration) Request {
	all := []string{"localhost", "127.0.0.1", "::1"}
	for _, s := range sans {
		if !slices.Contains(all, s) {
			all = append(all, s)
		}
	}
	return Request{CommonName: "hsmkms server", SANs: all, Server: true, Validity: validity}
}

// ClientRequest asks for a client certificate whose identity is name.
func ClientRequest(name string, role Role, validity time.Duration) Request {
	return Request{CommonName: name, Role: role, Validity: validity}
}

// Bundle is an issued certificate with its new private key.
type Bundle struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte // PKCS#8
}

// PEM is the certificate followed by the key, the single-file form mongod's
// kmipClientCertificateFile and the MongoDB drivers' tlsCertificateKeyFile take.
func (b *Bundle) PEM() []byte {
	return append(append([]byte{}, b.CertPEM...), b.KeyPEM...)
}

// NewCA creates a CA in memory.
func NewCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ca key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	// Part of the serial in the name keeps two appliances' CAs apart in a trust store.
	tag := serial.Text(16)
	tag = tag[:min(len(tag), 8)]
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"hsmkms"}, CommonName: "hsmkms CA " + tag},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate: %w", err)
	}
	return &CA{Cert: cert, key: key}, nil
}

// Issue signs a new certificate for a new P-256 key.
func (ca *CA) Issue(req Request, now time.Time) (*Bundle, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key for %q: %w", req.CommonName, err)
	}
	b, err := ca.Certify(req, &key.PublicKey, now)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key for %q: %w", req.CommonName, err)
	}
	b.KeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return b, nil
}

// Certify signs a certificate for a public key whose private half the CA never sees
// (the TLS key kept in the token); the Bundle has no KeyPEM.
func (ca *CA) Certify(req Request, pub crypto.PublicKey, now time.Time) (*Bundle, error) {
	if req.CommonName == "" {
		return nil, errors.New("issue certificate: empty name")
	}
	if req.Validity <= 0 {
		return nil, fmt.Errorf("issue certificate %q: validity %v is not positive", req.CommonName, req.Validity)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(req.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		// A certificate outliving its CA would fail verification anyway.
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"hsmkms"}, CommonName: req.CommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	if req.Server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, s := range req.SANs {
			if ip := net.ParseIP(s); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, s)
			}
		}
	} else {
		if _, err := ParseRole(string(req.Role)); err != nil {
			return nil, fmt.Errorf("issue certificate %q: %w", req.CommonName, err)
		}
		tmpl.Subject.OrganizationalUnit = []string{req.Role.ou()}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", req.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate %q: %w", req.CommonName, err)
	}
	return &Bundle{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// IssueFile issues req and writes the bundle (certificate and key) to path, mode 0600.
// It refuses to overwrite path.
func (ca *CA) IssueFile(path string, req Request, now time.Time) (*Bundle, error) {
	b, err := ca.Issue(req, now)
	if err != nil {
		return nil, err
	}
	if err := WriteFile(path, b.PEM(), 0o600); err != nil {
		return nil, err
	}
	if err := ca.record(b); err != nil {
		return nil, err
	}
	return b, nil
}

// record keeps a copy of the certificate (never the key) for `certs list`.
func (ca *CA) record(b *Bundle) error {
	if ca.issued == "" {
		return nil
	}
	if err := os.MkdirAll(ca.issued, 0o700); err != nil {
		return fmt.Errorf("record certificate: %w", err)
	}
	return WriteFile(filepath.Join(ca.issued, b.Cert.SerialNumber.Text(16)+".pem"), b.CertPEM, 0o644)
}

// Create makes a new PKI in f.Dir: the CA, the server certificate for sans (plus the
// loopback names) and the administrator bundle. It refuses if any of its files exists.
func Create(f Files, sans []string, now time.Time) (*CA, error) {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pki %s: %w", f.Dir, err)
	}
	if err := os.Chmod(f.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pki %s: %w", f.Dir, err)
	}
	ca, err := NewCA(now)
	if err != nil {
		return nil, err
	}
	ca.issued = f.Issued
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("encode ca key: %w", err)
	}
	if err := WriteFile(f.CAKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := WriteFile(f.CA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644); err != nil {
		return nil, err
	}
	srv, err := ca.Issue(ServerRequest(sans, ServerValidity), now)
	if err != nil {
		return nil, err
	}
	if err := WriteFile(f.Key, srv.KeyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := WriteFile(f.Cert, srv.CertPEM, 0o644); err != nil {
		return nil, err
	}
	if err := ca.record(srv); err != nil {
		return nil, err
	}
	if _, err := ca.IssueFile(f.Admin, ClientRequest("admin", RoleAdmin, ClientValidity), now); err != nil {
		return nil, err
	}
	return ca, nil
}

// LoadCA reads the CA certificate and key made by Create.
func LoadCA(f Files) (*CA, error) {
	certs, err := readCerts(f.CA)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(f.CAKey)
	if err != nil {
		return nil, fmt.Errorf("read ca key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("read ca key %s: no PKCS#8 PRIVATE KEY block", f.CAKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse ca key %s: %w", f.CAKey, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, fmt.Errorf("load ca: key %s does not belong to certificate %s", f.CAKey, f.CA)
	}
	return &CA{Cert: certs[0], key: key, issued: f.Issued}, nil
}

// List returns the certificates recorded in f.Issued, oldest first.
func List(f Files) ([]*x509.Certificate, error) {
	entries, err := os.ReadDir(f.Issued)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	var out []*x509.Certificate
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".pem") {
			continue
		}
		certs, err := readCerts(filepath.Join(f.Issued, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, certs[0])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotBefore.Before(out[j].NotBefore) })
	return out, nil
}

// ServerTLS builds the server's TLS configuration: TLS 1.2 and 1.3, a client
// certificate signed by the CA in caPath required, and only ECDHE key exchange with
// AEAD ciphers for TLS 1.2 (Go chooses the TLS 1.3 suites, all AEAD).
func ServerTLS(caPath, certPath, keyPath string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("load server certificate %s and key %s: %w", certPath, keyPath, err)
	}
	return serverTLS(caPath, pair)
}

// serverTLS is ServerTLS for a loaded certificate and key.
func serverTLS(caPath string, pair tls.Certificate) (*tls.Config, error) {
	cas, err := readCerts(caPath)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}, nil
}

// WriteFile creates path with perm and writes data; it never overwrites an existing
// file (O_EXCL), so a second init or issue cannot destroy a key.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("write %s: %w (refusing to overwrite; remove it or choose another name)", path, err)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("read certificate %s: no CERTIFICATE block", path)
	}
	return out, nil
}

func newSerial() (*big.Int, error) {
	// 127 bits keep the serial positive in DER and comfortably unique.
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
