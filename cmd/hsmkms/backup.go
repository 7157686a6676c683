package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/backup"
	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:  "backup",
		Usage: "back up, verify and restore every key and its metadata",
		Description: "A backup file holds every object, its attributes and grants, and its key material wrapped\n" +
			"under the appliance's backup KEK, sealed by the token. Without the backup KEK (in a token, or\n" +
			"rebuilt from custodian shares: see `hsmkms kek`) the file reveals no key.",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "write a backup file (works while serve runs)",
				Flags: []cli.Flag{dirFlag(),
					&cli.StringFlag{Name: "out", Required: true, Usage: "the backup `FILE` to write (never overwritten)"},
				},
				Action: backupCreate,
			},
			{
				Name:      "verify",
				Usage:     "check a backup file's structure and seal and print a summary",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{&cli.StringFlag{Name: "dir", EnvVars: []string{"HSMKMS_DIR"},
					Usage: "an appliance `DIR` whose token holds the file's backup KEK, to check the seal (without it only the structure is checked)"}},
				Action: backupVerify,
			},
			{
				Name:      "restore",
				Usage:     "restore a backup file into the appliance (serve must be stopped)",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{dirFlag(),
					&cli.BoolFlag{Name: "force", Usage: "also overwrite local objects changed after the backup"},
				},
				Action: backupRestore,
			},
			backupBenchCommand(),
		},
	}
}

// applianceID names an appliance in backup headers and shares: the SHA-256
// of its CA certificate, shortened. It changes only with the CA.
func applianceID(cfg *config.Config) (string, error) {
	b, err := os.ReadFile(cfg.TLS.CA)
	if err != nil {
		return "", fmt.Errorf("read tls.ca of %s: %w", cfg.Path, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", fmt.Errorf("read tls.ca %s: no PEM block", cfg.TLS.CA)
	}
	sum := sha256.Sum256(blk.Bytes)
	return "ca-" + hex.EncodeToString(sum[:8]), nil
}

// progressTo prints progress to w, but only once an operation has run for a
// second: small backups stay quiet.
func progressTo(w io.Writer, what string) backup.Progress {
	start, shown := time.Now(), false
	return func(done, total int) {
		if !shown && time.Since(start) < time.Second {
			return
		}
		shown = true
		pct := 100
		if total > 0 {
			pct = done * 100 / total
		}
		fmt.Fprintf(w, "%s: %d/%d objects (%d%%)\n", what, done, total, pct)
	}
}

// writeBackupFile writes a backup to path through path.partial, renamed
// into place once complete and synced, so path is never a partial file. It
// refuses to overwrite path.
func writeBackupFile(ctx context.Context, tok *hsm.Token, st *meta.Store, cfg *config.Config, path string, progress backup.Progress) (backup.Summary, error) {
	id, err := applianceID(cfg)
	if err != nil {
		return backup.Summary{}, err
	}
	if _, err := os.Stat(path); err == nil {
		return backup.Summary{}, fmt.Errorf("write backup %s: the file exists; choose another name", path)
	}
	tmp := path + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return backup.Summary{}, fmt.Errorf("write backup: %w", err)
	}
	sum, err := backup.Create(ctx, tok, st, f, backup.CreateRequest{ApplianceID: id, Software: "hsmkms " + version, Progress: progress})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		err = fmt.Errorf("write backup %s: %w", path, err)
	}
	detail := fmt.Sprintf("%s: %d objects", path, sum.Header.Objects)
	if rerr := appendRecord(ctx, st, meta.AuditBackup, "backup create", detail, err); rerr != nil {
		return backup.Summary{}, errors.Join(err, rerr)
	}
	return sum, err
}

func backupCreate(c *cli.Context) error {
	if c.NArg() != 0 {
		return fmt.Errorf("backup create takes no arguments (the file is --out), got %q", c.Args().Slice())
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	tok, st, release, err := openAudited(c.Context, cfg)
	if err != nil {
		return err
	}
	defer release()
	out := c.String("out")
	sum, err := writeBackupFile(c.Context, tok, st, cfg, out, progressTo(c.App.ErrWriter, "backup"))
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "wrote %s\n", out)
	printSummary(c.App.Writer, sum)
	return nil
}

func backupVerify(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("backup verify takes one FILE, got %q", c.Args().Slice())
	}
	path := c.Args().First()
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("verify backup: %w", err)
	}
	defer f.Close()
	var keys backup.Keys
	if c.String("dir") != "" {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		tok, err := openToken(c.Context, cfg, nil)
		if err != nil {
			return err
		}
		defer tok.Close()
		keys = tok
	}
	sum, err := backup.Verify(c.Context, keys, f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintf(c.App.Writer, "%s: structure ok\n", path)
	printSummary(c.App.Writer, sum)
	if !sum.Sealed {
		fmt.Fprintf(c.App.Writer, "seal NOT checked: give --dir of an appliance whose token holds backup KEK %s\n", sum.Header.BackupKEK.Fingerprint)
	}
	return nil
}

// printSummary prints a backup's header.
func printSummary(w io.Writer, sum backup.Summary) {
	h := sum.Header
	seal := "not checked"
	if sum.Sealed {
		seal = "ok"
	}
	fmt.Fprintf(w, "  appliance   %s\n  created     %s\n  software    %s\n  backup KEK  %s (%s where it was made)\n  seal        %s\n  objects     %d\n",
		h.ApplianceID, h.Created.Format(time.RFC3339), h.Software, h.BackupKEK.Fingerprint, h.BackupKEK.Label, seal, h.Objects)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range h.Counts {
		fmt.Fprintf(tw, "    %s\t%s\t%d\n", c.TypeName, c.StateName, c.Count)
	}
	tw.Flush()
}

func backupRestore(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("backup restore takes one FILE, got %q", c.Args().Slice())
	}
	path := c.Args().First()
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	unlock, err := lockOffline(cfg.Dir, "backup restore")
	if err != nil {
		return err
	}
	defer unlock()
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("restore backup: %w", err)
	}
	defer f.Close()
	tok, st, release, err := openAudited(c.Context, cfg)
	if err != nil {
		return err
	}
	defer release()
	res, err := backup.Restore(c.Context, tok, st, f, backup.RestoreRequest{Force: c.Bool("force"), Progress: progressTo(c.App.ErrWriter, "restore")})
	detail := fmt.Sprintf("%s: created %d, updated %d, skipped %d, conflicted %d, overwritten %d",
		path, res.Created, res.Updated, res.Skipped, res.Conflicted, res.Overwritten)
	if rerr := appendRecord(c.Context, st, meta.AuditRestore, "backup restore", detail, err); rerr != nil {
		return errors.Join(err, rerr)
	}
	if err != nil {
		if errors.Is(err, backup.ErrFormat) || errors.Is(err, backup.ErrSeal) || errors.Is(err, backup.ErrForeignKEK) {
			return fmt.Errorf("%s refused, nothing was changed: %w", path, err)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintf(c.App.Writer, "restored %s (%d objects from appliance %s, %s): created %d, updated %d, skipped %d, conflicted %d",
		path, res.Header.Objects, res.Header.ApplianceID, res.Header.Created.Format(time.RFC3339), res.Created, res.Updated, res.Skipped, res.Conflicted)
	if c.Bool("force") {
		fmt.Fprintf(c.App.Writer, " (overwritten %d)", res.Overwritten)
	}
	fmt.Fprintln(c.App.Writer)
	if res.Conflicted > res.Overwritten {
		more := ""
		if n := res.Conflicted - res.Overwritten - len(res.Conflicts); n > 0 {
			more = fmt.Sprintf(" and %d more", n)
		}
		fmt.Fprintf(c.App.Writer, "kept the local versions of %s%s: they changed after the backup; rerun with --force to overwrite them\n",
			strings.Join(res.Conflicts, ", "), more)
	}
	return nil
}

// backupFileName is the name of a scheduled backup taken at t; names sort
// by time.
func backupFileName(t time.Time) string {
	return "hsmkms-" + t.UTC().Format("20060102T150405Z") + ".hkb"
}

// isBackupFileName reports whether name was made by backupFileName.
func isBackupFileName(name string) bool {
	rest, ok := strings.CutPrefix(name, "hsmkms-")
	if !ok || !strings.HasSuffix(rest, ".hkb") {
		return false
	}
	_, err := time.Parse("20060102T150405Z", strings.TrimSuffix(rest, ".hkb"))
	return err == nil
}

// ensureDir creates dir with mode 0700 if it is missing.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Clean(dir), err)
	}
	return nil
}
