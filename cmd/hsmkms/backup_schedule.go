package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// scheduleBackups starts serve's backup loop when [backup] schedule is set:
// every interval it writes DIR/backups/hsmkms-<time>.hkb (backup.dir) from
// the live token and store, then removes all but the newest backup.keep
// files. A failed backup is logged at Error and retried at the next tick.
// The loop ends with ctx.
func scheduleBackups(ctx context.Context, cfg *config.Config, tok *hsm.Token, st *meta.Store, log *slog.Logger) {
	every := cfg.Backup.Interval()
	if every <= 0 {
		return
	}
	log.Info("scheduled backups on", "every", every.String(), "dir", cfg.Backup.Dir, "keep", cfg.Backup.Keep)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				scheduledBackup(ctx, cfg, tok, st, log)
			}
		}
	}()
}

// scheduledBackup writes one backup and prunes old ones.
func scheduledBackup(ctx context.Context, cfg *config.Config, tok *hsm.Token, st *meta.Store, log *slog.Logger) {
	start := time.Now()
	if err := ensureDir(cfg.Backup.Dir); err != nil {
		log.Error("scheduled backup failed", "err", err)
		return
	}
	path := filepath.Join(cfg.Backup.Dir, backupFileName(start))
	sum, err := writeBackupFile(ctx, tok, st, cfg, path, nil)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("scheduled backup failed", "path", path, "err", err)
		}
		return
	}
	log.Info("scheduled backup written", "path", path, "objects", sum.Header.Objects,
		"backup_kek", sum.Header.BackupKEK.Fingerprint, "duration", time.Since(start).String())
	entries, err := os.ReadDir(cfg.Backup.Dir)
	if err != nil {
		log.Warn("scheduled backup prune failed", "dir", cfg.Backup.Dir, "err", err)
		return
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && isBackupFileName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	for len(names) > cfg.Backup.Keep {
		old := filepath.Join(cfg.Backup.Dir, names[0])
		if err := os.Remove(old); err != nil {
			log.Warn("scheduled backup prune failed", "path", old, "err", err)
		} else {
			log.Info("old backup removed", "path", old)
		}
		names = names[1:]
	}
}
