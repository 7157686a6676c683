package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/meta"
)

// auditMACTimeout bounds one chain MAC: it runs on the store's writer, so a
// stuck token must fail the audit write rather than stall every commit.
const auditMACTimeout = 5 * time.Second

// pruneEvery is how often serve applies audit.retention.
const pruneEvery = 24 * time.Hour

// auditPage is how many records tail, export and follow read per query.
const auditPage = 1000

// chainer computes the audit chain's MACs with the token's audit key.
type chainer struct{ tok *hsm.Token }

var _ meta.Chainer = chainer{}

// MAC is HMAC-SHA256 under hsm.AuditLabel, in the token.
func (c chainer) MAC(prev, record []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), auditMACTimeout)
	defer cancel()
	return c.tok.AuditMAC(ctx, prev, record)
}

var _ kmip.AuditSink = (*meta.AuditLog)(nil)

// auditChain makes sure the token holds the audit key (appliances created
// before the audit trail get it here) and returns the openStore option that
// chains records with it.
func auditChain(ctx context.Context, tok *hsm.Token) (func(*meta.Options), error) {
	if err := tok.EnsureAuditKey(ctx); err != nil {
		return nil, fmt.Errorf("prepare the audit key %s in the token: %w", hsm.AuditLabel, err)
	}
	return func(o *meta.Options) { o.Audit = chainer{tok} }, nil
}

// auditTrail is serve's audit writer plus its retention loop.
type auditTrail struct {
	*meta.AuditLog
	log  *slog.Logger
	stop context.CancelFunc
	done chan struct{}
}

// openAuditTrail starts the batching audit writer on st (opened with
// auditChain) and, when audit.retention is set, prunes older records now and
// once a day.
func openAuditTrail(cfg *config.Config, log *slog.Logger, st *meta.Store) (*auditTrail, error) {
	l, err := meta.OpenAuditLog(st, meta.AuditLogOptions{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("open audit trail in %s: %w", cfg.Store.Path, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	a := &auditTrail{AuditLog: l, log: log, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		if cfg.Audit.Retention <= 0 {
			return
		}
		t := time.NewTicker(pruneEvery)
		defer t.Stop()
		for {
			n, err := pruneAudit(ctx, st, time.Now().Add(-cfg.Audit.Retention), "audit.retention "+cfg.Audit.Retention.String())
			if err != nil {
				log.Error("audit prune failed", "err", err)
			} else if n > 0 {
				log.Info("audit records pruned", "count", n, "retention", cfg.Audit.Retention.String())
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return a, nil
}

// Close stops the retention loop and flushes the queued records. Call it
// after the KMIP server stopped and before the store closes.
func (a *auditTrail) Close() error {
	a.stop()
	<-a.done
	if err := a.AuditLog.Close(); err != nil {
		a.log.Error("audit trail closed with records lost", "err", err)
		return err
	}
	return nil
}

// pruneAudit deletes records older than before and records that it did, in
// one transaction.
func pruneAudit(ctx context.Context, st *meta.Store, before time.Time, why string) (int64, error) {
	var n int64
	err := st.Update(ctx, func(tx *meta.Tx) (err error) {
		if n, err = tx.PruneAudit(before); err != nil {
			return err
		}
		return tx.AppendAudit(cliRecord("audit prune", nil,
			fmt.Sprintf("%d records before %s (%s)", n, before.UTC().Format(time.RFC3339), why), nil))
	})
	return n, err
}

// cliRecord describes an administrative command run by the OS user.
func cliRecord(op string, ids []string, detail string, err error) meta.AuditRecord {
	r := meta.AuditRecord{Kind: meta.AuditCLI, Actor: osUser(), Operation: op, ObjectIDs: ids, Status: "Success", Message: detail}
	if err != nil {
		r.Status, r.Message = "Failed", err.Error()
		if detail != "" {
			r.Message = detail + ": " + r.Message
		}
	}
	return r
}

// appendRecord stores one record of kind (backup, restore) for an operation the
// OS user ran, in its own transaction.
func appendRecord(ctx context.Context, st *meta.Store, kind meta.AuditKind, op, detail string, opErr error) error {
	rec := cliRecord(op, nil, detail, opErr)
	rec.Kind = kind
	if err := st.Update(ctx, func(tx *meta.Tx) error { return tx.AppendAudit(rec) }); err != nil {
		return fmt.Errorf("write audit record of %s: %w", op, err)
	}
	return nil
}

// osUser names who ran the command; sudo's caller is named too.
func osUser() string {
	name := fmt.Sprintf("uid %d", os.Getuid())
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if s := os.Getenv("SUDO_USER"); s != "" && s != name {
		name += " (sudo by " + s + ")"
	}
	return name
}

// openAudited opens the token and the store with the audit chain, for commands
// that write or verify audit records or act on keys. release closes both.
func openAudited(ctx context.Context, cfg *config.Config) (tok *hsm.Token, st *meta.Store, release func(), err error) {
	tok, err = openToken(ctx, cfg, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	chain, err := auditChain(ctx, tok)
	if err == nil {
		st, err = openStore(ctx, cfg, nil, chain)
	}
	if err != nil {
		tok.Close()
		return nil, nil, nil, err
	}
	return tok, st, func() { st.Close(); tok.Close() }, nil
}

// auditedUpdate runs a CLI action and its audit record in one transaction. If
// the action fails, the failure is recorded on its own.
func auditedUpdate(ctx context.Context, st *meta.Store, op string, ids []string, detail string, action func(*meta.Tx) error) error {
	err := st.Update(ctx, func(tx *meta.Tx) error {
		if err := action(tx); err != nil {
			return err
		}
		return tx.AppendAudit(cliRecord(op, ids, detail, nil))
	})
	if err == nil {
		return nil
	}
	if rerr := st.Update(ctx, func(tx *meta.Tx) error { return tx.AppendAudit(cliRecord(op, ids, detail, err)) }); rerr != nil {
		return errors.Join(err, fmt.Errorf("write audit record: %w", rerr))
	}
	return err
}

// recordCLI appends one CLI record, for commands whose action is not in the
// store (init, certs issue).
func recordCLI(ctx context.Context, cfg *config.Config, rec meta.AuditRecord) error {
	_, st, closeAll, err := openAudited(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeAll()
	if err := st.Update(ctx, func(tx *meta.Tx) error { return tx.AppendAudit(rec) }); err != nil {
		return fmt.Errorf("write audit record in %s: %w", cfg.Store.Path, err)
	}
	return nil
}

// auditedAction records the outcome of an administrative command that changes the
// token's keys (success, or its error) once it has run; its arguments name the files
// it read or wrote (passphrases never come from the command line).
func auditedAction(op string, fn cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		err := fn(c)
		cfg, cerr := loadConfig(c)
		if cerr != nil {
			return err // no appliance to record into; fn has said why
		}
		if rerr := recordCLI(c.Context, cfg, cliRecord(op, nil, strings.Join(c.Args().Slice(), " "), err)); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
}

// recordInit starts the audit trail of a new appliance with its init record.
func recordInit(ctx context.Context, cfgPath, tokenLabel string, sans []string) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	detail := fmt.Sprintf("token %q, server certificate for localhost and %s", tokenLabel, strings.Join(append([]string{"127.0.0.1", "::1"}, sans...), ", "))
	if err := recordCLI(ctx, cfg, cliRecord("init", nil, detail, nil)); err != nil {
		return fmt.Errorf("init audit trail: %w", err)
	}
	return nil
}

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "verify, read, export and prune the tamper-evident audit trail",
		Description: "Every KMIP request, administrative command, mirror apply, backup and restore is a\n" +
			"record chained to the previous one by an HMAC keyed in the token. These commands read\n" +
			"the database directly and work while `serve` runs.",
		Subcommands: []*cli.Command{
			{
				Name:   "verify",
				Usage:  "recompute the chain; exit 1 and name the first bad record if it was tampered with",
				Flags:  []cli.Flag{dirFlag()},
				Action: auditVerify,
			},
			{
				Name:  "tail",
				Usage: "print the newest records",
				Flags: []cli.Flag{dirFlag(),
					&cli.IntFlag{Name: "n", Value: 20, Usage: "how many records"},
					&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new records until interrupted"},
				},
				Action: auditTail,
			},
			{
				Name:  "export",
				Usage: "write records as JSON lines, for a SIEM",
				Flags: []cli.Flag{dirFlag(),
					&cli.StringFlag{Name: "since", Required: true, Usage: "`TIME`: RFC 3339 (2025-01-31T00:00:00Z) or a duration ago (24h)"},
					&cli.StringFlag{Name: "out", Usage: "`FILE` to create (never overwritten); default stdout"},
				},
				Action: auditExport,
			},
			{
				Name:  "prune",
				Usage: "delete records older than TIME, keeping the rest verifiable",
				Flags: []cli.Flag{dirFlag(),
					&cli.StringFlag{Name: "before", Required: true, Usage: "`TIME`: RFC 3339 or a duration ago (2160h)"},
				},
				Action: auditPrune,
			},
		},
	}
}

func auditVerify(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	_, st, closeAll, err := openAudited(c.Context, cfg)
	if err != nil {
		return err
	}
	defer closeAll()
	v, err := st.VerifyAudit(c.Context)
	if err != nil {
		return fmt.Errorf("verify the audit trail in %s: %w", cfg.Store.Path, err)
	}
	from := "the start"
	if v.Anchor > 0 {
		from = fmt.Sprintf("the prune checkpoint at seq %d", v.Anchor)
	}
	if !v.OK {
		return fmt.Errorf("audit trail in %s is NOT intact: record %d %s: %s (%d records from %s verified before it)",
			cfg.Store.Path, v.BadSeq, v.Problem, v.Detail, v.Count, from)
	}
	span := ""
	if v.Count > 0 {
		span = fmt.Sprintf(", seq %d to %d", v.FirstSeq, v.LastSeq)
	}
	fmt.Fprintf(c.App.Writer, "audit trail OK: %d records%s, chained from %s\n", v.Count, span, from)
	return nil
}

func auditTail(c *cli.Context) error {
	n := c.Int("n")
	if n < 0 {
		return fmt.Errorf("check -n: %d is negative", n)
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	st, err := openStore(c.Context, cfg, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	var after int64
	if err := st.View(c.Context, func(tx *meta.Tx) error {
		head, err := tx.AuditHead()
		after = max(head-int64(n), 0)
		return err
	}); err != nil {
		return fmt.Errorf("read the audit trail in %s: %w", cfg.Store.Path, err)
	}
	for {
		next, err := readAudit(c.Context, st, after, func(r meta.AuditRecord) error {
			_, err := fmt.Fprintln(c.App.Writer, formatRecord(r))
			return err
		})
		if err != nil {
			return fmt.Errorf("read the audit trail in %s: %w", cfg.Store.Path, err)
		}
		after = next
		if !c.Bool("follow") {
			return nil
		}
		select {
		case <-c.Context.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// readAudit passes every record after seq to fn in order, a page per read
// transaction, and returns the last seq read.
func readAudit(ctx context.Context, st *meta.Store, after int64, fn func(meta.AuditRecord) error) (int64, error) {
	for {
		var page []meta.AuditRecord
		if err := st.View(ctx, func(tx *meta.Tx) (err error) {
			page, err = tx.AuditRange(after, auditPage)
			return err
		}); err != nil {
			return after, err
		}
		for _, r := range page {
			if err := fn(r); err != nil {
				return after, err
			}
			after = r.Seq
		}
		if len(page) < auditPage {
			return after, nil
		}
	}
}

// formatRecord is tail's one line per record.
func formatRecord(r meta.AuditRecord) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s %s %q", r.Seq, r.Time.Format(time.RFC3339Nano), r.Kind, r.Actor)
	if r.RemoteAddr != "" {
		fmt.Fprintf(&b, " from %s", r.RemoteAddr)
	}
	if r.Version != "" {
		fmt.Fprintf(&b, " kmip %s", r.Version)
	}
	fmt.Fprintf(&b, " %s", r.Operation)
	if len(r.ObjectIDs) > 0 {
		fmt.Fprintf(&b, " [%s]", strings.Join(r.ObjectIDs, " "))
	}
	fmt.Fprintf(&b, " %s", r.Status)
	if r.Reason != "" {
		fmt.Fprintf(&b, " %s", r.Reason)
	}
	if r.Message != "" {
		fmt.Fprintf(&b, " %q", r.Message)
	}
	return b.String()
}

// exported is one line of audit export. The field names are a stable
// interface for SIEM parsers: add fields, never rename them.
type exported struct {
	Seq         int64     `json:"seq"`
	Time        time.Time `json:"time"`
	Kind        string    `json:"kind"`
	Actor       string    `json:"actor"`
	Fingerprint string    `json:"cert_sha256,omitempty"`
	RemoteAddr  string    `json:"remote_addr,omitempty"`
	Version     string    `json:"kmip_version,omitempty"`
	Operation   string    `json:"operation"`
	ObjectIDs   []string  `json:"object_ids"`
	Status      string    `json:"status"`
	Reason      string    `json:"reason,omitempty"`
	Message     string    `json:"message,omitempty"`
	MAC         string    `json:"mac"`
}

func auditExport(c *cli.Context) error {
	since, err := parseWhen(c.String("since"), time.Now())
	if err != nil {
		return fmt.Errorf("check --since: %w", err)
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	st, err := openStore(c.Context, cfg, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	if c.String("out") == "" {
		if _, err := exportAudit(c.Context, st, since, c.App.Writer); err != nil {
			return fmt.Errorf("export the audit trail of %s: %w", cfg.Store.Path, err)
		}
		return nil
	}
	f, err := os.OpenFile(c.String("out"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create --out: %w", err)
	}
	n, err := exportAudit(c.Context, st, since, f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("export the audit trail of %s to %s: %w", cfg.Store.Path, f.Name(), err)
	}
	fmt.Fprintf(c.App.ErrWriter, "exported %d records to %s\n", n, f.Name())
	return nil
}

// exportAudit writes the records from since on as JSON lines.
func exportAudit(ctx context.Context, st *meta.Store, since time.Time, w io.Writer) (int, error) {
	var after int64
	if err := st.View(ctx, func(tx *meta.Tx) (err error) {
		after, err = tx.AuditSince(since)
		return err
	}); err != nil {
		return 0, err
	}
	enc := json.NewEncoder(w)
	n := 0
	_, err := readAudit(ctx, st, after, func(r meta.AuditRecord) error {
		n++
		ids := r.ObjectIDs
		if ids == nil {
			ids = []string{}
		}
		return enc.Encode(exported{
			Seq: r.Seq, Time: r.Time, Kind: string(r.Kind), Actor: r.Actor, Fingerprint: r.Fingerprint,
			RemoteAddr: r.RemoteAddr, Version: r.Version, Operation: r.Operation, ObjectIDs: ids,
			Status: r.Status, Reason: r.Reason, Message: r.Message, MAC: hex.EncodeToString(r.MAC),
		})
	})
	return n, err
}

func auditPrune(c *cli.Context) error {
	before, err := parseWhen(c.String("before"), time.Now())
	if err != nil {
		return fmt.Errorf("check --before: %w", err)
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	_, st, closeAll, err := openAudited(c.Context, cfg)
	if err != nil {
		return err
	}
	defer closeAll()
	n, err := pruneAudit(c.Context, st, before, "audit prune --before "+c.String("before"))
	if err != nil {
		return fmt.Errorf("prune the audit trail in %s: %w", cfg.Store.Path, err)
	}
	fmt.Fprintf(c.App.Writer, "pruned %d records older than %s\n", n, before.UTC().Format(time.RFC3339))
	return nil
}

// parseWhen reads an RFC 3339 time, or a duration meaning that long before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2025-01-31T00:00:00Z) nor a duration (24h)", s)
	}
	if d < 0 {
		return time.Time{}, fmt.Errorf("%q is a negative duration", s)
	}
	return now.Add(-d), nil
}
