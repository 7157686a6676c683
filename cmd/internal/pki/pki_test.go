package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestPKI(t *testing.T, sans ...string) (Files, *CA) {
	t.Helper()
	f := Layout(filepath.Join(t.TempDir(), "pki"))
	ca, err := Create(f, sans, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return f, ca
}

func readOne(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	certs, err := readCerts(path)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func TestCreateFiles(t *testing.T) {
	t.Parallel()
	f, _ := newTestPKI(t)
	tests := []struct {
		path string
		mode fs.FileMode
	}{
		{f.Dir, fs.ModeDir | 0o700},
		{f.CA, 0o644},
		{f.CAKey, 0o600},
		{f.Cert, 0o644},
		{f.Key, 0o600},
		{f.Admin, 0o600},
		{f.Issued, fs.ModeDir | 0o700},
	}
	for _, tt := range tests {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Errorf("stat %s: %v", tt.path, err)
			continue
		}
		if fi.Mode() != tt.mode {
			t.Errorf("%s mode = %v, want %v", filepath.Base(tt.path), fi.Mode(), tt.mode)
		}
	}
	admin, err := os.ReadFile(f.Admin)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(admin), "BEGIN CERTIFICATE") || !strings.Contains(string(admin), "BEGIN PRIVATE KEY") {
		t.Errorf("admin.pem must hold the certificate and the key in one file")
	}
	for _, p := range []string{f.CA, f.Cert} {
		if b, _ := os.ReadFile(p); strings.Contains(string(b), "PRIVATE KEY") {
			t.Errorf("%s holds a private key", p)
		}
	}
	listed, err := List(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 {
		t.Errorf("List = %d certificates, want server and admin", len(listed))
	}
	if _, err := Create(f, nil, time.Now()); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second Create error = %v, want fs.ErrExist", err)
	}
}

func TestServerCertificate(t *testing.T) {
	t.Parallel()
	f, _ := newTestPKI(t, "kms.example.com", "10.1.2.3", "fd00::5", "localhost")
	ca, srv := readOne(t, f.CA), readOne(t, f.Cert)
	if !slices.Equal(srv.DNSNames, []string{"localhost", "kms.example.com"}) {
		t.Errorf("DNS SANs = %q", srv.DNSNames)
	}
	var ips []string
	for _, ip := range srv.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(ips, []string{"127.0.0.1", "::1", "10.1.2.3", "fd00::5"}) {
		t.Errorf("IP SANs = %q", ips)
	}
	if !slices.Equal(srv.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("server EKU = %v, want serverAuth only", srv.ExtKeyUsage)
	}
	if d := srv.NotAfter.Sub(srv.NotBefore); d < ServerValidity || d > ServerValidity+2*backdate {
		t.Errorf("server validity = %v", d)
	}
	if d := ca.NotAfter.Sub(ca.NotBefore); d < CAValidity {
		t.Errorf("ca validity = %v", d)
	}
	if !ca.IsCA || !ca.MaxPathLenZero {
		t.Errorf("ca: IsCA=%v MaxPathLenZero=%v", ca.IsCA, ca.MaxPathLenZero)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, host := range []string{"localhost", "kms.example.com", "127.0.0.1", "::1", "10.1.2.3"} {
		if _, err := srv.Verify(x509.VerifyOptions{DNSName: host, Roots: pool}); err != nil {
			t.Errorf("verify server for %s: %v", host, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{DNSName: "other.example.com", Roots: pool}); err == nil {
		t.Error("server certificate verified for a name it does not carry")
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("server certificate verified as a client certificate")
	}
}

func TestIssueClient(t *testing.T) {
	t.Parallel()
	f, ca := newTestPKI(t)
	other, err := NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		role     Role
		validity time.Duration
		wantOU   string
		wantErr  bool
	}{
		{"mongod-1", RoleClient, 24 * time.Hour, OUClient, false},
		{"ops", RoleAdmin, ClientValidity, OUAdmin, false},
		{"nobody", Role("root"), time.Hour, "", true},
		{"", RoleClient, time.Hour, "", true},
		{"expired", RoleClient, 0, "", true},
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ca.Issue(ClientRequest(tt.name, tt.role, tt.validity), time.Now())
			if tt.wantErr {
				if err == nil {
					t.Fatal("Issue succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := b.Cert.Subject.OrganizationalUnit; !slices.Equal(got, []string{tt.wantOU}) {
				t.Errorf("OU = %q, want %q", got, tt.wantOU)
			}
			if role, ok := RoleOf(b.Cert); !ok || role != tt.role {
				t.Errorf("RoleOf = %q, %v; want %q", role, ok, tt.role)
			}
			if b.Cert.Subject.CommonName != tt.name {
				t.Errorf("CN = %q", b.Cert.Subject.CommonName)
			}
			if !slices.Equal(b.Cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
				t.Errorf("client EKU = %v, want clientAuth only", b.Cert.ExtKeyUsage)
			}
			if _, err := b.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("verify client: %v", err)
			}
			otherPool := x509.NewCertPool()
			otherPool.AddCert(other.Cert)
			if _, err := b.Cert.Verify(x509.VerifyOptions{Roots: otherPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
				t.Error("client certificate verified under a foreign CA")
			}
			if _, err := tls.X509KeyPair(b.PEM(), b.PEM()); err != nil {
				t.Errorf("bundle is not a usable key pair: %v", err)
			}
		})
	}
	admin := readOne(t, f.Admin)
	if role, ok := RoleOf(admin); !ok || role != RoleAdmin || admin.Subject.CommonName != "admin" {
		t.Errorf("admin.pem: role %q ok %v CN %q", role, ok, admin.Subject.CommonName)
	}
}

func TestRoleOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		ous    []string
		want   Role
		wantOK bool
	}{
		{"admin", []string{OUAdmin}, RoleAdmin, true},
		{"client", []string{OUClient}, RoleClient, true},
		{"both is client", []string{OUAdmin, OUClient}, RoleClient, true},
		{"foreign OU", []string{"engineering"}, "", false},
		{"none", nil, "", false},
	}
	for _, tt := range tests {
		c := &x509.Certificate{}
		c.Subject.OrganizationalUnit = tt.ous
		if got, ok := RoleOf(c); got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: RoleOf = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
	if _, ok := RoleOf(nil); ok {
		t.Error("RoleOf(nil) ok")
	}
}

func TestIssueFileAndLoadCA(t *testing.T) {
	t.Parallel()
	f, _ := newTestPKI(t)
	ca, err := LoadCA(f)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "client.pem")
	b, err := ca.IssueFile(out, ClientRequest("py", RoleClient, time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("bundle mode = %v, %v; want 0600", fi.Mode(), err)
	}
	if _, err := ca.IssueFile(out, ClientRequest("py", RoleClient, time.Hour), time.Now()); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second IssueFile error = %v, want fs.ErrExist", err)
	}
	listed, err := List(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 3 || !slices.ContainsFunc(listed, func(c *x509.Certificate) bool { return c.SerialNumber.Cmp(b.Cert.SerialNumber) == 0 }) {
		t.Errorf("List has %d certificates and misses the issued one", len(listed))
	}
	recorded, _ := os.ReadFile(filepath.Join(f.Issued, b.Cert.SerialNumber.Text(16)+".pem"))
	if strings.Contains(string(recorded), "PRIVATE KEY") {
		t.Error("issued/ record holds a private key")
	}
	// A key that does not match the certificate is refused with both names.
	g := f
	g.CAKey = f.Key
	if _, err := LoadCA(g); err == nil || !strings.Contains(err.Error(), f.Key) {
		t.Errorf("LoadCA with the wrong key: %v", err)
	}
}

func TestServerTLSHandshake(t *testing.T) {
	t.Parallel()
	f, ca := newTestPKI(t)
	srvCfg, err := ServerTLS(f.CA, f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	admin, err := tls.LoadX509KeyPair(f.Admin, f.Admin)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := foreign.Issue(ClientRequest("stranger", RoleAdmin, time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	strangerPair, err := tls.X509KeyPair(stranger.CertPEM, stranger.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     *tls.Config
		wantErr bool
	}{
		{"admin tls1.3", &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{admin}}, false},
		{"admin tls1.2", &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{admin}, MaxVersion: tls.VersionTLS12}, false},
		{"no client certificate", &tls.Config{RootCAs: pool, ServerName: "localhost"}, true},
		{"foreign client certificate", &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{strangerPair}}, true},
		{"tls1.1", &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{admin}, MaxVersion: tls.VersionTLS11}, true},
		{"cbc suite only", &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{admin}, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := net.Pipe()
			defer c.Close()
			defer s.Close()
			srvErr := make(chan error, 1)
			go func() {
				conn := tls.Server(s, srvCfg)
				err := conn.Handshake()
				if err == nil {
					// TLS 1.3 verifies the client certificate after the client's
					// handshake returns; a read makes the verdict reach the client.
					_, err = conn.Write([]byte{1})
				}
				s.Close()
				srvErr <- err
			}()
			conn := tls.Client(c, tt.cfg)
			err := conn.Handshake()
			if err == nil {
				_, err = conn.Read(make([]byte, 1))
			}
			c.Close()
			sErr := <-srvErr
			if tt.wantErr != (err != nil || sErr != nil) {
				t.Errorf("client err = %v, server err = %v; want failure %v", err, sErr, tt.wantErr)
			}
		})
	}
}

func TestParseRole(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Role{"admin": RoleAdmin, "client": RoleClient} {
		if got, err := ParseRole(in); err != nil || got != want {
			t.Errorf("ParseRole(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "Admin", "root"} {
		if _, err := ParseRole(in); err == nil {
			t.Errorf("ParseRole(%q) succeeded", in)
		}
	}
}
