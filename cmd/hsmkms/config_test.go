package main

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/softhsm"
)

// TestConfigCheck makes one appliance, then breaks a copy of it in one way per case:
// exactly the check for that cause fails, and the command fails.
func TestConfigCheck(t *testing.T) {
	if _, err := softhsm.FindModule(); err != nil {
		if os.Getenv("HSMKMS_REQUIRE_SOFTHSM") == "1" {
			t.Fatalf("SoftHSM2 required: %v", err)
		}
		t.Skipf("SoftHSM2 not installed: %v", err)
	}
	base := filepath.Join(t.TempDir(), "appliance")
	if err := initAppliance(t.Context(), io.Discard, initOptions{dir: base, tokenLabel: "check-test"}); err != nil {
		t.Fatalf("init: %v", err)
	}
	other, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(pki.ServerRequest(nil, time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}

	write := func(t *testing.T, path string, data []byte, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(path, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	setKey := func(key, value string) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			path := filepath.Join(dir, config.FileName)
			var out []string
			for _, line := range strings.Split(string(mustRead(t, path)), "\n") {
				if strings.HasPrefix(line, key+" = ") {
					line = key + " = " + value
				}
				out = append(out, line)
			}
			write(t, path, []byte(strings.Join(out, "\n")), 0o600)
		}
	}
	tests := []struct {
		name   string
		breakF func(t *testing.T, dir string)
		failed []string // the checks that must fail, by the name printed after FAIL
	}{
		{"all good", func(*testing.T, string) {}, nil},
		{"certificate from another CA", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "pki", "server.pem"), foreign.CertPEM, 0o644)
		}, []string{"tls.cert", "tls.key"}},
		{"key does not match the certificate", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "pki", "server-key.pem"), foreign.KeyPEM, 0o600)
		}, []string{"tls.key"}},
		{"server key readable by others", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, "pki", "server-key.pem"), 0o644)
		}, []string{"tls.key"}},
		{"CA key missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "pki", "ca-key.pem"))
		}, []string{"ca key"}},
		{"revocation list malformed", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "pki", pki.RevokedName), []byte("not-a-serial\n"), 0o600)
		}, []string{"revocation list"}},
		{"PIN file readable by others", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, "softhsm", "user.pin"), 0o644)
		}, []string{"hsm.pin_file"}},
		{"wrong PIN", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "softhsm", "user.pin"), []byte("wrong-pin\n"), 0o600)
		}, []string{"hsm login"}},
		{"no such token", setKey("token_label", `"no-such-token"`), []string{"hsm.token_label"}},
		{"module missing", setKey("module", `"/nonexistent/libpkcs11.so"`), []string{"hsm.module"}},
		{"module does not load", func(t *testing.T, dir string) {
			lib := filepath.Join(dir, "not-a-library.so")
			write(t, lib, []byte("not an ELF file"), 0o644)
			setKey("module", `"`+lib+`"`)(t, dir)
		}, []string{"hsm.module"}},
		{"database missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "hsmkms.db"))
		}, []string{"store.path"}},
		{"database schema behind", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "hsmkms.db"), nil, 0o600)
		}, []string{"store.path"}},
		{"config invalid", setKey("max_connections", "0"), []string{"config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "copy")
			copyTree(t, base, dir)
			tt.breakF(t, dir)
			var out bytes.Buffer
			err := checkConfig(t.Context(), &out, filepath.Join(dir, config.FileName))
			var failed []string
			for line := range strings.SplitSeq(out.String(), "\n") {
				if rest, ok := strings.CutPrefix(line, "FAIL "); ok {
					name, _, _ := strings.Cut(rest, ": ")
					failed = append(failed, name)
				} else if line != "" && !strings.HasPrefix(line, "ok   ") && line != "all checks passed" {
					t.Errorf("line neither ok nor FAIL: %q", line)
				}
			}
			if !slices.Equal(failed, tt.failed) {
				t.Errorf("failed checks %q, want %q\n%s", failed, tt.failed, out.String())
			}
			if (err != nil) != (len(tt.failed) > 0) {
				t.Errorf("error %v with failures %q", err, failed)
			}
			if strings.Contains(out.String(), strings.TrimSpace(string(mustRead(t, filepath.Join(base, "softhsm", "user.pin"))))) {
				t.Error("the PIN was printed")
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// copyTree copies the regular files and directories under src to dst, keeping modes.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}
