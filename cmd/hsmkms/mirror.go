package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip/ops"
	"github.com/hsmkms/hsmkms/meta"
	"github.com/hsmkms/hsmkms/mirror"
)

func mirrorCommand() *cli.Command {
	return &cli.Command{
		Name:  "mirror",
		Usage: "pair appliances and watch active-active replication between them",
		Description: "Pairing: run `mirror invite` on an appliance whose serve has [mirror] enabled, carry the\n" +
			"printed invitation to the other appliance and feed it to `mirror join` there (stdin or\n" +
			"--invite-file). Both fingerprints are shown for confirmation. For N appliances pair every two.",
		Subcommands: []*cli.Command{
			{
				Name:  "invite",
				Usage: "print a one-time invitation for another appliance to join (valid --ttl)",
				Flags: []cli.Flag{dirFlag(),
					&cli.DurationFlag{Name: "ttl", Value: 15 * time.Minute, Usage: "how long the invitation is valid"}},
				Action: auditedAction("mirror invite", mirrorInvite),
			},
			{
				Name:  "join",
				Usage: "pair with the appliance that printed an invitation (read from stdin or --invite-file)",
				Flags: []cli.Flag{dirFlag(),
					&cli.StringFlag{Name: "invite-file", Usage: "read the invitation from `FILE` instead of stdin"},
					&cli.BoolFlag{Name: "yes", Usage: "do not ask to confirm the fingerprints"}},
				Action: auditedAction("mirror join", mirrorJoin),
			},
			{
				Name:      "unpair",
				Usage:     "forget a peer and delete the pair KEK shared with it",
				ArgsUsage: "PEER-ID",
				Flags:     []cli.Flag{dirFlag()},
				Action:    auditedAction("mirror unpair", mirrorUnpair),
			},
			{
				Name:   "status",
				Usage:  "list peers: state, lag in entries and seconds, last contact, last error",
				Flags:  []cli.Flag{dirFlag(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: mirrorStatus,
			},
			{
				Name:   "ca-bundle",
				Usage:  "print this appliance's CA and its peers' (PEM): the CA file for clients that fail over between them",
				Flags:  []cli.Flag{dirFlag()},
				Action: mirrorCABundle,
			},
			{
				Name: "digest",
				Usage: "print a digest of every object's replicated metadata and of its key (computed in the token);\n" +
					"equal output on two appliances means they hold the same objects",
				Flags:  []cli.Flag{dirFlag()},
				Action: mirrorDigest,
			},
		},
	}
}

// mirrorIdentity is this appliance's TLS identity for mirroring: its KMIP
// server certificate and key (possibly in the token).
func mirrorIdentity(ctx context.Context, cfg *config.Config, tok *hsm.Token) (tls.Certificate, error) {
	tc, err := serverTLS(ctx, cfg, tok)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tc.Certificates[0], nil
}

func mirrorName(cfg *config.Config) string {
	if cfg.Mirror.Name != "" {
		return cfg.Mirror.Name
	}
	h, _ := os.Hostname()
	return h
}

// pairing is what invite and join work with: the appliance's token, audited
// store and TLS identity.
type pairing struct {
	tok  *hsm.Token
	st   *meta.Store
	cert tls.Certificate
}

// openPairing opens them for cfg; release closes them.
func openPairing(c *cli.Context, cfg *config.Config) (p pairing, release func(), err error) {
	tok, st, release, err := openAudited(c.Context, cfg)
	if err != nil {
		return p, nil, err
	}
	cert, err := mirrorIdentity(c.Context, cfg, tok)
	if err != nil {
		release()
		return p, nil, err
	}
	return pairing{tok: tok, st: st, cert: cert}, release, nil
}

func mirrorInvite(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	p, release, err := openPairing(c, cfg)
	if err != nil {
		return err
	}
	defer release()
	st, cert := p.st, p.cert
	inv, err := mirror.Invite(c.Context, st, cert, cfg.Mirror.AdvertiseAddr(), c.Duration("ttl"))
	if err != nil {
		return err
	}
	if !cfg.Mirror.Enabled {
		fmt.Fprintf(os.Stderr, "warning: mirror.enabled is false in %s: serve will not answer the join until it is true\n", cfg.Path)
	}
	fmt.Fprintf(os.Stderr, "appliance %s at %s, key fingerprint %s\nthe invitation below is valid once, for %s; carry it to the other appliance and run `hsmkms mirror join` there:\n",
		inv.ID, inv.Addr, mirror.Fingerprint(inv.SPKI), c.Duration("ttl"))
	fmt.Println(inv.String())
	return nil
}

func mirrorJoin(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	var raw []byte
	if f := c.String("invite-file"); f != "" {
		raw, err = os.ReadFile(f)
	} else {
		raw, err = bufio.NewReader(os.Stdin).ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("read invitation: %w", err)
	}
	inv, err := mirror.ParseInvitation(string(raw))
	if err != nil {
		return err
	}
	pr, release, err := openPairing(c, cfg)
	if err != nil {
		return err
	}
	defer release()
	tok, st, cert := pr.tok, pr.st, pr.cert
	confirm := func(local, remote string) bool {
		fmt.Fprintf(os.Stderr, "this appliance's key: %s\npeer %s at %s, key: %s\n", local, inv.ID, inv.Addr, remote)
		if c.Bool("yes") {
			return true
		}
		fmt.Fprint(os.Stderr, "do these match what both appliances show? [y/N] ")
		ans, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		return strings.EqualFold(strings.TrimSpace(ans), "y")
	}
	ca, err := os.ReadFile(cfg.TLS.CA)
	if err != nil {
		return fmt.Errorf("read tls.ca of %s: %w", cfg.Path, err)
	}
	p, err := mirror.Join(c.Context, mirror.JoinConfig{Keys: tok, Store: st, Cert: cert, CA: ca, Name: mirrorName(cfg),
		Advertise: cfg.Mirror.AdvertiseAddr(), Confirm: confirm}, inv)
	if err != nil {
		return err
	}
	fmt.Printf("paired with %s (%s) at %s; the pair KEK %s is in the token\n", p.ID, p.Name, p.Addr, p.KEK)
	if !cfg.Mirror.Enabled {
		fmt.Fprintf(os.Stderr, "warning: mirror.enabled is false in %s: set it and restart serve to replicate\n", cfg.Path)
	}
	return nil
}

func mirrorUnpair(c *cli.Context) error {
	if c.NArg() != 1 {
		return withExit(exitConfig, errors.New("mirror unpair: name one PEER-ID (see `hsmkms mirror status`)"))
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
	if err := mirror.Unpair(c.Context, tok, st, c.Args().First()); err != nil {
		return err
	}
	fmt.Printf("unpaired %s\n", c.Args().First())
	return nil
}

func mirrorStatus(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	st, err := openStore(c.Context, cfg, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	var (
		self  string
		head  int64
		peers []*meta.Peer
	)
	err = st.View(c.Context, func(tx *meta.Tx) (err error) {
		if self, err = tx.ApplianceID(); err != nil {
			return err
		}
		if head, err = tx.JournalHead(); err != nil {
			return err
		}
		peers, err = tx.Peers()
		return err
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", cfg.Store.Path, err)
	}
	type row struct {
		ID          string  `json:"id"`
		Name        string  `json:"name"`
		Addr        string  `json:"addr"`
		Fingerprint string  `json:"fingerprint"`
		State       string  `json:"state"`
		LagEntries  int64   `json:"lag_entries"`
		LagSeconds  float64 `json:"lag_seconds"`
		LagP50MS    int64   `json:"lag_p50_ms"`
		LagP99MS    int64   `json:"lag_p99_ms"`
		LastContact string  `json:"last_contact"`
		LastError   string  `json:"last_error"`
	}
	out := struct {
		ID          string `json:"id"`
		Enabled     bool   `json:"enabled"`
		JournalHead int64  `json:"journal_head"`
		Peers       []row  `json:"peers"`
	}{ID: self, Enabled: cfg.Mirror.Enabled, JournalHead: head, Peers: []row{}}
	for _, p := range peers {
		r := row{ID: p.ID, Name: p.Name, Addr: p.Addr, Fingerprint: mirror.Fingerprint(p.SPKI), State: p.State,
			LagEntries: p.LagEntries, LagSeconds: p.Lag.Seconds(), LagP50MS: p.LagP50.Milliseconds(), LagP99MS: p.LagP99.Milliseconds(),
			LastError: p.LastError}
		if !p.LastContact.IsZero() {
			r.LastContact = p.LastContact.Format(time.RFC3339Nano)
		}
		// serve refreshes the status every second; a stale one means serve is
		// stopped, has mirroring disabled, or cannot write its store.
		if p.StatusAt.IsZero() || time.Since(p.StatusAt) > 5*time.Second {
			r.State = "unknown"
			since := "never"
			if !p.StatusAt.IsZero() {
				since = time.Since(p.StatusAt).Round(time.Second).String() + " ago"
			}
			r.LastError = fmt.Sprintf("status last refreshed %s: serve is stopped, has mirroring disabled, or cannot write %s", since, cfg.Store.Path)
		}
		out.Peers = append(out.Peers, r)
	}
	if c.Bool("json") {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Printf("appliance %s, mirroring %s, journal head %d\n", self, map[bool]string{true: "enabled", false: "disabled"}[cfg.Mirror.Enabled], head)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tNAME\tADDR\tSTATE\tLAG\tLAG(s)\tP50/P99(ms)\tLAST CONTACT\tLAST ERROR")
	for _, r := range out.Peers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.1f\t%d/%d\t%s\t%s\n", r.ID, r.Name, r.Addr, r.State, r.LagEntries, r.LagSeconds,
			r.LagP50MS, r.LagP99MS, r.LastContact, r.LastError)
	}
	return tw.Flush()
}

func mirrorDigest(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	tok, st, release, err := openAudited(c.Context, cfg)
	if err != nil {
		return err
	}
	defer release()
	var lines []string
	err = st.View(c.Context, func(tx *meta.Tx) error {
		return tx.Walk(func(o *meta.Object, grants []string) error {
			cp := *o
			cp.Wrapped, cp.KEK, cp.Rev.MSeq = nil, "", 0
			b, err := json.Marshal(struct {
				O *meta.Object
				G []string
			}{&cp, grants})
			if err != nil {
				return err
			}
			md := sha256.Sum256(b)
			kd := "-"
			if o.Wrapped != nil && o.KEK != "" {
				sum, err := tok.Digest(c.Context, hsm.Key{ID: o.ID, Kind: ops.MaterialKind(o), Wrapped: hsm.Wrapped{Blob: o.Wrapped, KEK: o.KEK}})
				if err != nil {
					kd = "error:" + err.Error()
				} else {
					kd = hex.EncodeToString(sum)
				}
			} else if o.Wrapped != nil {
				s := sha256.Sum256(o.Wrapped) // public material, stored as is
				kd = hex.EncodeToString(s[:])
			}
			lines = append(lines, fmt.Sprintf("%s %s %s\n", o.ID, hex.EncodeToString(md[:]), kd))
			return nil
		})
	})
	if err != nil {
		return err
	}
	// Insertion order differs between appliances; object IDs do not.
	slices.Sort(lines)
	total := sha256.New()
	for _, l := range lines {
		total.Write([]byte(l))
		if _, err := fmt.Fprint(os.Stdout, l); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "%d objects, digest %s\n", len(lines), hex.EncodeToString(total.Sum(nil)))
	return nil
}

// clientCAs returns the pool of CAs KMIP client certificates may chain to:
// this appliance's own (own) and, as pairings come and go, its peers'.
func clientCAs(own *x509.CertPool, node *mirror.Node) func() *x509.CertPool {
	var (
		mu   sync.Mutex
		key  string
		pool = own
	)
	return func() *x509.CertPool {
		cas := node.PeerCAs()
		h := sha256.New()
		for _, ca := range cas {
			h.Write(ca)
		}
		k := hex.EncodeToString(h.Sum(nil))
		mu.Lock()
		defer mu.Unlock()
		if k != key {
			p := own.Clone()
			for _, ca := range cas {
				p.AppendCertsFromPEM(ca)
			}
			key, pool = k, p
		}
		return pool
	}
}

// mirrorCABundle prints this appliance's CA and its peers' (PEM), for the CA
// file of clients that fail over between the appliances.
func mirrorCABundle(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	own, err := os.ReadFile(cfg.TLS.CA)
	if err != nil {
		return fmt.Errorf("read tls.ca of %s: %w", cfg.Path, err)
	}
	st, err := openStore(c.Context, cfg, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	var peers []*meta.Peer
	if err := st.View(c.Context, func(tx *meta.Tx) (err error) {
		peers, err = tx.Peers()
		return err
	}); err != nil {
		return fmt.Errorf("read %s: %w", cfg.Store.Path, err)
	}
	os.Stdout.Write(own)
	for _, p := range peers {
		os.Stdout.Write(p.CAPEM)
	}
	return nil
}

// revocationFile is DIR/pki/revoked.txt as mirroring shares it with peers.
type revocationFile string

func (f revocationFile) List() ([]string, error) {
	m, err := pki.ReadRevoked(string(f))
	if err != nil {
		return nil, err
	}
	return slices.Collect(maps.Keys(m)), nil
}

func (f revocationFile) Add(serials []string) ([]string, error) {
	ns := make([]*big.Int, 0, len(serials))
	for _, s := range serials {
		n, err := pki.ParseSerial(s)
		if err != nil {
			return nil, err
		}
		ns = append(ns, n)
	}
	added, err := pki.Revoke(string(f), ns...)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(added))
	for i, n := range added {
		out[i] = n.Text(16)
	}
	return out, nil
}
