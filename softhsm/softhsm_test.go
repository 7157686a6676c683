package softhsm_test

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmkms/hsmkms/softhsm"
)

func requireModule(t *testing.T) {
	t.Helper()
	if _, err := softhsm.FindModule(); err != nil {
		if !errors.Is(err, softhsm.ErrModuleNotFound) || !strings.Contains(err.Error(), "apt-get install softhsm2") {
			t.Fatalf("FindModule error does not name the fix: %v", err)
		}
		if os.Getenv("HSMKMS_REQUIRE_SOFTHSM") == "1" {
			t.Fatalf("SoftHSM2 required: %v", err)
		}
		t.Skipf("SoftHSM2 not installed: %v", err)
	}
}

func TestProvision(t *testing.T) {
	t.Parallel()
	requireModule(t)
	dir := filepath.Join(t.TempDir(), "softhsm")
	p, err := softhsm.Provision(t.Context(), dir, "hsmkms")
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if p.Dir != dir || p.Label != "hsmkms" || p.ConfPath != filepath.Join(dir, "softhsm2.conf") {
		t.Errorf("Provisioned = %+v", p)
	}
	if fi, err := os.Stat(p.Module); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("module %s: %v", p.Module, err)
	}
	for path, mode := range map[string]os.FileMode{
		dir: 0o700 | os.ModeDir, filepath.Join(dir, "tokens"): 0o700 | os.ModeDir,
		p.ConfPath: 0o600, p.PINFile: 0o600, p.SOPINFile: 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode(), err, mode)
		}
	}
	conf, err := os.ReadFile(p.ConfPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"directories.tokendir = " + filepath.Join(dir, "tokens"),
		"objectstore.backend = file",
		"log.level = ERROR",
	} {
		if !strings.Contains(string(conf), line+"\n") {
			t.Errorf("conf lacks %q:\n%s", line, conf)
		}
	}
	pins := map[string]bool{}
	for _, f := range []string{p.PINFile, p.SOPINFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pin := strings.TrimSuffix(string(b), "\n")
		if _, err := hex.DecodeString(pin); err != nil || len(pin) != 32 {
			t.Errorf("%s holds %d chars, want 32 hex", f, len(pin))
		}
		pins[pin] = true
	}
	if len(pins) != 2 {
		t.Errorf("user and SO PIN are equal")
	}
	if got := p.Env(); got["SOFTHSM2_CONF"] != p.ConfPath {
		t.Errorf("Env() = %v", got)
	}

	if _, err := softhsm.Provision(t.Context(), dir, "hsmkms"); !errors.Is(err, softhsm.ErrExists) {
		t.Errorf("second Provision: %v, want ErrExists", err)
	}
	loaded, err := softhsm.Load(dir, "hsmkms")
	if err != nil || *loaded != *p {
		t.Errorf("Load = %+v, %v; want %+v", loaded, err, p)
	}
}

func TestLoadMissing(t *testing.T) {
	t.Parallel()
	requireModule(t)
	if _, err := softhsm.Load(t.TempDir(), "hsmkms"); !errors.Is(err, softhsm.ErrNotFound) {
		t.Errorf("Load of an empty dir: %v, want ErrNotFound", err)
	}
}

func TestProvisionBadLabel(t *testing.T) {
	t.Parallel()
	for _, label := range []string{"", strings.Repeat("x", 33)} {
		if _, err := softhsm.Provision(t.Context(), t.TempDir(), label); err == nil {
			t.Errorf("Provision with label %q succeeded", label)
		}
	}
}
