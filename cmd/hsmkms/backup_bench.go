package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

func backupBenchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure backup and restore of N keys: time and peak memory of each command",
		Description: "Builds appliance A in a temporary directory and fills it with N AES-256 keys made in its\n" +
			"token, exports backup KEK shares, runs `backup create` and `backup verify`, builds appliance B\n" +
			"on a new token, imports 3 shares and runs `backup restore`. Each measured step is a separate\n" +
			"hsmkms process, so its peak RSS is its own. Everything is removed at the end unless --keep.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "keys", Value: 100000, Usage: "`N` keys to back up and restore"},
			&cli.BoolFlag{Name: "keep", Usage: "keep the temporary directory (printed) for inspection"},
		},
		Action: runBackupBench,
	}
}

// benchStep is one measured child process.
type benchStep struct {
	name    string
	elapsed time.Duration
	cpu     time.Duration // user + system, all threads: on a busy machine it says what the step itself costs
	maxRSS  int64         // bytes
}

func runBackupBench(c *cli.Context) error {
	ctx := c.Context
	n := c.Int("keys")
	if n < 1 {
		return fmt.Errorf("backup bench: --keys %d must be positive", n)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("backup bench: find own executable: %w", err)
	}
	work, err := os.MkdirTemp("", "hsmkms-backup-bench-")
	if err != nil {
		return fmt.Errorf("backup bench: %w", err)
	}
	if c.Bool("keep") {
		fmt.Fprintf(c.App.ErrWriter, "working in %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	a, b := filepath.Join(work, "a"), filepath.Join(work, "b")
	shares, pass, file := filepath.Join(work, "shares"), filepath.Join(work, "pass"), filepath.Join(work, "bench.hkb")
	log := c.App.ErrWriter
	run := func(name string, args ...string) (benchStep, error) {
		fmt.Fprintf(log, "%s ...\n", name)
		cmd := exec.CommandContext(ctx, self, args...)
		cmd.Stdout, cmd.Stderr = io.Discard, log
		start := time.Now()
		err := cmd.Run()
		st := benchStep{name: name, elapsed: time.Since(start)}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			st.maxRSS = ru.Maxrss << 10 // Linux reports KiB
			st.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
		if err != nil {
			return st, fmt.Errorf("backup bench: %s: %w", name, err)
		}
		return st, nil
	}
	if _, err := run("init A", "init", "--dir", a); err != nil {
		return err
	}
	fmt.Fprintf(log, "filling A with %d keys ...\n", n)
	start := time.Now()
	if err := fillKeys(ctx, a, n); err != nil {
		return err
	}
	fill := time.Since(start)
	if err := os.Mkdir(pass, 0o700); err != nil {
		return fmt.Errorf("backup bench: %w", err)
	}
	for i := 1; i <= 5; i++ {
		p := make([]byte, 24)
		rand.Read(p)
		if err := os.WriteFile(filepath.Join(pass, fmt.Sprintf("share-%d.passphrase", i)), fmt.Appendf(nil, "%x", p), 0o600); err != nil {
			return fmt.Errorf("backup bench: %w", err)
		}
	}
	if _, err := run("export shares", "kek", "export-shares", "--dir", a, "--threshold", "3", "--shares", "5", "--out", shares, "--passphrase-dir", pass); err != nil {
		return err
	}
	var steps []benchStep
	for _, s := range []struct {
		name string
		args []string
	}{
		{"backup create", []string{"backup", "create", "--dir", a, "--out", file}},
		{"backup verify", []string{"backup", "verify", "--dir", a, file}},
		{"init B", []string{"init", "--dir", b}},
		{"import 3 shares", []string{"kek", "import-shares", "--dir", b, "--passphrase-dir", pass,
			filepath.Join(shares, "share-1.share"), filepath.Join(shares, "share-3.share"), filepath.Join(shares, "share-5.share")}},
		{"backup restore", []string{"backup", "restore", "--dir", b, file}},
	} {
		st, err := run(s.name, s.args...)
		if err != nil {
			return err
		}
		if s.name != "init B" {
			steps = append(steps, st)
		}
	}
	fi, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("backup bench: %w", err)
	}
	var restored int
	if err := countObjects(ctx, filepath.Join(b, "hsmkms.db"), &restored); err != nil {
		return err
	}
	if restored != n {
		return fmt.Errorf("backup bench: B holds %d objects after the restore, want %d", restored, n)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "backup and restore of %d AES-256 keys (fill: %v, backup file %.1f MiB)\n\n", n, fill.Round(time.Millisecond), float64(fi.Size())/(1<<20))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "step\ttime\tkeys/s\tCPU time\tpeak RSS\t\n")
	for _, st := range steps {
		rate := "-"
		if st.name != "import 3 shares" {
			rate = strconv.Itoa(int(float64(n) / st.elapsed.Seconds()))
		}
		fmt.Fprintf(tw, "%s\t%.2f s\t%s\t%.2f s\t%.0f MiB\t\n", st.name, st.elapsed.Seconds(), rate, st.cpu.Seconds(), float64(st.maxRSS)/(1<<20))
	}
	return tw.Flush()
}

// fillKeys stores n AES-256 keys generated in the token of the appliance in
// dir, as Create would, several workers at a time and 1,000 per transaction.
func fillKeys(ctx context.Context, dir string, n int) error {
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		return err
	}
	tok, err := openToken(ctx, cfg, nil)
	if err != nil {
		return err
	}
	defer tok.Close()
	st, err := openStore(ctx, cfg, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	const chunk = 1000
	next := make(chan int)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for first := range next {
				if err := fillChunk(ctx, tok, st, first, min(chunk, n-first)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for first := 0; first < n; first += chunk {
		select {
		case next <- first:
		case err := <-errs:
			close(next)
			wg.Wait()
			return err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

func fillChunk(ctx context.Context, tok *hsm.Token, st *meta.Store, first, count int) error {
	objs := make([]*meta.Object, count)
	now := time.Now().UTC()
	for i := range objs {
		w, digest, err := tok.Generate(ctx, 256)
		if err != nil {
			return err
		}
		var id [16]byte
		rand.Read(id[:])
		objs[i] = &meta.Object{ID: fmt.Sprintf("bench-%08d-%x", first+i, id[:4]), Type: 2, State: 2, Owner: "bench",
			Algorithm: 3, Length: 256, UsageMask: 12, Format: 1, Wrapped: w.Blob, KEK: w.KEK,
			Created: now, Updated: now, Activation: now,
			Attrs: []meta.Attr{{Name: "Digest", Value: digest}, {Name: "Name", Value: fmt.Appendf(nil, "bench key %d", first+i)}}}
	}
	return st.Update(ctx, func(tx *meta.Tx) error {
		for _, o := range objs {
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
}

// countObjects opens the database at path read-only and counts objects.
func countObjects(ctx context.Context, path string, n *int) error {
	st, err := meta.Open(ctx, path, meta.Options{})
	if err != nil {
		return fmt.Errorf("backup bench: %w", err)
	}
	defer st.Close()
	return st.View(ctx, func(tx *meta.Tx) (err error) { *n, err = tx.Count(); return err })
}
