package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/cmd/internal/admin"
	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/ops"
)

// shutdownGrace bounds how long in-flight batches may finish after SIGTERM.
const shutdownGrace = 20 * time.Second

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve KMIP over mutual TLS until SIGINT or SIGTERM",
		Flags: []cli.Flag{
			dirFlag(),
			&cli.StringFlag{Name: "listen", Usage: "`ADDR`ess to listen on, host:port (default: server.listen, 127.0.0.1:5696)"},
		},
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			if l := c.String("listen"); l != "" {
				cfg.Server.Listen = l
				if err := cfg.Validate(); err != nil {
					return withExit(exitConfig, fmt.Errorf("check --listen: %w", err))
				}
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, stop, cfg)
		},
	}
}

// serve opens the token, then the store, then the listener, and closes them in
// reverse order when ctx ends. stop restores default signal handling once shutdown
// starts, so a second Ctrl-C ends a stuck shutdown.
func serve(ctx context.Context, stop func(), cfg *config.Config) error {
	log, err := cfg.Log.NewLogger(os.Stderr)
	if err != nil {
		return withExit(exitConfig, fmt.Errorf("check [log] in %s: %w", cfg.Path, err))
	}
	unlock, err := lockServe(cfg.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	files := pkiFiles(cfg)
	metrics := admin.NewMetrics()

	tok, err := openToken(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer tok.Close()
	metrics.WatchToken(tok.Stats)
	tlsCfg, err := serverTLS(ctx, cfg, tok)
	if err != nil {
		return err
	}
	chain, err := auditChain(ctx, tok)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg, log, observeStore(metrics), chain)
	if err != nil {
		return err
	}
	defer st.Close()
	trail, err := openAuditTrail(cfg, log, st)
	if err != nil {
		return err
	}
	defer trail.Close()

	pol, err := policy(cfg.Auth)
	if err != nil {
		return fmt.Errorf("check [auth] roles in %s: %w", cfg.Path, err)
	}
	svc := ops.New(ops.Config{
		Keys:       tok,
		Store:      st,
		Logger:     log,
		Policy:     pol,
		ServerInfo: "hsmkms " + version,
	})
	mux := kmip.NewMux()
	svc.Register(mux)

	raiseFileLimit(log)
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (server.listen in %s, or --listen): %w", cfg.Server.Listen, cfg.Path, err)
	}
	srv := &kmip.Server{
		Handler:          kmip.Audit(trail)(mux),
		TLSConfig:        tlsCfg,
		Logger:           log,
		MaxMessageSize:   cfg.Server.MaxMessageSize,
		HandshakeTimeout: cfg.Server.HandshakeTimeout,
		ReadTimeout:      cfg.Server.ReadTimeout,
		IdleTimeout:      cfg.Server.IdleTimeout,
		MaxConns:         cfg.Server.MaxConnections,
	}
	observeServer(srv, cfg, metrics, log)
	stopAdmin := startAdmin(cfg, log, metrics, tok, st, srv)
	defer stopAdmin()
	scheduleBackups(ctx, cfg, tok, st, log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String(), "dir", cfg.Dir, "ca", files.CA, "version", version)

	select {
	case err := <-served:
		// Serve only returns early when the listener broke.
		return fmt.Errorf("serve kmip on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	stop()
	log.Info("shutting down", "grace", shutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown cut in-flight requests short", "err", err)
	}
	if err := <-served; err != nil && !errors.Is(err, kmip.ErrServerClosed) {
		return fmt.Errorf("serve kmip on %s: %w", ln.Addr(), err)
	}
	log.Info("stopped")
	return nil
}

// policy builds the authorisation policy of [auth]: the configured roles first, then
// the default mapping, admin for certificates the appliance CA issued with OU
// hsmkms-admin and for the identities in auth.admins, client for everyone else.
func policy(auth config.Auth) (*ops.Policy, error) {
	specs := make([]ops.RoleSpec, len(auth.Roles))
	for i, r := range auth.Roles {
		specs[i] = ops.RoleSpec{Name: r.Name, Operations: r.Operations, AllObjects: r.AllObjects,
			Identities: r.Identities, Subjects: r.Subjects, SANs: r.SANs, Issuers: r.Issuers}
	}
	return ops.NewPolicy(specs, func(p *kmip.Peer) string {
		if r, ok := pki.RoleOf(p.Cert); ok && r == pki.RoleAdmin {
			return ops.RoleAdmin
		}
		if p.Identity != "" && slices.Contains(auth.Admins, p.Identity) {
			return ops.RoleAdmin
		}
		return ops.RoleClient
	})
}
