package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/softhsm"
	"github.com/hsmkms/hsmkms/test/bench"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure a throwaway appliance against PyKMIP and the raw PKCS#11 rate",
		Description: "Creates an appliance in a temporary directory, serves it, and measures Create, Get,\n" +
			"Get Attributes, Encrypt (64 bytes) and new connections over KMIP 1.2 with 1 and 8\n" +
			"clients; then the same against a local PyKMIP server (Debian python3-pykmip) and the\n" +
			"raw PKCS#11 rate on a second SoftHSM2 token; then pairs two throwaway appliances and\n" +
			"measures replication lag and Create with mirror.write_ack=all vs local. Prints a Markdown\n" +
			"report with the verdict for each performance target. Everything it starts is stopped and removed on exit.",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "duration", Value: 5 * time.Second, Usage: "`TIME` of each hsmkms and raw run (PyKMIP runs take at most 2s)"},
			&cli.StringFlag{Name: "out", Usage: "also write the report to `FILE` (Markdown)"},
			&cli.BoolFlag{Name: "skip-pykmip", Usage: "do not start PyKMIP; the ratio column stays empty"},
			&cli.BoolFlag{Name: "skip-mirror", Usage: "do not measure mirroring (two paired appliances)"},
			&cli.BoolFlag{Name: "mirror-only", Usage: "measure only mirroring"},
		},
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBench(ctx, c)
		},
	}
}

func runBench(ctx context.Context, c *cli.Context) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: find own executable: %w", err)
	}
	tok, cleanup, err := openRawToken(ctx)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer cleanup()
	bcfg := bench.Config{
		Binary:     self,
		Duration:   c.Duration("duration"),
		SkipPyKMIP: c.Bool("skip-pykmip"),
		Raw:        tok,
		RawNote: "a second SoftHSM2 token of the same type and version, opened in the bench process " +
			"(the server holds its own token, and SoftHSM2 allows one configuration per process); " +
			"Get ↔ export (unwrap + read value + destroy), Encrypt ↔ encrypt64 (AES-CBC-PAD with a session key), " +
			"Create ↔ generate (generate + wrap + destroy)",
		Progress: c.App.ErrWriter,
	}
	rep := &bench.Report{PyKMIP: "not measured (--mirror-only)", Raw: "not measured (--mirror-only)"}
	if !c.Bool("mirror-only") {
		if rep, err = bench.Run(ctx, bcfg); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	if !c.Bool("skip-mirror") {
		if rep.Mirror, err = bench.RunMirror(ctx, bcfg); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	md := rep.Markdown()
	fmt.Fprint(c.App.Writer, md)
	if out := c.String("out"); out != "" {
		if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
			return fmt.Errorf("bench: write --out: %w", err)
		}
	}
	return nil
}

// openRawToken provisions a SoftHSM2 token with a master key in a temporary directory
// and opens it for the raw ceilings. cleanup closes it and removes the directory.
func openRawToken(ctx context.Context) (tok *hsm.Token, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "hsmkms-bench-raw-")
	if err != nil {
		return nil, nil, fmt.Errorf("create raw token: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	const label = "hsmkms-bench-raw"
	home := filepath.Join(dir, softhsmDir)
	if err := initSoftHSM(ctx, home, label); err != nil {
		return nil, nil, fmt.Errorf("create raw token: %w", err)
	}
	p, err := softhsm.Load(home, label)
	if err != nil {
		return nil, nil, fmt.Errorf("create raw token: %w", err)
	}
	tok, err = hsm.Open(ctx, hsm.Config{
		Module:      p.Module,
		TokenLabel:  label,
		PIN:         hsm.PINSource{File: p.PINFile},
		SetEnv:      p.Env(),
		MaxSessions: bench.MaxClients,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("open raw token: %w", err)
	}
	return tok, func() { tok.Close(); os.RemoveAll(dir) }, nil
}
