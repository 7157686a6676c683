package main

import (
	"errors"
	"fmt"
	"math/big"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/cmd/internal/pki"
)

func certsRevokeCommand() *cli.Command {
	return &cli.Command{
		Name:  "revoke",
		Usage: "revoke client certificates by serial or by name; a running server refuses them at the next handshake",
		Description: "Adds the serials to DIR/pki/revoked.txt (mode 0600, replaced atomically). serve rereads the\n" +
			"file when it changes, so no restart is needed. --name revokes every certificate this CA\n" +
			"issued to NAME (as `certs list` shows them). Connections already open stay open until they\n" +
			"close; restart serve to cut them at once. Mirrored appliances receive the revocation from\n" +
			"this one's serve within seconds.",
		Flags: []cli.Flag{
			dirFlag(),
			&cli.StringSliceFlag{Name: "serial", Usage: "`SERIAL` in hex, as `certs list` prints it (repeatable)"},
			&cli.StringFlag{Name: "name", Usage: "revoke every certificate issued to `NAME`"},
		},
		Action: certsRevoke,
	}
}

func certsRevoke(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	files := pkiFiles(cfg)
	var serials []*big.Int
	for _, s := range c.StringSlice("serial") {
		n, err := pki.ParseSerial(s)
		if err != nil {
			return fmt.Errorf("check --serial: %w", err)
		}
		serials = append(serials, n)
	}
	if name := c.String("name"); name != "" {
		certs, err := pki.List(files)
		if err != nil {
			return err
		}
		found := 0
		for _, ct := range certs {
			if _, isClient := pki.RoleOf(ct); isClient && ct.Subject.CommonName == name {
				serials = append(serials, ct.SerialNumber)
				found++
			}
		}
		if found == 0 {
			return fmt.Errorf("check --name: this CA issued no client certificate to %q (see `hsmkms certs list`)", name)
		}
	}
	if len(serials) == 0 {
		return errors.New("certs revoke: give --serial SERIAL or --name NAME")
	}
	added, err := pki.Revoke(files.Revoked, serials...)
	if err != nil {
		return err
	}
	for _, s := range added {
		fmt.Fprintf(c.App.Writer, "revoked %s\n", s.Text(16))
	}
	if already := len(serials) - len(added); already > 0 {
		fmt.Fprintf(c.App.Writer, "%d serial(s) were already revoked\n", already)
	}
	fmt.Fprintf(c.App.Writer, "%s updated; a running server refuses these certificates from its next handshake\n", files.Revoked)
	return nil
}
