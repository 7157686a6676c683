package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hsmkms/hsmkms/cmd/internal/admin"
	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/meta"
)

// raiseFileLimit lifts the soft limit on open files to the hard limit: every KMIP
// connection holds a descriptor, and the default soft limit (often 1024) is far below
// server.max_connections.
func raiseFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("open file limit unknown", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		old := lim.Cur
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Warn("open file limit not raised", "soft", old, "hard", lim.Max, "err", err)
			return
		}
		log.Info("open file limit raised", "from", old, "to", lim.Cur)
		return
	}
	log.Info("open file limit", "limit", lim.Cur)
}

// serverTLS builds the KMIP listener's TLS configuration from [tls]: the key is a PEM
// file, or the token's key pair when tls.key is a pkcs11:object=LABEL URI.
func serverTLS(ctx context.Context, cfg *config.Config, tok *hsm.Token) (*tls.Config, error) {
	label, inToken, err := pki.TokenKeyLabel(cfg.TLS.Key)
	if err != nil {
		return nil, fmt.Errorf("check tls.key in %s: %w", cfg.Path, err)
	}
	if !inToken {
		c, err := pki.ServerTLS(cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("load [tls] files named in %s: %w", cfg.Path, err)
		}
		return c, nil
	}
	signer, err := tok.TLSSigner(ctx, label)
	if err != nil {
		return nil, fmt.Errorf("open tls.key %s from the token (see %s): %w", cfg.TLS.Key, cfg.Path, err)
	}
	c, err := pki.ServerTLSSigner(cfg.TLS.CA, cfg.TLS.Cert, signer)
	if err != nil {
		return nil, fmt.Errorf("load [tls] files named in %s: %w", cfg.Path, err)
	}
	return c, nil
}

// observeStore feeds the store's commits to m; pass it to openStore.
func observeStore(m *admin.Metrics) func(*meta.Options) {
	return func(o *meta.Options) { o.OnCommit = m.ObserveCommit }
}

// observeServer wires srv's limits, revocation list and metrics hooks, wraps its
// handler so every batch item is measured, and exports the age of the newest backup.
func observeServer(srv *kmip.Server, cfg *config.Config, m *admin.Metrics, log *slog.Logger) {
	srv.Handler = kmip.Measure(m.ObserveItem)(srv.Handler)
	srv.Observer = m
	srv.MaxRequestsPerClient = cfg.Server.MaxRequestsPerClient
	srv.Revoked = pki.NewRevocationList(pkiFiles(cfg).Revoked, log).Revoked
	m.SetLastBackup(newestBackup(cfg.Backup.Dir))
}

// newestBackup reports the modification time of the newest backup file in dir (the
// scheduled backups' backup.dir), read at each scrape.
func newestBackup(dir string) func() (time.Time, bool) {
	return func() (time.Time, bool) {
		files, _ := filepath.Glob(filepath.Join(dir, "hsmkms-*.hkb")) // the pattern cannot be malformed
		var newest time.Time
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() && fi.ModTime().After(newest) {
				newest = fi.ModTime()
			}
		}
		return newest, !newest.IsZero()
	}
}

// startAdmin serves /metrics, /healthz and /readyz on admin.listen (nothing when it is
// "") and returns the function that stops it. Readiness is the token answering Ping,
// the store answering a read and the KMIP listener accepting.
//
// A failure to listen is logged as an Error and serve goes on: keys matter more than
// metrics, and mongod cannot start without its key server. Probes of the admin port
// then fail, which is how monitoring learns of it.
func startAdmin(cfg *config.Config, log *slog.Logger, m *admin.Metrics, tok *hsm.Token, st *meta.Store, srv *kmip.Server) (stop func()) {
	if cfg.Admin.Listen == "" {
		log.Info("admin listener disabled (admin.listen is empty)")
		return func() {}
	}
	checks := []admin.Check{
		{Name: "token", Run: tok.Ping},
		{Name: "store", Run: func(ctx context.Context) error {
			return st.View(ctx, func(tx *meta.Tx) error {
				// Any answer from the database will do; a missing object is one.
				if _, err := tx.Get("readyz-probe"); err != nil && !errors.Is(err, meta.ErrNotFound) {
					return err
				}
				return nil
			})
		}},
		{Name: "kmip", Run: func(context.Context) error {
			if !srv.Serving() {
				return errors.New("the KMIP listener is not accepting")
			}
			return nil
		}},
	}
	a, err := admin.Start(cfg.Admin.Listen, admin.Handler(m, checks), log)
	if err != nil {
		log.Error("admin listener not started: no metrics or probes (fix admin.listen)", "config", cfg.Path, "err", err)
		return func() {}
	}
	log.Info("admin listening", "addr", a.Addr(), "paths", "/metrics /healthz /readyz")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), adminShutdownGrace)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			log.Warn("admin listener shutdown cut short", "err", err)
		}
	}
}

// adminShutdownGrace bounds how long a scrape in flight may finish at shutdown.
const adminShutdownGrace = 5 * time.Second
