package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
	"github.com/hsmkms/hsmkms/softhsm"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create an appliance: config, token and master key, database, CA, server and admin certificates",
		Description: "Without --hsm-module, a SoftHSM2 token is created in DIR/softhsm with random PINs in\n" +
			"0600 files. With --hsm-module, the named token of that PKCS#11 module is used; the operator\n" +
			"must have initialised it and set its user PIN, which init reads from --pin-file or --pin-env.\n" +
			"init never overwrites: it refuses if DIR already holds an appliance.",
		Flags: []cli.Flag{
			dirFlag(),
			&cli.StringSliceFlag{Name: "san", Usage: "extra DNS `NAME` or IP address for the server certificate (repeatable); localhost, 127.0.0.1 and ::1 are always included"},
			&cli.StringFlag{Name: "hsm-module", Usage: "`PATH` of a real HSM's PKCS#11 library (default: an embedded SoftHSM2 token)"},
			&cli.StringFlag{Name: "token-label", Value: "hsmkms", Usage: "`LABEL` of the token"},
			&cli.StringFlag{Name: "pin-file", Usage: "`FILE` holding the real HSM's user PIN"},
			&cli.StringFlag{Name: "pin-env", Usage: "environment `VAR`iable holding the real HSM's user PIN"},
			&cli.BoolFlag{Name: "tls-key-in-token", Usage: "keep the TLS server key in the token (ECDSA P-256, never exported) instead of pki/server-key.pem"},
		},
		Action: func(c *cli.Context) error {
			return initAppliance(c.Context, c.App.Writer, initOptions{
				dir:        c.String("dir"),
				sans:       c.StringSlice("san"),
				module:     c.String("hsm-module"),
				tokenLabel: c.String("token-label"),
				pinFile:    c.String("pin-file"),
				pinEnv:     c.String("pin-env"),

				tlsKeyInToken: c.Bool("tls-key-in-token"),
			})
		},
	}
}

type initOptions struct {
	dir, module, tokenLabel, pinFile, pinEnv string
	sans                                     []string
	tlsKeyInToken                            bool
}

// initAppliance creates everything in order, the config file last: its presence is
// what makes DIR an appliance. On failure it removes what it created, so the
// operator can fix the cause and run init again.
func initAppliance(ctx context.Context, out io.Writer, o initOptions) (err error) {
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return fmt.Errorf("init %s: %w", o.dir, err)
	}
	embedded := o.module == ""
	if err := o.check(dir, embedded); err != nil {
		return err
	}

	var created []string // removed in reverse order if init fails
	defer func() {
		if err == nil {
			return
		}
		for _, p := range slices.Backward(created) {
			os.RemoveAll(p)
		}
	}()
	if _, statErr := os.Stat(dir); errors.Is(statErr, fs.ErrNotExist) {
		created = append(created, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}

	cfg := config.Default()
	cfg.HSM.TokenLabel = o.tokenLabel
	var report bytes.Buffer
	line := func(what, format string, args ...any) {
		fmt.Fprintf(&report, "  %-13s %s\n", what, fmt.Sprintf(format, args...))
	}

	// The token and its master key.
	if embedded {
		created = append(created, filepath.Join(dir, softhsmDir))
		if err := initSoftHSM(ctx, filepath.Join(dir, softhsmDir), o.tokenLabel); err != nil {
			return err
		}
		line("token", "SoftHSM2 token %q in %s (user PIN in user.pin, SO PIN in so.pin, both 0600)", o.tokenLabel, filepath.Join(dir, softhsmDir))
	} else {
		cfg.HSM.Module, cfg.HSM.SoftHSMConf = o.module, ""
		cfg.HSM.PINFile, cfg.HSM.PINEnv = "", o.pinEnv
		if o.pinFile != "" {
			if cfg.HSM.PINFile, err = filepath.Abs(o.pinFile); err != nil {
				return fmt.Errorf("init --pin-file %s: %w", o.pinFile, err)
			}
		}
		hc := hsm.Config{Module: o.module, TokenLabel: o.tokenLabel, PIN: hsm.PINSource{File: cfg.HSM.PINFile, Env: cfg.HSM.PINEnv}}
		if err := initKeys(ctx, hc, nil); err != nil {
			return fmt.Errorf("init token %q of %s: %w (the operator must initialise the token and its user PIN first)", o.tokenLabel, o.module, err)
		}
		line("token", "%q of %s (PIN from %v)", o.tokenLabel, o.module, hc.PIN)
	}
	line("master key", "%s, inside the token", hsm.MasterLabel)

	// The metadata database, created with its schema.
	dbPath := filepath.Join(dir, cfg.Store.Path)
	created = append(created, dbPath, dbPath+"-wal", dbPath+"-shm")
	st, err := meta.Open(ctx, dbPath, meta.Options{})
	if err != nil {
		return fmt.Errorf("init store %s: %w", dbPath, err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("init store %s: %w", dbPath, err)
	}
	if err := os.Chmod(dbPath, 0o600); err != nil {
		return fmt.Errorf("init store %s: %w", dbPath, err)
	}
	line("database", "%s", dbPath)

	// The PKI.
	files := pki.Layout(filepath.Join(dir, pkiDir))
	created = append(created, files.Dir)
	ca, err := pki.Create(files, o.sans, time.Now())
	if err != nil {
		return fmt.Errorf("init pki %s: %w", files.Dir, err)
	}
	line("CA", "%s (%s; key in ca-key.pem, 0600)", files.CA, ca.Cert.Subject.CommonName)
	line("server cert", "%s for %s (key in server-key.pem, 0600)", files.Cert, strings.Join(pki.ServerRequest(o.sans, pki.ServerValidity).SANs, ", "))
	if o.tlsKeyInToken {
		if err := initTLSKey(ctx, cfg, dir, o, files, ca); err != nil {
			return err
		}
		line("server key", "%s inside the token (server-key.pem removed; tls.key = %q)", hsm.TLSKeyLabel, cfg.TLS.Key)
	}
	line("admin bundle", "%s (certificate and key in one file, 0600, role admin)", files.Admin)

	// The config file, last.
	cfgPath := filepath.Join(dir, config.FileName)
	var b bytes.Buffer
	if err := cfg.Encode(&b); err != nil {
		return err
	}
	created = append(created, cfgPath)
	if err := pki.WriteFile(cfgPath, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("init config: %w", err)
	}
	line("config", "%s", cfgPath)
	if err := recordInit(ctx, cfgPath, o.tokenLabel, o.sans); err != nil {
		return err
	}
	line("audit trail", "first record written, chained with %s inside the token", hsm.AuditLabel)

	fmt.Fprintf(out, "created an appliance in %s:\n%s\nnext: hsmkms serve --dir %s\n", dir, report.String(), o.dir)
	return nil
}

// check validates the flags and refuses a directory that already holds an
// appliance, or part of one.
func (o initOptions) check(dir string, embedded bool) error {
	if embedded && (o.pinFile != "" || o.pinEnv != "") {
		return errors.New("init: --pin-file and --pin-env apply only with --hsm-module (the embedded SoftHSM2 token gets a random PIN in DIR/softhsm/user.pin)")
	}
	if !embedded && (o.pinFile == "") == (o.pinEnv == "") {
		return errors.New("init: with --hsm-module, give exactly one of --pin-file and --pin-env for the token's user PIN")
	}
	if l := len(o.tokenLabel); l == 0 || l > 32 {
		return fmt.Errorf("init: --token-label %q must be 1 to 32 bytes", o.tokenLabel)
	}
	for _, s := range o.sans {
		if s == "" || strings.ContainsAny(s, " \t,/") {
			return fmt.Errorf("init: --san %q is not a DNS name or IP address", s)
		}
	}
	existing := []string{config.FileName, pkiDir, config.Default().Store.Path}
	if embedded {
		existing = append(existing, softhsmDir)
	}
	for _, name := range existing {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("init %s: %s already exists; refusing to overwrite an appliance (use another --dir, or remove %s yourself if you mean to destroy it and every key in it)", dir, p, dir)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("init %s: %w", dir, err)
		}
	}
	return nil
}

// initSoftHSM provisions the embedded token, initialises it through PKCS#11 and
// creates the master key with the SO PIN (the SO marks it trusted).
func initSoftHSM(ctx context.Context, dir, label string) error {
	p, err := softhsm.Provision(ctx, dir, label)
	if err != nil {
		return fmt.Errorf("init softhsm: %w", err)
	}
	soPIN, err := hsm.PINSource{File: p.SOPINFile}.Read()
	if err != nil {
		return fmt.Errorf("init softhsm: %w", err)
	}
	defer clear(soPIN)
	hc := hsm.Config{Module: p.Module, TokenLabel: label, PIN: hsm.PINSource{File: p.PINFile}, SetEnv: p.Env()}
	if err := hsm.InitToken(ctx, hc, soPIN); err != nil {
		return fmt.Errorf("init softhsm token %q: %w", label, err)
	}
	if err := initKeys(ctx, hc, soPIN); err != nil {
		return fmt.Errorf("init softhsm token %q: %w", label, err)
	}
	return nil
}

// initKeys opens the token and creates its long-lived keys (idempotent).
func initKeys(ctx context.Context, hc hsm.Config, soPIN []byte) error {
	tok, err := hsm.Open(ctx, hc)
	if err != nil {
		return err
	}
	if err := tok.InitKeys(ctx, soPIN); err != nil {
		tok.Close()
		return err
	}
	return tok.Close()
}
