//go:build e2e

package test

// The CLI suite: init, serve, certs and keys as an operator runs them. TestMain and
// hsmkmsBin are in main_e2e_test.go.

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/test/framework"
)

func TestInitFiles(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{NoServe: true, SANs: []string{"kms.test", "192.0.2.7"}})

	modes := []struct {
		path string
		mode fs.FileMode
	}{
		{"", fs.ModeDir | 0o700},
		{"hsmkms.toml", 0o600},
		{"hsmkms.db", 0o600},
		{"softhsm", fs.ModeDir | 0o700},
		{"softhsm/user.pin", 0o600},
		{"softhsm/so.pin", 0o600},
		{"pki", fs.ModeDir | 0o700},
		{"pki/ca.pem", 0o644},
		{"pki/ca-key.pem", 0o600},
		{"pki/server.pem", 0o644},
		{"pki/server-key.pem", 0o600},
		{"pki/admin.pem", 0o600},
	}
	for _, m := range modes {
		fi, err := os.Stat(filepath.Join(app.Dir, m.path))
		if err != nil {
			t.Errorf("stat %s: %v", m.path, err)
			continue
		}
		if fi.Mode() != m.mode {
			t.Errorf("%s: mode %v, want %v", m.path, fi.Mode(), m.mode)
		}
	}

	// Every file holding a private key is 0600, wherever it is.
	err := filepath.WalkDir(app.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if b := framework.ReadFile(t, path); bytes.Contains(b, []byte("PRIVATE KEY")) {
			if fi, _ := d.Info(); fi.Mode().Perm() != 0o600 {
				t.Errorf("%s holds a private key with mode %v", path, fi.Mode())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The PINs appear in their own files only: not in the config, the database, the
	// token store or the PKI.
	pinFiles := map[string]bool{
		filepath.Join(app.Dir, "softhsm/user.pin"): true,
		filepath.Join(app.Dir, "softhsm/so.pin"):   true,
	}
	var pins [][]byte
	for f := range pinFiles {
		pin := bytes.TrimSpace(framework.ReadFile(t, f))
		if len(pin) < 8 {
			t.Fatalf("%s holds a PIN of %d bytes, want a long random one", f, len(pin))
		}
		pins = append(pins, pin)
	}
	err = filepath.WalkDir(app.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || pinFiles[path] {
			return err
		}
		b := framework.ReadFile(t, path)
		for _, pin := range pins {
			if bytes.Contains(b, pin) {
				t.Errorf("%s contains a PIN", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// init refuses to overwrite, and changes nothing when it refuses.
	before := framework.ReadFile(t, app.AdminPEM)
	res := app.CLI(t, "init", "--dir", app.Dir)
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "refusing to overwrite") {
		t.Errorf("second init: exit %d, stderr %q; want a refusal", res.ExitCode, res.Stderr)
	}
	if !bytes.Equal(before, framework.ReadFile(t, app.AdminPEM)) {
		t.Error("refused init changed admin.pem")
	}
	// A directory holding only the token is refused too.
	partial := t.TempDir()
	if err := os.Mkdir(filepath.Join(partial, "softhsm"), 0o700); err != nil {
		t.Fatal(err)
	}
	if res := app.CLI(t, "init", "--dir", partial); res.ExitCode == 0 {
		t.Error("init accepted a directory with an existing softhsm/")
	}
}

func TestServeTLSAndShutdown(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	if err := app.Server.WaitForLog("serving", framework.StartTimeout); err != nil {
		t.Fatal(err)
	}
	ca := framework.ReadFile(t, app.CAPEM)
	admin, err := framework.ClientTLS(framework.ReadFile(t, app.AdminPEM), ca)
	if err != nil {
		t.Fatal(err)
	}
	anonymous := admin.Clone()
	anonymous.Certificates = nil

	tests := []struct {
		name    string
		cfg     *tls.Config
		version uint16
		wantOK  bool
	}{
		{"admin TLS 1.3", admin, tls.VersionTLS13, true},
		{"admin TLS 1.2", admin, tls.VersionTLS12, true},
		{"no client certificate TLS 1.3", anonymous, tls.VersionTLS13, false},
		{"no client certificate TLS 1.2", anonymous, tls.VersionTLS12, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg.Clone()
			cfg.MinVersion, cfg.MaxVersion = tt.version, tt.version
			err := handshake(app.Addr, cfg)
			if tt.wantOK && err != nil {
				t.Errorf("handshake: %v", err)
			}
			if !tt.wantOK && err == nil {
				t.Error("handshake succeeded without a client certificate")
			}
		})
	}

	// A second server on the same appliance fails at once with a clear message.
	res := app.CLI(t, "serve", "--listen", framework.FreeAddr(t))
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "holds the appliance lock") {
		t.Errorf("second serve on one appliance: exit %d, stderr %q", res.ExitCode, res.Stderr)
	}

	start := time.Now()
	if err := app.Server.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := app.Server.Wait(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
	t.Logf("stopped in %v", time.Since(start))
	if c, err := net.DialTimeout("tcp", app.Addr, time.Second); err == nil {
		c.Close()
		t.Error("port still accepts connections after shutdown")
	}
}

// handshake completes a TLS handshake and then waits briefly for the server's
// verdict: in TLS 1.3 the server checks the client certificate after the client's
// handshake returned, and reports a rejection with an alert on the next read.
func handshake(addr string, cfg *tls.Config) error {
	host, _, _ := net.SplitHostPort(addr)
	cfg.ServerName = host
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil // still connected: the server accepted us and waits for a request
	}
	if err == nil {
		return errors.New("server sent data before any request")
	}
	return err
}

func TestCertsAndKeysCLI(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})

	bundle := app.IssueClient(t, "mongod-1", "client")
	if fi, err := os.Stat(bundle); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("bundle %s: %v, %v; want mode 0600", bundle, fi.Mode(), err)
	}
	cfg, err := framework.ClientTLS(framework.ReadFile(t, bundle), framework.ReadFile(t, app.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(app.Addr, cfg); err != nil {
		t.Errorf("handshake with an issued client bundle: %v", err)
	}
	res := app.CLI(t, "certs", "issue", "--name", "mongod-1", "--role", "client", "--out", bundle)
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "refusing to overwrite") {
		t.Errorf("issue over an existing file: exit %d, stderr %q", res.ExitCode, res.Stderr)
	}
	if res := app.CLI(t, "certs", "issue", "--name", "x", "--role", "root", "--out", bundle+".2"); res.ExitCode == 0 {
		t.Error("certs issue accepted role root")
	}
	list := app.MustCLI(t, "certs", "list")
	for _, want := range []string{"admin", "mongod-1", "hsmkms server"} {
		if !strings.Contains(list, want) {
			t.Errorf("certs list lacks %q:\n%s", want, list)
		}
	}

	// keys works on the empty database while serve runs.
	if out := app.MustCLI(t, "keys", "list"); !strings.Contains(out, "0 objects") {
		t.Errorf("keys list on an empty store:\n%s", out)
	}
	var objs []json.RawMessage
	out := app.MustCLI(t, "keys", "list", "--json")
	if err := json.Unmarshal([]byte(out), &objs); err != nil || len(objs) != 0 {
		t.Errorf("keys list --json = %q (%v), want []", out, err)
	}
	res = app.CLI(t, "keys", "show", "no-such-id")
	if res.ExitCode != 1 || !strings.Contains(res.Stderr, "no such object") {
		t.Errorf("keys show of a missing ID: exit %d, stderr %q", res.ExitCode, res.Stderr)
	}
	res = app.CLI(t, "keys", "grant", "no-such-id", "mongod-1")
	if res.ExitCode != 1 || !strings.Contains(res.Stderr, "no such object") {
		t.Errorf("keys grant on a missing ID: exit %d, stderr %q", res.ExitCode, res.Stderr)
	}
	if out := app.MustCLI(t, "version"); !strings.HasPrefix(out, "hsmkms ") {
		t.Errorf("version = %q", out)
	}
	app.Stop(t)
}

func TestServeStartupErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	// Exit statuses are documented in README: 2 configuration, 3 token, 1 anything else.
	tests := []struct {
		name     string
		spoil    func(t *testing.T, dir string)
		listen   string
		wantCode int
		wantErr  string
	}{
		{"missing config", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "hsmkms.toml")) }, "", 2, "hsmkms init --dir"},
		{"missing PIN file", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "softhsm/user.pin")) }, "", 3, "hsm.pin_file"},
		{"wrong PIN", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "softhsm/user.pin"), []byte("00000000"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "", 3, "PIN"},
		{"bad config key", func(t *testing.T, dir string) {
			f, err := os.OpenFile(filepath.Join(dir, "hsmkms.toml"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fmt.Fprintln(f, "lisen = \"x\"")
		}, "", 2, "lisen"},
		{"busy port", func(*testing.T, string) {}, busy.Addr().String(), 1, "address already in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{NoServe: true})
			tt.spoil(t, app.Dir)
			listen := tt.listen
			if listen == "" {
				listen = framework.FreeAddr(t)
			}
			res := app.CLI(t, "serve", "--listen", listen)
			if res.ExitCode != tt.wantCode {
				t.Fatalf("serve exited %d, want %d; stderr:\n%s", res.ExitCode, tt.wantCode, res.Stderr)
			}
			last := lastLine(res.Stderr)
			if !strings.HasPrefix(last, "hsmkms: ") || !strings.Contains(last, tt.wantErr) {
				t.Errorf("last stderr line %q: want an hsmkms: error mentioning %q", last, tt.wantErr)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
