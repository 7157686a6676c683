package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/cmd/internal/admin"
	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/ops"
	"github.com/hsmkms/hsmkms/meta"
	"github.com/hsmkms/hsmkms/mirror"
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
	// The journal's commits wake mirror streams; the node exists only later.
	var node atomic.Pointer[mirror.Node]
	notify := func(o *meta.Options) {
		prev := o.OnCommit
		o.OnCommit = func(d time.Duration, n int) {
			prev(d, n)
			if nd := node.Load(); nd != nil {
				nd.Notify()
			}
		}
	}
	st, err := openStore(ctx, cfg, log, observeStore(metrics), chain, notify)
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
	var svc *ops.Service
	nd, err := startMirror(ctx, cfg, log, tok, st, tlsCfg, func(id string) { svc.Invalidate(id) })
	if err != nil {
		return err
	}
	var replicas ops.Replicas
	if nd != nil {
		replicas = nd
		node.Store(nd)
	}
	svc = ops.New(ops.Config{
		Keys:       tok,
		Store:      st,
		Logger:     log,
		Policy:     pol,
		ServerInfo: "hsmkms " + version,
		Replicas:   replicas,

		DefaultObjectGroup: cfg.Server.DefaultObjectGroup,
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
	if nd != nil {
		srv.ClientCAs = clientCAs(tlsCfg.ClientCAs, nd)
		metrics.WatchMirror(func() []admin.MirrorPeer {
			var out []admin.MirrorPeer
			for _, p := range nd.Status() {
				out = append(out, admin.MirrorPeer{ID: p.ID, Name: p.Name, State: p.State, LagEntries: p.LagEntries,
					Lag: p.Lag, LagP50: p.LagP50, LagP99: p.LagP99})
			}
			return out
		})
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

// startMirror starts the mirror listener and replication when [mirror] is
// enabled; it returns nil otherwise. Both stop with ctx.
func startMirror(ctx context.Context, cfg *config.Config, log *slog.Logger, tok *hsm.Token, st *meta.Store,
	tlsCfg *tls.Config, invalidate func(id string)) (*mirror.Node, error) {
	if !cfg.Mirror.Enabled {
		return nil, nil
	}
	ack, err := mirror.ParseAckMode(cfg.Mirror.WriteAck)
	if err != nil {
		return nil, withExit(exitConfig, fmt.Errorf("check mirror.write_ack in %s: %w", cfg.Path, err))
	}
	ca, err := os.ReadFile(cfg.TLS.CA)
	if err != nil {
		return nil, fmt.Errorf("read tls.ca of %s: %w", cfg.Path, err)
	}
	node := mirror.New(mirror.Config{CA: ca,
		Keys: tok, Store: st, Logger: log.With("component", "mirror"),
		Cert: tlsCfg.Certificates[0], Name: mirrorName(cfg), Advertise: cfg.Mirror.AdvertiseAddr(),
		WriteAck: ack, AckTimeout: cfg.Mirror.AckTimeout, AntiEntropy: cfg.Mirror.AntiEntropy,
		KindOf: ops.MaterialKind, OnApply: invalidate, Audit: true,
		Revocations: revocationFile(pkiFiles(cfg).Revoked),
	})
	if err := node.Load(ctx); err != nil {
		return nil, withExit(exitStore, err)
	}
	ln, err := net.Listen("tcp", cfg.Mirror.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (mirror.listen in %s): %w", cfg.Mirror.Listen, cfg.Path, err)
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	go func() {
		if err := node.Serve(ctx, ln); err != nil {
			log.Error("mirror listener stopped", "addr", cfg.Mirror.Listen, "err", err)
		}
	}()
	go func() {
		if err := node.Run(ctx); err != nil {
			log.Error("mirroring stopped", "err", err)
		}
	}()
	log.Info("mirroring", "listen", ln.Addr().String(), "advertise", cfg.Mirror.AdvertiseAddr(), "write_ack", ack.String())
	return node, nil
}
