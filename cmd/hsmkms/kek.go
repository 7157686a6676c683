package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/backup"
	"github.com/hsmkms/hsmkms/backup/shamir"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// rotateSettle is how long an online rotation keeps sweeping after making
// the new master: a running server notices it within ten seconds
// (hsm.masterRecheck), and keys it made before that are swept too.
const rotateSettle = 15 * time.Second

func kekCommand() *cli.Command {
	passDir := &cli.StringFlag{Name: "passphrase-dir", Usage: "`PDIR` holding one file per custodian, NAME.passphrase (default: env HSMKMS_SHARE_PASSPHRASE_<NAME>)"}
	return &cli.Command{
		Name:  "kek",
		Usage: "manage the master and backup key-encryption keys in the token",
		Description: "The master key wraps every stored key; the backup KEK wraps them in backup files. Both stay\n" +
			"in the token. export-shares / import-shares carry the backup KEK to another appliance through a\n" +
			"key ceremony (see README, Backup and disaster recovery).",
		Subcommands: []*cli.Command{
			{
				Name:   "list",
				Usage:  "list the master keys (with the number of keys each wraps) and the backup KEKs",
				Flags:  []cli.Flag{dirFlag()},
				Action: kekList,
			},
			{
				Name:  "export-shares",
				Usage: "make a new backup KEK from a new backup secret and split it into custodian shares",
				Flags: []cli.Flag{dirFlag(), passDir,
					&cli.IntFlag{Name: "threshold", Required: true, Usage: "`M`: how many shares rebuild the backup KEK (at least 2)"},
					&cli.IntFlag{Name: "shares", Required: true, Usage: "`N`: how many shares to write (M to 255)"},
					&cli.StringFlag{Name: "out", Required: true, Usage: "`DIR` to write NAME.share files into"},
					&cli.StringSliceFlag{Name: "custodian", Usage: "custodian `NAME`, repeated N times in share order (default share-1 ... share-N)"},
				},
				Action: auditedAction("kek export-shares", kekExportShares),
			},
			{
				Name:      "import-shares",
				Usage:     "rebuild a backup KEK inside the token from at least M custodian shares",
				ArgsUsage: "SHARE...",
				Flags:     []cli.Flag{dirFlag(), passDir},
				Action:    auditedAction("kek import-shares", kekImportShares),
			},
			{
				Name:   "rotate-master",
				Usage:  "create a new master key and rewrap every stored key under it (online; resumable)",
				Flags:  []cli.Flag{dirFlag()},
				Action: auditedAction("kek rotate-master", kekRotateMaster),
			},
			{
				Name:   "retire-master",
				Usage:  "delete old master keys that wrap no stored key (serve must be stopped)",
				Flags:  []cli.Flag{dirFlag()},
				Action: auditedAction("kek retire-master", kekRetireMaster),
			},
		},
	}
}

func kekList(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	tok, st, release, err := openAudited(c.Context, cfg)
	if err != nil {
		return err
	}
	defer release()
	masters, err := tok.Masters(c.Context)
	if err != nil {
		return err
	}
	var use map[string]int
	if err := st.View(c.Context, func(tx *meta.Tx) (err error) { use, err = tx.KEKUsage(); return err }); err != nil {
		return err
	}
	pairs, err := tok.BackupKEKs(c.Context)
	if err != nil {
		return err
	}
	w := c.App.Writer
	for i, m := range masters {
		role := "old"
		if i == len(masters)-1 {
			role = "newest: wraps new keys"
		}
		fmt.Fprintf(w, "master  %s  %d keys (%s)\n", m, use[m], role)
		delete(use, m)
	}
	for kek, n := range use {
		fmt.Fprintf(w, "MISSING %s  %d keys wrapped under a KEK the token does not hold\n", kek, n)
	}
	for i, p := range pairs {
		role := ""
		if i == len(pairs)-1 {
			role = " (newest: new backups use it)"
		}
		fmt.Fprintf(w, "backup  %s + %s  fingerprint %s%s\n", p.Label, p.MACLabel, p.Fingerprint, role)
	}
	return nil
}

// passphrase reads custodian name's passphrase from PDIR/NAME.passphrase, or
// from HSMKMS_SHARE_PASSPHRASE_<NAME> without --passphrase-dir. One trailing
// newline is ignored.
func passphrase(c *cli.Context, name string) ([]byte, error) {
	if dir := c.String("passphrase-dir"); dir != "" {
		path := filepath.Join(dir, name+".passphrase")
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read the passphrase of custodian %s: %w", name, err)
		}
		return bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r")), nil
	}
	env := "HSMKMS_SHARE_PASSPHRASE_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' {
			return r - 'a' + 'A'
		}
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, name)
	v, ok := os.LookupEnv(env)
	if !ok {
		return nil, fmt.Errorf("read the passphrase of custodian %s: neither --passphrase-dir nor %s is set", name, env)
	}
	return []byte(v), nil
}

func kekExportShares(c *cli.Context) error {
	if c.NArg() != 0 {
		return fmt.Errorf("kek export-shares takes no arguments, got %q", c.Args().Slice())
	}
	n, m := c.Int("shares"), c.Int("threshold")
	if m < 2 || m > n || n > 255 {
		return fmt.Errorf("kek export-shares: --threshold %d --shares %d: want 2 <= threshold <= shares <= 255", m, n)
	}
	names := c.StringSlice("custodian")
	if len(names) == 0 {
		for i := range n {
			names = append(names, "share-"+strconv.Itoa(i+1))
		}
	}
	if len(names) != n {
		return fmt.Errorf("kek export-shares: %d --custodian names for --shares %d: name every custodian, or none", len(names), n)
	}
	passes := make([][]byte, n)
	for i, name := range names {
		if err := backup.CheckCustodian(name); err != nil {
			return err
		}
		p, err := passphrase(c, name)
		if err != nil {
			return err
		}
		if len(p) < backup.MinPassphrase {
			return fmt.Errorf("kek export-shares: the passphrase of custodian %s is shorter than %d bytes", name, backup.MinPassphrase)
		}
		passes[i] = p
	}
	out := c.String("out")
	paths := make([]string, n)
	for i, name := range names {
		paths[i] = filepath.Join(out, name+".share")
		if _, err := os.Stat(paths[i]); err == nil {
			return fmt.Errorf("kek export-shares: %s exists; refusing to overwrite a share", paths[i])
		}
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	id, err := applianceID(cfg)
	if err != nil {
		return err
	}
	tok, err := openToken(c.Context, cfg, nil)
	if err != nil {
		return err
	}
	defer tok.Close()
	if err := ensureDir(out); err != nil {
		return err
	}

	// The one moment the backup secret exists outside a token: split, seal,
	// load into the token, clear.
	secret := make([]byte, hsm.BackupSecretSize)
	defer clear(secret)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("kek export-shares: %w", err)
	}
	fp, err := hsm.BackupFingerprint(secret)
	if err != nil {
		return err
	}
	shares, err := backup.SplitSecret(secret, m, names)
	if err != nil {
		return err
	}
	written, err := writeShares(shares, names, paths, passes, backup.ShareInfo{Threshold: m, Shares: n, Fingerprint: fp, ApplianceID: id, Created: time.Now().UTC().Truncate(time.Second)})
	for _, s := range shares {
		clear(s.Y)
	}
	if err == nil {
		var k hsm.BackupKEK
		if k, _, err = tok.ImportBackupSecret(c.Context, secret); err == nil {
			fmt.Fprintf(c.App.Writer, "new backup KEK %s (fingerprint %s) is in the token; backups made from now on use it\n", k.Label, k.Fingerprint)
			fmt.Fprintf(c.App.Writer, "wrote %d shares, any %d of which rebuild it:\n", n, m)
			for _, p := range paths {
				fmt.Fprintf(c.App.Writer, "  %s\n", p)
			}
			fmt.Fprintf(c.App.Writer, "give each custodian their file and passphrase, and keep backup files with someone else\n")
			return nil
		}
	}
	for _, p := range written {
		os.Remove(p)
	}
	return fmt.Errorf("kek export-shares: %w (no share was kept)", err)
}

// writeShares seals and writes each share, never overwriting; it returns the
// files written so far.
func writeShares(shares []shamir.Share, names, paths []string, passes [][]byte, info backup.ShareInfo) ([]string, error) {
	var written []string
	for i, s := range shares {
		info.Custodian, info.Index = names[i], int(s.X)
		b, err := backup.SealShare(info, s.Y, passes[i])
		if err != nil {
			return written, err
		}
		f, err := os.OpenFile(paths[i], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return written, fmt.Errorf("write share: %w", err)
		}
		written = append(written, paths[i])
		_, err = f.Write(b)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return written, fmt.Errorf("write share %s: %w", paths[i], err)
		}
	}
	return written, nil
}

func kekImportShares(c *cli.Context) error {
	files := c.Args().Slice()
	if len(files) == 0 {
		return errors.New("kek import-shares: name the SHARE files of at least threshold custodians")
	}
	var infos []backup.ShareInfo
	var ys [][]byte
	defer func() {
		for _, y := range ys {
			clear(y)
		}
	}()
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("kek import-shares: %w", err)
		}
		info, err := backup.ReadShareInfo(b)
		if err != nil {
			return fmt.Errorf("kek import-shares %s: %w", path, err)
		}
		if len(files) < info.Threshold {
			return fmt.Errorf("kek import-shares: %w: %d shares given, but the backup KEK %s needs %d of its %d custodians' shares",
				backup.ErrTooFewShares, len(files), info.Fingerprint, info.Threshold, info.Shares)
		}
		pass, err := passphrase(c, info.Custodian)
		if err != nil {
			return err
		}
		info, y, err := backup.OpenShare(b, pass)
		clear(pass)
		if err != nil {
			return fmt.Errorf("kek import-shares %s: %w", path, err)
		}
		infos, ys = append(infos, info), append(ys, y)
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	tok, err := openToken(c.Context, cfg, nil)
	if err != nil {
		return err
	}
	defer tok.Close()
	secret, err := backup.CombineShares(infos, ys)
	if err != nil {
		return fmt.Errorf("kek import-shares: %w", err)
	}
	defer clear(secret)
	k, created, err := tok.ImportBackupSecret(c.Context, secret)
	if err != nil {
		return fmt.Errorf("kek import-shares: %w", err)
	}
	if !created {
		fmt.Fprintf(c.App.Writer, "the token already holds backup KEK %s (fingerprint %s); nothing changed\n", k.Label, k.Fingerprint)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "rebuilt backup KEK %s (fingerprint %s) inside the token from %d shares; `hsmkms backup restore` can now read backups sealed with it\n",
		k.Label, k.Fingerprint, len(files))
	return nil
}

func kekRotateMaster(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	// Holding the lock means no server runs: rotate without waiting and
	// retire the old master. Otherwise rotate online and keep it.
	unlock, err := lockDir(cfg.Dir)
	online := errors.Is(err, errDirLocked)
	if err != nil && !online {
		return err
	}
	if !online {
		defer unlock()
	}
	tok, st, release, err := openAudited(c.Context, cfg)
	if err != nil {
		return err
	}
	defer release()
	req := backup.RotateRequest{Retire: !online, Progress: progressTo(c.App.ErrWriter, "rotate-master")}
	if online {
		req.Settle = rotateSettle
		fmt.Fprintf(c.App.ErrWriter, "serve is running: rotating online (this takes at least %v)\n", rotateSettle)
	}
	res, err := backup.RotateMaster(c.Context, tok, st, req)
	if err != nil {
		return err
	}
	verb := "resumed the rotation to"
	if res.Created {
		verb = "created"
	}
	fmt.Fprintf(c.App.Writer, "%s %s; rewrapped %d keys under it\n", verb, res.Master, res.Rewrapped)
	switch {
	case online:
		fmt.Fprintf(c.App.Writer, "the old master stays in the token while serve runs (its cache may hold keys wrapped under it):\n"+
			"stop serve, run `hsmkms kek retire-master --dir %s`, start serve again\n", cfg.Dir)
	case len(res.Retired) > 0:
		fmt.Fprintf(c.App.Writer, "deleted the old master %s\n", strings.Join(res.Retired, ", "))
	}
	return nil
}

func kekRetireMaster(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	unlock, err := lockOffline(cfg.Dir, "kek retire-master")
	if err != nil {
		return err
	}
	defer unlock()
	tok, st, release, err := openAudited(c.Context, cfg)
	if err != nil {
		return err
	}
	defer release()
	retired, err := backup.RetireMasters(c.Context, tok, st)
	if len(retired) > 0 {
		fmt.Fprintf(c.App.Writer, "deleted %s\n", strings.Join(retired, ", "))
	} else if err == nil {
		fmt.Fprintln(c.App.Writer, "no old master to delete")
	}
	return err
}
