package meta

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Chainer computes the MAC that chains audit records: a keyed MAC (the
// appliance uses HMAC-SHA256 under a token key) over prev, the previous
// record's MAC, followed by record, a record's canonical encoding. meta
// declares it so that it stays a leaf; cmd hands in the token.
type Chainer interface {
	MAC(prev, record []byte) ([]byte, error)
}

// AuditKind says what wrote an audit record.
type AuditKind string

// Audit record kinds; the schema accepts only these.
const (
	AuditKMIP    AuditKind = "kmip"    // a KMIP batch item
	AuditCLI     AuditKind = "cli"     // an administrative command
	AuditMirror  AuditKind = "mirror"  // a mirror apply
	AuditBackup  AuditKind = "backup"  // a backup
	AuditRestore AuditKind = "restore" // a restore
)

func (k AuditKind) valid() bool {
	switch k {
	case AuditKMIP, AuditCLI, AuditMirror, AuditBackup, AuditRestore:
		return true
	}
	return false
}

// AuditRecord is one entry of the audit trail. Seq and MAC are assigned by
// AppendAudit; every other field is covered by the MAC.
type AuditRecord struct {
	Seq         int64
	Time        time.Time // nanosecond precision, UTC on read; zero means now
	Kind        AuditKind
	Actor       string   // client identity (certificate CN) or OS user
	Fingerprint string   // hex SHA-256 of the client certificate
	RemoteAddr  string   // client host:port
	Version     string   // KMIP protocol version, e.g. "1.2"
	Operation   string   // KMIP operation or CLI action
	ObjectIDs   []string // objects the action named or produced
	Status      string   // e.g. "Success", "OperationFailed"
	Reason      string   // result reason of a failure
	Message     string   // detail for a human
	MAC         []byte
}

// AuditAnchor is where the chain starts: the seq and MAC of the last pruned
// record, or seq 0 and an all-zero MAC before any pruning. Tag is the
// anchor's own MAC (nil for the genesis anchor).
type AuditAnchor struct {
	Seq  int64
	MAC  []byte
	Time time.Time
	Tag  []byte
}

// macSize is the length of an HMAC-SHA256 and of the genesis MAC.
const macSize = 32

// genesis is the anchor of a trail that was never pruned.
func genesis() AuditAnchor { return AuditAnchor{MAC: make([]byte, macSize)} }

// canonical is the byte string the MAC covers: a domain label, then seq and
// time as fixed 8-byte big-endian integers, then every text field with a
// varint length, so that no two different records encode alike.
func (r *AuditRecord) canonical() []byte {
	b := make([]byte, 0, 256)
	b = append(b, "hsmkms-audit-record-1\x00"...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Seq))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	str(string(r.Kind))
	str(r.Actor)
	str(r.Fingerprint)
	str(r.RemoteAddr)
	str(r.Version)
	str(r.Operation)
	b = binary.AppendUvarint(b, uint64(len(r.ObjectIDs)))
	for _, id := range r.ObjectIDs {
		str(id)
	}
	str(r.Status)
	str(r.Reason)
	str(r.Message)
	return b
}

// canonical is what an anchor's Tag covers.
func (a *AuditAnchor) canonical() []byte {
	b := append([]byte("hsmkms-audit-anchor-1\x00"), a.MAC...)
	b = binary.BigEndian.AppendUint64(b, uint64(a.Seq))
	return binary.BigEndian.AppendUint64(b, uint64(a.Time.UnixNano()))
}

// chainMAC runs the Chainer and checks what it returned.
func chainMAC(c Chainer, prev, record []byte) ([]byte, error) {
	m, err := c.MAC(prev, record)
	if err != nil {
		return nil, fmt.Errorf("compute audit MAC: %w", err)
	}
	if len(m) != macSize {
		return nil, fmt.Errorf("compute audit MAC: got %d bytes, want %d: %w", len(m), macSize, ErrInvalid)
	}
	return m, nil
}

// chainer returns the Store's Chainer or ErrAuditDisabled.
func (tx *Tx) chainer() (Chainer, error) {
	if tx.audit == nil {
		return nil, ErrAuditDisabled
	}
	return tx.audit, nil
}

// AppendAudit adds rec to the end of the trail. Inside this transaction it
// reads the last record (or the anchor), gives rec the next seq and chains
// its MAC to the previous one, so concurrent writers, including other
// processes, serialise on SQLite's write lock and the chain has no forks.
// It fails with ErrAuditDisabled when the Store has no Chainer.
func (tx *Tx) AppendAudit(rec AuditRecord) error {
	return tx.appendAudit([]AuditRecord{rec})
}

// auditRowsPerInsert is how many records one INSERT statement carries:
// preparing a statement costs more than inserting a row, so batches are
// written a few dozen rows per statement.
const auditRowsPerInsert = 64

// auditInsert is the INSERT of n records.
func auditInsert(n int) string {
	row := "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	return `INSERT INTO audit (seq, time_ns, kind, actor, fingerprint, remote_addr, kmip_version,
		operation, object_ids, status, reason, message, mac) VALUES ` + strings.Repeat(row+", ", n-1) + row
}

// appendAudit appends recs in order, reading the head once.
func (tx *Tx) appendAudit(recs []AuditRecord) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("append audit record: %w", err)
	}
	c, err := tx.chainer()
	if err != nil {
		return fmt.Errorf("append audit record: %w", err)
	}
	for _, r := range recs {
		if !r.Kind.valid() {
			return fmt.Errorf("append audit record: kind %q: %w", r.Kind, ErrInvalid)
		}
	}
	seq, prev, err := tx.auditHead()
	if err != nil {
		return fmt.Errorf("append audit record: %w", err)
	}
	args := make([]any, 0, 13*min(len(recs), auditRowsPerInsert))
	for i, rec := range recs {
		if rec.Time.IsZero() {
			rec.Time = time.Now()
		}
		rec.Time = rec.Time.UTC()
		seq++
		rec.Seq = seq
		if rec.MAC, err = chainMAC(c, prev, rec.canonical()); err != nil {
			return fmt.Errorf("append audit record %d: %w", rec.Seq, err)
		}
		prev = rec.MAC
		ids, err := json.Marshal(nonNil(rec.ObjectIDs))
		if err != nil {
			return fmt.Errorf("append audit record %d: %w", rec.Seq, err)
		}
		args = append(args, rec.Seq, rec.Time.UnixNano(), string(rec.Kind), rec.Actor, rec.Fingerprint,
			rec.RemoteAddr, rec.Version, rec.Operation, string(ids), rec.Status, rec.Reason, rec.Message, rec.MAC)
		if n := len(args) / 13; n == auditRowsPerInsert || i == len(recs)-1 {
			if _, err := tx.q.ExecContext(tx.ctx, auditInsert(n), args...); err != nil {
				return fmt.Errorf("append audit records up to %d: %w", rec.Seq, tx.dbErr(err))
			}
			args = args[:0]
		}
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// auditHead returns the seq and MAC the next record chains from.
func (tx *Tx) auditHead() (int64, []byte, error) {
	var seq int64
	var mac []byte
	err := tx.q.QueryRowContext(tx.ctx, `SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&seq, &mac)
	if err == nil {
		return seq, mac, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, nil, fmt.Errorf("read last audit record: %w", tx.dbErr(err))
	}
	a, err := tx.AuditAnchor()
	if err != nil {
		return 0, nil, err
	}
	return a.Seq, a.MAC, nil
}

// AuditHead returns the seq of the newest record: the anchor's when pruning
// left none, 0 for an empty trail.
func (tx *Tx) AuditHead() (int64, error) {
	if err := tx.usable(false); err != nil {
		return 0, fmt.Errorf("read audit head: %w", err)
	}
	seq, _, err := tx.auditHead()
	if err != nil {
		return 0, fmt.Errorf("read audit head: %w", err)
	}
	return seq, nil
}

// auditCols is the column list of scanAudit.
const auditCols = `seq, time_ns, kind, actor, fingerprint, remote_addr, kmip_version,
	operation, object_ids, status, reason, message, mac`

func scanAudit(rows *sql.Rows) (AuditRecord, error) {
	var r AuditRecord
	var ns int64
	var kind, ids string
	if err := rows.Scan(&r.Seq, &ns, &kind, &r.Actor, &r.Fingerprint, &r.RemoteAddr, &r.Version,
		&r.Operation, &ids, &r.Status, &r.Reason, &r.Message, &r.MAC); err != nil {
		return r, err
	}
	r.Time = time.Unix(0, ns).UTC()
	r.Kind = AuditKind(kind)
	if err := json.Unmarshal([]byte(ids), &r.ObjectIDs); err != nil {
		// A hand-edited row: keep the text so that verify reports the record
		// as modified instead of failing to read the trail.
		r.ObjectIDs = []string{ids}
	}
	if len(r.ObjectIDs) == 0 {
		r.ObjectIDs = nil
	}
	return r, nil
}

// AuditRange returns up to limit records with seq greater than after, in seq
// order. Page through the trail by passing the last seq returned.
func (tx *Tx) AuditRange(after int64, limit int) ([]AuditRecord, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("read audit records: %w", err)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("read audit records: limit %d: %w", limit, ErrInvalid)
	}
	rows, err := tx.q.QueryContext(tx.ctx,
		`SELECT `+auditCols+` FROM audit WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read audit records after %d: %w", after, tx.dbErr(err))
	}
	defer rows.Close()
	var out []AuditRecord
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return nil, fmt.Errorf("read audit records after %d: %w", after, tx.dbErr(err))
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit records after %d: %w", after, tx.dbErr(err))
	}
	return out, nil
}

// AuditSince returns the seq after which the records at or after t begin,
// for AuditRange: the records before it are older than t. Records are
// ordered by seq, and their times almost always follow it.
func (tx *Tx) AuditSince(t time.Time) (int64, error) {
	if err := tx.usable(false); err != nil {
		return 0, fmt.Errorf("find audit records since %v: %w", t, err)
	}
	var first sql.NullInt64
	if err := tx.q.QueryRowContext(tx.ctx, `SELECT MIN(seq) FROM audit WHERE time_ns >= ?`,
		t.UnixNano()).Scan(&first); err != nil {
		return 0, fmt.Errorf("find audit records since %v: %w", t, tx.dbErr(err))
	}
	if first.Valid {
		return first.Int64 - 1, nil
	}
	seq, _, err := tx.auditHead()
	if err != nil {
		return 0, fmt.Errorf("find audit records since %v: %w", t, err)
	}
	return seq, nil
}

// AuditAnchor returns the checkpoint the trail starts from: the last pruned
// record, or the genesis anchor (seq 0, zero MAC) if nothing was pruned.
func (tx *Tx) AuditAnchor() (AuditAnchor, error) {
	if err := tx.usable(false); err != nil {
		return AuditAnchor{}, fmt.Errorf("read audit anchor: %w", err)
	}
	var a AuditAnchor
	var ns int64
	err := tx.q.QueryRowContext(tx.ctx, `SELECT seq, mac, time_ns, tag FROM audit_anchor WHERE id = 1`).
		Scan(&a.Seq, &a.MAC, &ns, &a.Tag)
	if errors.Is(err, sql.ErrNoRows) {
		return genesis(), nil
	}
	if err != nil {
		return AuditAnchor{}, fmt.Errorf("read audit anchor: %w", tx.dbErr(err))
	}
	a.Time = time.Unix(0, ns).UTC()
	return a, nil
}

// PruneAudit deletes the oldest records, those before the first record at or
// after before, and moves the anchor to the last one deleted, in this
// transaction, so the remaining trail still verifies. A record older than
// before that follows a newer one (the clock stepped back) is kept. It
// returns how many records it deleted.
func (tx *Tx) PruneAudit(before time.Time) (int64, error) {
	if err := tx.usable(true); err != nil {
		return 0, fmt.Errorf("prune audit trail: %w", err)
	}
	c, err := tx.chainer()
	if err != nil {
		return 0, fmt.Errorf("prune audit trail: %w", err)
	}
	last, err := tx.AuditSince(before)
	if err != nil {
		return 0, fmt.Errorf("prune audit trail: %w", err)
	}
	anchor, err := tx.AuditAnchor()
	if err != nil {
		return 0, fmt.Errorf("prune audit trail: %w", err)
	}
	if last <= anchor.Seq {
		return 0, nil
	}
	a := AuditAnchor{Seq: last}
	var ns int64
	err = tx.q.QueryRowContext(tx.ctx, `SELECT mac, time_ns FROM audit WHERE seq = ?`, last).Scan(&a.MAC, &ns)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("prune audit trail: record %d is missing (run `hsmkms audit verify`): %w", last, ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("prune audit trail: read record %d: %w", last, tx.dbErr(err))
	}
	a.Time = time.Unix(0, ns).UTC()
	if a.Tag, err = chainMAC(c, a.MAC, a.canonical()); err != nil {
		return 0, fmt.Errorf("prune audit trail: %w", err)
	}
	res, err := tx.q.ExecContext(tx.ctx, `DELETE FROM audit WHERE seq <= ?`, last)
	if err != nil {
		return 0, fmt.Errorf("prune audit trail up to %d: %w", last, tx.dbErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune audit trail up to %d: %w", last, tx.dbErr(err))
	}
	if _, err := tx.q.ExecContext(tx.ctx, `INSERT INTO audit_anchor (id, seq, mac, time_ns, tag)
		VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET
		seq = excluded.seq, mac = excluded.mac, time_ns = excluded.time_ns, tag = excluded.tag`,
		a.Seq, a.MAC, ns, a.Tag); err != nil {
		return 0, fmt.Errorf("prune audit trail: move anchor to %d: %w", last, tx.dbErr(err))
	}
	return n, nil
}

// verifyMAC reports whether mac is the chain MAC of r after prev.
func verifyMAC(c Chainer, prev []byte, r *AuditRecord) (bool, error) {
	m, err := chainMAC(c, prev, r.canonical())
	if err != nil {
		return false, err
	}
	return bytes.Equal(m, r.MAC), nil
}
