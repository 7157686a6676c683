package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/test/vectors"
)

// conformanceCommand replays OASIS KMIP XML conversations against any KMIP server, this
// one or another, and reports each file as passed, failed (with the first difference)
// or skipped.
func conformanceCommand() *cli.Command {
	return &cli.Command{
		Name:      "conformance",
		Usage:     "replay KMIP XML test vectors against a server and compare its replies",
		ArgsUsage: "FILES...",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "server", Required: true, Usage: "KMIP server `HOST:PORT`"},
			&cli.StringFlag{Name: "ca", Required: true, Usage: "`PEM` file of the CA that signed the server certificate"},
			&cli.StringFlag{Name: "cert", Required: true, Usage: "client certificate `PEM` (may hold the private key too)"},
			&cli.StringFlag{Name: "key", Usage: "client private key `PEM` (default: read from --cert)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return errors.New("conformance: name at least one vector file")
			}
			cfg, err := conformanceTLS(c.String("ca"), c.String("cert"), c.String("key"))
			if err != nil {
				return err
			}
			r := &vectors.Runner{Addr: c.String("server"), TLS: cfg, Skip: vectors.Skiplist}
			sum := r.RunAll(c.Context, c.Args().Slice(), c.App.Writer)
			if sum.Failed > 0 {
				return fmt.Errorf("conformance: %d of %d files failed", sum.Failed, len(sum.Results))
			}
			return nil
		},
	}
}

func conformanceTLS(caPath, certPath, keyPath string) (*tls.Config, error) {
	if keyPath == "" {
		keyPath = certPath
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("load client certificate %s and key %s: %w", certPath, keyPath, err)
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("read ca %s: %w", caPath, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("read ca %s: no PEM certificate found", caPath)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
