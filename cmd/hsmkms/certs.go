package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/meta"
)

func certsCommand() *cli.Command {
	return &cli.Command{
		Name:  "certs",
		Usage: "issue, list and revoke client certificates signed by the appliance CA",
		Subcommands: []*cli.Command{
			{
				Name:  "issue",
				Usage: "issue a client certificate and key in one PEM file (mode 0600)",
				Description: "The bundle is what mongod's kmip.clientCertificateFile, a driver's tlsCertificateKeyFile\n" +
					"and PyKMIP's cert and key options take. NAME becomes the client's identity (subject CN):\n" +
					"keys it creates belong to it. Role admin may manage every object; client only its own.",
				Flags: []cli.Flag{
					dirFlag(),
					&cli.StringFlag{Name: "name", Required: true, Usage: "client identity (certificate CN), e.g. mongod-1"},
					&cli.StringFlag{Name: "role", Value: string(pki.RoleClient), Usage: "`ROLE`: admin or client"},
					&cli.StringFlag{Name: "out", Required: true, Usage: "`FILE` to create (never overwritten)"},
					&cli.IntFlag{Name: "days", Value: int(pki.ClientValidity / (24 * time.Hour)), Usage: "validity in days"},
				},
				Action: certsIssue,
			},
			{
				Name:   "list",
				Usage:  "list the certificates this appliance issued (from DIR/pki/issued)",
				Flags:  []cli.Flag{dirFlag()},
				Action: certsList,
			},
			certsRevokeCommand(),
		},
	}
}

func certsIssue(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	role, err := pki.ParseRole(c.String("role"))
	if err != nil {
		return fmt.Errorf("check --role: %w", err)
	}
	days := c.Int("days")
	if days < 1 {
		return fmt.Errorf("check --days: %d is not a positive number of days", days)
	}
	ca, err := pki.LoadCA(pkiFiles(cfg))
	if err != nil {
		return err
	}
	out, err := filepath.Abs(c.String("out"))
	if err != nil {
		return fmt.Errorf("check --out: %w", err)
	}
	_, st, release, err := openAudited(c.Context, cfg)
	if err != nil {
		return err
	}
	defer release()
	detail := fmt.Sprintf("name %q, role %s, %d days, out %s", c.String("name"), role, days, out)
	b, err := ca.IssueFile(out, pki.ClientRequest(c.String("name"), role, time.Duration(days)*24*time.Hour), time.Now())
	if err == nil {
		detail += ", serial " + b.Cert.SerialNumber.Text(16)
	}
	// The certificate lives in files, not the store: only its outcome joins the record.
	if aerr := auditedUpdate(c.Context, st, "certs issue", nil, detail, func(*meta.Tx) error { return err }); aerr != nil {
		return aerr
	}
	fmt.Fprintf(c.App.Writer, "issued %s certificate %q (serial %s, valid until %s) to %s\n"+
		"clients also need the CA certificate %s\n",
		role, b.Cert.Subject.CommonName, b.Cert.SerialNumber.Text(16), b.Cert.NotAfter.UTC().Format(time.DateOnly), out, cfg.TLS.CA)
	return nil
}

func certsList(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	certs, err := pki.List(pkiFiles(cfg))
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SERIAL\tNAME\tROLE\tNOT AFTER\tSANS")
	for _, ct := range certs {
		role := "server"
		if r, ok := pki.RoleOf(ct); ok {
			role = string(r)
		}
		sans := append([]string{}, ct.DNSNames...)
		for _, ip := range ct.IPAddresses {
			sans = append(sans, ip.String())
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", ct.SerialNumber.Text(16), ct.Subject.CommonName, role,
			ct.NotAfter.UTC().Format(time.DateOnly), strings.Join(sans, ","))
	}
	return w.Flush()
}
