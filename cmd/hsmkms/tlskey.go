package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/softhsm"
)

// initTLSKey moves the server's TLS key into the token (init --tls-key-in-token): it
// generates an ECDSA P-256 key pair there, has the CA certify its public key for the
// same names as the file-based certificate pki.Create made, replaces that certificate,
// removes its key file and points tls.key at the token key.
func initTLSKey(ctx context.Context, cfg *config.Config, dir string, o initOptions, files pki.Files, ca *pki.CA) error {
	hc := hsm.Config{Module: o.module, TokenLabel: o.tokenLabel, PIN: hsm.PINSource{File: cfg.HSM.PINFile, Env: cfg.HSM.PINEnv}}
	if o.module == "" {
		p, err := softhsm.Load(filepath.Join(dir, softhsmDir), o.tokenLabel)
		if err != nil {
			return fmt.Errorf("init tls key: %w", err)
		}
		hc = hsm.Config{Module: p.Module, TokenLabel: o.tokenLabel, PIN: hsm.PINSource{File: p.PINFile}, SetEnv: p.Env()}
	}
	tok, err := hsm.Open(ctx, hc)
	if err != nil {
		return fmt.Errorf("init tls key: %w", err)
	}
	defer tok.Close()
	pub, err := tok.GenerateTLSKey(ctx, hsm.TLSKeyLabel)
	if err != nil {
		return fmt.Errorf("init tls key: %w", err)
	}
	for _, p := range []string{files.Key, files.Cert} {
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("init tls key: %w", err)
		}
	}
	if _, err := ca.CertifyFile(files.Cert, pki.ServerRequest(o.sans, pki.ServerValidity), pub, time.Now()); err != nil {
		return fmt.Errorf("init tls key: %w", err)
	}
	cfg.TLS.Key = "pkcs11:object=" + hsm.TLSKeyLabel
	return nil
}
