package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "inspect the appliance configuration",
		Subcommands: []*cli.Command{{
			Name:  "check",
			Usage: "validate DIR/hsmkms.toml and every file it names; exit 1 on any failure",
			Description: "Prints one line per check: the config itself, the CA, the server certificate\n" +
				"(parses, chains to the CA, in date), its key, the CA key, the revocation list, the PIN\n" +
				"file (readable, mode 0600), the PKCS#11 module, the token, the PIN, the master key and\n" +
				"the database (opens, schema current). It changes nothing and works while serve runs.",
			Flags: []cli.Flag{dirFlag()},
			Action: func(c *cli.Context) error {
				path := filepath.Join(c.String("dir"), config.FileName)
				return checkConfig(c.Context, c.App.Writer, path)
			},
		}},
	}
}

// checkReport prints one line per check and remembers failures.
type checkReport struct {
	w      io.Writer
	failed int
}

func (r *checkReport) line(what string, err error, okFormat string, args ...any) {
	if err != nil {
		r.failed++
		fmt.Fprintf(r.w, "FAIL %s: %v\n", what, err)
		return
	}
	fmt.Fprintf(r.w, "ok   %s: %s\n", what, fmt.Sprintf(okFormat, args...))
}

// checkConfig runs every check against the config at path. Checks that depend on an
// earlier one (the certificate chain on the CA) still run and report their own cause.
func checkConfig(ctx context.Context, w io.Writer, path string) error {
	r := &checkReport{w: w}
	cfg, err := config.Load(path)
	r.line("config", err, "%s parses and every key is valid", path)
	if err != nil {
		return errors.New("config check: the config file is invalid; nothing else was checked")
	}
	checkPKI(r, cfg)
	checkHSM(ctx, r, cfg)
	checkStore(ctx, r, cfg)
	if r.failed > 0 {
		return fmt.Errorf("config check: %d check(s) failed", r.failed)
	}
	fmt.Fprintln(w, "all checks passed")
	return nil
}

func checkPKI(r *checkReport, cfg *config.Config) {
	cas, err := readCertFile(cfg.TLS.CA)
	if err == nil && !cas[0].IsCA {
		err = fmt.Errorf("%s is not a CA certificate", cfg.TLS.CA)
	}
	r.line("tls.ca", err, "%s parses", cfg.TLS.CA)

	certs, err := readCertFile(cfg.TLS.Cert)
	var leaf *x509.Certificate
	if err == nil {
		leaf = certs[0]
		err = verifyServerCert(leaf, cas)
	}
	if leaf != nil {
		r.line("tls.cert", err, "%s chains to the CA, valid until %s", cfg.TLS.Cert, leaf.NotAfter.UTC().Format(time.DateOnly))
	} else {
		r.line("tls.cert", err, "")
	}

	if _, inToken, err := pki.TokenKeyLabel(cfg.TLS.Key); inToken || err != nil {
		if err != nil {
			r.line("tls.key", err, "")
		}
		// A key in the token is checked with the token (checkHSM).
	} else {
		_, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err == nil {
			err = checkKeyMode(cfg.TLS.Key)
		}
		r.line("tls.key", err, "%s matches the certificate, mode 0600", cfg.TLS.Key)
	}

	files := pkiFiles(cfg)
	_, err = pki.LoadCA(files)
	r.line("ca key", err, "%s present and matches %s", files.CAKey, files.CA)

	revoked, err := pki.ReadRevoked(files.Revoked)
	r.line("revocation list", err, "%s: %d serial(s) revoked", files.Revoked, len(revoked))
}

// verifyServerCert checks that leaf chains to one of cas for server authentication
// and is in date now.
func verifyServerCert(leaf *x509.Certificate, cas []*x509.Certificate) error {
	if len(cas) == 0 {
		return errors.New("no CA to verify against (see tls.ca)")
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

func readCertFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no CERTIFICATE block", path)
	}
	return out, nil
}

// checkKeyMode refuses a secret file that others than its owner may read.
func checkKeyMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o; want 0600 (chmod 600 %s)", path, m, path)
	}
	return nil
}

func checkHSM(ctx context.Context, r *checkReport, cfg *config.Config) {
	if cfg.HSM.PINFile != "" {
		_, err := hsm.PINSource{File: cfg.HSM.PINFile}.Read()
		if err == nil {
			err = checkKeyMode(cfg.HSM.PINFile)
		}
		r.line("hsm.pin_file", err, "%s readable, mode 0600", cfg.HSM.PINFile)
	} else {
		_, err := hsm.PINSource{Env: cfg.HSM.PINEnv}.Read()
		r.line("hsm.pin_env", err, "$%s set", cfg.HSM.PINEnv)
	}
	hc, err := hsmConfig(cfg, nil)
	if err != nil {
		r.line("hsm.module", err, "")
		return
	}
	steps := map[string]struct{ name, ok string }{
		hsm.ProbeModule: {"hsm.module", fmt.Sprintf("%s loads", hc.Module)},
		hsm.ProbeToken:  {"hsm.token_label", fmt.Sprintf("token %q found", hc.TokenLabel)},
		hsm.ProbeLogin:  {"hsm login", fmt.Sprintf("the user PIN (%v) logs in", hc.PIN)},
	}
	for _, p := range hsm.Probe(ctx, hc) {
		r.line(steps[p.Step].name, p.Err, "%s", steps[p.Step].ok)
		if p.Err != nil {
			return
		}
	}
	tok, err := hsm.Open(ctx, hc)
	if err != nil {
		r.line("hsm master key", err, "")
		return
	}
	defer tok.Close()
	r.line("hsm master key", tok.Ping(ctx), "present in the token")
	if label, inToken, _ := pki.TokenKeyLabel(cfg.TLS.Key); inToken {
		r.line("tls.key", checkTokenKey(ctx, tok, label, cfg.TLS.Cert), "%s in the token matches %s", cfg.TLS.Key, cfg.TLS.Cert)
	}
}

// checkTokenKey checks that the token holds the TLS key pair label and that certPath
// certifies its public key.
func checkTokenKey(ctx context.Context, tok *hsm.Token, label, certPath string) error {
	signer, err := tok.TLSSigner(ctx, label)
	if err != nil {
		return err
	}
	certs, err := readCertFile(certPath)
	if err != nil {
		return err
	}
	pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(signer.Public()) {
		return fmt.Errorf("%s does not certify the token key %s", certPath, label)
	}
	return nil
}

func checkStore(ctx context.Context, r *checkReport, cfg *config.Config) {
	have, want, err := meta.SchemaVersion(ctx, cfg.Store.Path)
	if err == nil && have != want {
		err = fmt.Errorf("%s is at schema version %d, this binary's is %d (serve migrates it on start)", cfg.Store.Path, have, want)
	}
	r.line("store.path", err, "%s opens, schema version %d is current", cfg.Store.Path, have)
}
