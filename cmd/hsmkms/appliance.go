package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
	"github.com/hsmkms/hsmkms/softhsm"
)

// Names inside an appliance directory that are not configurable: init creates them
// and the config file points at them.
const (
	softhsmDir = "softhsm"
	pkiDir     = "pki"
)

// dirFlag is the appliance directory every command works on.
func dirFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:     "dir",
		Usage:    "the appliance directory `DIR` (holds " + config.FileName + ", the token, the database and the PKI)",
		EnvVars:  []string{"HSMKMS_DIR"},
		Required: true,
	}
}

// loadConfig reads DIR/hsmkms.toml; the error names the file and key at fault.
func loadConfig(c *cli.Context) (*config.Config, error) {
	cfg, err := config.Load(filepath.Join(c.String("dir"), config.FileName))
	return cfg, withExit(exitConfig, err)
}

// pkiFiles is the PKI of the appliance cfg describes.
func pkiFiles(cfg *config.Config) pki.Files {
	return pki.Layout(filepath.Join(cfg.Dir, pkiDir))
}

// hsmConfig assembles hsm.Config from the [hsm] section. For the embedded SoftHSM2
// token it exports SOFTHSM2_CONF to the module and finds the module when none is set.
func hsmConfig(cfg *config.Config, log *slog.Logger) (hsm.Config, error) {
	hc := hsm.Config{
		Module:      cfg.HSM.Module,
		TokenLabel:  cfg.HSM.TokenLabel,
		PIN:         hsm.PINSource{File: cfg.HSM.PINFile, Env: cfg.HSM.PINEnv},
		MaxSessions: cfg.HSM.MaxSessions,
		CacheSize:   cfg.HSM.CacheSize,
		Logger:      log,
	}
	if cfg.HSM.SoftHSMConf != "" {
		if _, err := os.Stat(cfg.HSM.SoftHSMConf); err != nil {
			return hc, fmt.Errorf("check hsm.softhsm_conf in %s: %w (run `hsmkms init`, or set softhsm_conf = \"\" for a real HSM)", cfg.Path, err)
		}
		hc.SetEnv = map[string]string{softhsm.ConfEnv: cfg.HSM.SoftHSMConf}
		if hc.Module == "" {
			m, err := softhsm.FindModule()
			if err != nil {
				return hc, fmt.Errorf("find the SoftHSM2 module for hsm.module in %s: %w (install softhsm2 with `make deps-run`, or set hsm.module)", cfg.Path, err)
			}
			hc.Module = m
		}
	}
	if _, err := os.Stat(hc.Module); err != nil {
		return hc, fmt.Errorf("check hsm.module in %s: %w (name the HSM's PKCS#11 library, or leave it empty for the embedded SoftHSM2)", cfg.Path, err)
	}
	if cfg.HSM.PINFile != "" {
		if _, err := os.Stat(cfg.HSM.PINFile); err != nil {
			return hc, fmt.Errorf("check hsm.pin_file in %s: %w", cfg.Path, err)
		}
	}
	return hc, nil
}

// openToken opens the token and checks that its master key is there, so a wrong
// token or an uninitialised one fails at startup rather than at the first request.
// Its errors name the key to fix and end the process with exitToken.
func openToken(ctx context.Context, cfg *config.Config, log *slog.Logger) (*hsm.Token, error) {
	tok, err := openTokenAt(ctx, cfg, log)
	return tok, withExit(exitToken, err)
}

func openTokenAt(ctx context.Context, cfg *config.Config, log *slog.Logger) (*hsm.Token, error) {
	hc, err := hsmConfig(cfg, log)
	if err != nil {
		return nil, err
	}
	tok, err := hsm.Open(ctx, hc)
	switch {
	case errors.Is(err, hsm.ErrNotFound):
		return nil, fmt.Errorf("start hsm (module %s): %w (no initialised token is labelled %q: check hsm.token_label in %s; `softhsm2-util --show-slots` or the HSM vendor's tool lists the tokens)",
			hc.Module, err, hc.TokenLabel, cfg.Path)
	case errors.Is(err, hsm.ErrPIN):
		return nil, fmt.Errorf("start hsm (module %s, token %q): %w (the token refused the PIN from %v: check hsm.pin_file or hsm.pin_env in %s)",
			hc.Module, hc.TokenLabel, err, hc.PIN, cfg.Path)
	case err != nil:
		return nil, fmt.Errorf("start hsm (module %s, PIN from %v; see [hsm] in %s): %w", hc.Module, hc.PIN, cfg.Path, err)
	}
	if err := tok.Ping(ctx); err != nil {
		tok.Close()
		if errors.Is(err, hsm.ErrNotFound) {
			return nil, fmt.Errorf("check token %q: %w (the master key is missing: was this token set up by `hsmkms init`?)", hc.TokenLabel, err)
		}
		return nil, fmt.Errorf("check token %q: %w", hc.TokenLabel, err)
	}
	return tok, nil
}

// openStore opens the metadata database. It refuses a missing file instead of
// creating an empty one, which would hide a wrong store.path. hooks adjust the
// options (serve's metrics).
func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger, hooks ...func(*meta.Options)) (*meta.Store, error) {
	if _, err := os.Stat(cfg.Store.Path); errors.Is(err, fs.ErrNotExist) {
		return nil, withExit(exitStore, fmt.Errorf("open store: %s does not exist (check store.path in %s, or run `hsmkms init`)", cfg.Store.Path, cfg.Path))
	}
	opts := meta.Options{Logger: log, MaxSize: int64(cfg.Store.MaxSizeMB) << 20}
	for _, h := range hooks {
		h(&opts)
	}
	st, err := meta.Open(ctx, cfg.Store.Path, opts)
	if err != nil {
		return nil, withExit(exitStore, fmt.Errorf("open store %s: %w", cfg.Store.Path, err))
	}
	return st, nil
}
