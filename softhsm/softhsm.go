package softhsm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names inside a provisioned directory.
const (
	confName   = "softhsm2.conf"
	tokensName = "tokens"
	pinName    = "user.pin"
	soPINName  = "so.pin"
)

// ConfEnv is the environment variable SoftHSM2 reads its configuration path
// from at C_Initialize.
const ConfEnv = "SOFTHSM2_CONF"

// moduleCandidates are the places Debian, Ubuntu and source builds install
// the module, in the order FindModule tries them.
var moduleCandidates = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// Provisioned describes a SoftHSM2 token directory made by Provision.
type Provisioned struct {
	Dir       string // the softhsm directory (e.g. DATA/softhsm)
	ConfPath  string // Dir/softhsm2.conf
	Module    string // path of libsofthsm2.so (found by FindModule)
	Label     string
	PINFile   string // Dir/user.pin, mode 0600
	SOPINFile string // Dir/so.pin, mode 0600
}

// Env returns the environment the module needs (SOFTHSM2_CONF), in the shape
// of hsm.Config.SetEnv.
func (p *Provisioned) Env() map[string]string {
	return map[string]string{ConfEnv: p.ConfPath}
}

// Provision creates dir (0700) with a softhsm2.conf, an empty token store and
// random user and SO PIN files. It refuses with ErrExists when the
// configuration already exists. The token itself is initialised later by
// hsm.InitToken, so the PINs never appear on a command line.
func Provision(ctx context.Context, dir, label string) (*Provisioned, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("provision softhsm %s: %w", dir, err)
	}
	if label == "" || len(label) > 32 {
		return nil, fmt.Errorf("provision softhsm %s: token label must be 1 to 32 bytes", dir)
	}
	module, err := FindModule()
	if err != nil {
		return nil, fmt.Errorf("provision softhsm %s: %w", dir, err)
	}
	p, err := describe(dir, label, module)
	if err != nil {
		return nil, fmt.Errorf("provision softhsm %s: %w", dir, err)
	}
	if _, err := os.Stat(p.ConfPath); err == nil {
		return nil, fmt.Errorf("provision softhsm %s: %w", p.ConfPath, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("provision softhsm %s: %w", p.ConfPath, err)
	}
	tokens := filepath.Join(p.Dir, tokensName)
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return nil, fmt.Errorf("provision softhsm %s: %w", tokens, err)
	}
	// MkdirAll leaves an existing directory's mode alone; the PINs and token
	// store must not be readable by anyone else.
	for _, d := range []string{p.Dir, tokens} {
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("provision softhsm %s: %w", d, err)
		}
	}
	for _, f := range []string{p.PINFile, p.SOPINFile} {
		if err := writePIN(f); err != nil {
			return nil, fmt.Errorf("provision softhsm %s: %w", f, err)
		}
	}
	// The conf is written last: its presence is what marks the directory as
	// provisioned, so a crash midway leaves a directory Provision can retry
	// after the stray PIN files are removed.
	conf := fmt.Sprintf("# written by hsmkms; SoftHSM2 reads it through %s\n"+
		"directories.tokendir = %s\n"+
		"objectstore.backend = file\n"+
		"log.level = ERROR\n"+
		"slots.removable = false\n", ConfEnv, tokens)
	if err := writeNew(p.ConfPath, []byte(conf)); err != nil {
		return nil, fmt.Errorf("provision softhsm %s: %w", p.ConfPath, err)
	}
	return p, nil
}

// Load describes a directory made earlier by Provision. It fails with
// ErrNotFound when the configuration or a PIN file is missing.
func Load(dir, label string) (*Provisioned, error) {
	module, err := FindModule()
	if err != nil {
		return nil, fmt.Errorf("load softhsm %s: %w", dir, err)
	}
	p, err := describe(dir, label, module)
	if err != nil {
		return nil, fmt.Errorf("load softhsm %s: %w", dir, err)
	}
	for _, f := range []string{p.ConfPath, p.PINFile, p.SOPINFile} {
		if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("load softhsm %s: %w (run init)", f, ErrNotFound)
		} else if err != nil {
			return nil, fmt.Errorf("load softhsm %s: %w", f, err)
		}
	}
	return p, nil
}

// FindModule returns the first libsofthsm2.so found in the usual install
// locations, or ErrModuleNotFound.
func FindModule() (string, error) {
	for _, m := range moduleCandidates {
		if fi, err := os.Stat(m); err == nil && fi.Mode().IsRegular() {
			return m, nil
		}
	}
	return "", fmt.Errorf("find module (looked in %v): %w", moduleCandidates, ErrModuleNotFound)
}

// describe fills in the paths; SoftHSM2 needs an absolute token directory
// because it resolves it relative to the process's working directory.
func describe(dir, label, module string) (*Provisioned, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return &Provisioned{
		Dir:       abs,
		ConfPath:  filepath.Join(abs, confName),
		Module:    module,
		Label:     label,
		PINFile:   filepath.Join(abs, pinName),
		SOPINFile: filepath.Join(abs, soPINName),
	}, nil
}

func writePIN(path string) error {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	return writeNew(path, []byte(hex.EncodeToString(b[:])+"\n"))
}

// writeNew creates path exclusively (0600) so nothing is ever overwritten.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
