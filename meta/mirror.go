package meta

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Rev is an object's mirroring revision (migration 0003). Clocks are hybrid
// logical clocks: Unix milliseconds shifted left 16 bits plus a counter, so
// they follow wall time yet every new one exceeds every one this database has
// stored, a peer's included. Clock/Origin version the object's attributes;
// LifeClock/LifeOrigin its lifecycle (the fields SameLifecycle compares);
// GrantClock/GrantOrigin its grants. MSeq is the object's position in this
// appliance's journal.
type Rev struct {
	Clock       int64
	Origin      string
	LifeClock   int64
	LifeOrigin  string
	GrantClock  int64
	GrantOrigin string
	MSeq        int64
}

// hlcShift makes room for the logical counter below the milliseconds.
const hlcShift = 16

// ClockTime returns the wall time a hybrid logical clock was taken at.
func ClockTime(c int64) time.Time { return time.UnixMilli(c >> hlcShift) }

// NewRev returns a fresh local revision: a clock above every stored clock
// and the wall clock, and the next journal position. It reads the maxima
// inside the write transaction, so concurrent processes (serve and an
// operator CLI) never hand out the same values.
func (tx *Tx) NewRev() (Rev, error) {
	self, err := tx.ApplianceID()
	if err != nil {
		return Rev{}, err
	}
	var maxClock, maxLife, maxGrant, maxSeq int64
	if err := tx.q.QueryRowContext(tx.ctx, `SELECT
	COALESCE((SELECT MAX(rev_clock) FROM objects), 0),
	COALESCE((SELECT MAX(life_clock) FROM objects), 0),
	COALESCE((SELECT MAX(grant_clock) FROM objects), 0),
	COALESCE((SELECT MAX(mseq) FROM objects), 0)`).Scan(&maxClock, &maxLife, &maxGrant, &maxSeq); err != nil {
		return Rev{}, fmt.Errorf("read clocks: %w", tx.dbErr(err))
	}
	c := time.Now().UnixMilli() << hlcShift
	c = max(c, maxClock+1, maxLife+1, maxGrant+1)
	return Rev{Clock: c, Origin: self, MSeq: maxSeq + 1}, nil
}

// SameLifecycle reports whether a and b agree on every lifecycle field: the
// state, its dates, the revocation reason and the presence of material
// (Destroy erases it). These merge as one unit between mirrors.
func SameLifecycle(a, b *Object) bool {
	return a.State == b.State && a.Activation.Equal(b.Activation) &&
		a.Deactivation.Equal(b.Deactivation) && a.Destroyed.Equal(b.Destroyed) &&
		a.Compromise.Equal(b.Compromise) && a.CompromiseOccurrence.Equal(b.CompromiseOccurrence) &&
		a.RevocationReason == b.RevocationReason && a.RevocationMessage == b.RevocationMessage &&
		(a.Wrapped == nil) == (b.Wrapped == nil)
}

// ApplianceID returns this database's random appliance identifier.
func (tx *Tx) ApplianceID() (string, error) {
	if tx.self != "" {
		return tx.self, nil
	}
	if err := tx.q.QueryRowContext(tx.ctx, `SELECT value FROM settings WHERE key = 'appliance_id'`).Scan(&tx.self); err != nil {
		return "", fmt.Errorf("read appliance id: %w", tx.dbErr(err))
	}
	return tx.self, nil
}

// touch gives object seq a new grant revision after its grants changed.
func (tx *Tx) touch(seq int64) error {
	rev, err := tx.NewRev()
	if err != nil {
		return err
	}
	if _, err := tx.q.ExecContext(tx.ctx, `UPDATE objects SET grant_clock = ?, grant_origin = ?, mseq = ? WHERE seq = ?`,
		rev.Clock, rev.Origin, rev.MSeq, seq); err != nil {
		return tx.dbErr(err)
	}
	return nil
}

// JournalHead returns the newest journal position (0 when empty).
func (tx *Tx) JournalHead() (int64, error) {
	var n int64
	if err := tx.q.QueryRowContext(tx.ctx, `SELECT COALESCE(MAX(mseq), 0) FROM objects`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read journal head: %w", tx.dbErr(err))
	}
	return n, nil
}

// Change is one journal entry: an object's current state and grants.
type Change struct {
	Object *Object
	Grants []string
}

// Changes returns up to limit journal entries after position after, oldest
// first. An object appears once, at its latest position.
func (tx *Tx) Changes(after int64, limit int) ([]Change, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	return tx.selectChanges(`WHERE mseq > ? ORDER BY mseq LIMIT ?`, after, limit)
}

// ObjectsByID returns the journal entries of the given objects that exist.
func (tx *Tx) ObjectsByID(ids []string) ([]Change, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("read objects: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return tx.selectChanges(`WHERE id IN (?`+strings.Repeat(", ?", len(ids)-1)+`) ORDER BY mseq`, args...)
}

func (tx *Tx) selectChanges(where string, args ...any) ([]Change, error) {
	rows, err := tx.q.QueryContext(tx.ctx, `SELECT `+objectCols+` FROM objects `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", tx.dbErr(err))
	}
	var (
		out  []Change
		seqs []int64
	)
	for rows.Next() {
		seq, o, err := scanObject(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("read journal: %w", tx.dbErr(err))
		}
		out, seqs = append(out, Change{Object: o}), append(seqs, seq)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("read journal: %w", tx.dbErr(err))
	}
	if len(out) == 0 {
		return out, nil
	}
	// A journal page's objects are scattered: their attributes and grants are
	// read with one query each, by the page's seqs.
	bySeq := make(map[int64]*Change, len(seqs))
	args = make([]any, len(seqs))
	for i, seq := range seqs {
		bySeq[seq], args[i] = &out[i], seq
	}
	in := `(?` + strings.Repeat(", ?", len(seqs)-1) + `)`
	rows, err = tx.q.QueryContext(tx.ctx, `SELECT object_seq, name, idx, value FROM attrs
WHERE object_seq IN `+in+` ORDER BY object_seq, name, idx`, args...)
	if err != nil {
		return nil, fmt.Errorf("read journal attributes: %w", tx.dbErr(err))
	}
	for rows.Next() {
		var (
			seq int64
			a   Attr
		)
		if err := rows.Scan(&seq, &a.Name, &a.Index, &a.Value); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read journal attributes: %w", tx.dbErr(err))
		}
		if a.Value == nil {
			a.Value = []byte{}
		}
		c := bySeq[seq]
		c.Object.Attrs = append(c.Object.Attrs, a)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("read journal attributes: %w", tx.dbErr(err))
	}
	rows, err = tx.q.QueryContext(tx.ctx, `SELECT object_seq, name, clock, origin FROM attr_revs
WHERE object_seq IN `+in+` ORDER BY object_seq, name`, args...)
	if err != nil {
		return nil, fmt.Errorf("read journal attribute revisions: %w", tx.dbErr(err))
	}
	for rows.Next() {
		var (
			seq int64
			r   AttrRev
		)
		if err := rows.Scan(&seq, &r.Name, &r.Clock, &r.Origin); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read journal attribute revisions: %w", tx.dbErr(err))
		}
		c := bySeq[seq]
		c.Object.AttrRevs = append(c.Object.AttrRevs, r)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("read journal attribute revisions: %w", tx.dbErr(err))
	}
	rows, err = tx.q.QueryContext(tx.ctx, `SELECT object_seq, identity FROM grants
WHERE object_seq IN `+in+` ORDER BY object_seq, identity`, args...)
	if err != nil {
		return nil, fmt.Errorf("read journal grants: %w", tx.dbErr(err))
	}
	for rows.Next() {
		var (
			seq   int64
			ident string
		)
		if err := rows.Scan(&seq, &ident); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read journal grants: %w", tx.dbErr(err))
		}
		c := bySeq[seq]
		c.Grants = append(c.Grants, ident)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("read journal grants: %w", tx.dbErr(err))
	}
	return out, nil
}

// HaveMaterial reports, for those of ids that exist, whether they need no
// material from a peer: they hold theirs or are destroyed.
func (tx *Tx) HaveMaterial(ids []string) (map[string]bool, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("look up objects: %w", err)
	}
	out := make(map[string]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := tx.q.QueryContext(tx.ctx, `SELECT id, wrapped IS NOT NULL OR state IN (5, 6) FROM objects
WHERE id IN (?`+strings.Repeat(", ?", len(ids)-1)+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("look up objects: %w", tx.dbErr(err))
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id string
			ok bool
		)
		if err := rows.Scan(&id, &ok); err != nil {
			return nil, fmt.Errorf("look up objects: %w", tx.dbErr(err))
		}
		out[id] = ok
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up objects: %w", tx.dbErr(err))
	}
	return out, nil
}

// Apply stores a peer's version of an object exactly as given (o.Rev's
// clocks and origins, o.Wrapped already under a local KEK) with grants, at a
// new local journal position so that it travels on to other peers. The
// caller has merged it with the local version. It returns the stored revision.
func (tx *Tx) Apply(o *Object, grants []string) (Rev, error) {
	if err := tx.usable(true); err != nil {
		return Rev{}, fmt.Errorf("apply object: %w", err)
	}
	if err := checkObject(o); err != nil {
		return Rev{}, fmt.Errorf("apply object: %w", err)
	}
	head, err := tx.JournalHead()
	if err != nil {
		return Rev{}, fmt.Errorf("apply object %q: %w", o.ID, err)
	}
	rev := o.Rev
	rev.MSeq = head + 1
	seq, err := tx.seq(o.ID)
	switch {
	case errors.Is(err, ErrNotFound):
		if err := tx.insert(o, rev); err != nil {
			return Rev{}, fmt.Errorf("apply object %q: %w", o.ID, err)
		}
		if seq, err = tx.seq(o.ID); err != nil {
			return Rev{}, fmt.Errorf("apply object %q: %w", o.ID, err)
		}
	case err != nil:
		return Rev{}, fmt.Errorf("apply object %q: %w", o.ID, err)
	default:
		if err := tx.update(seq, o, rev); err != nil {
			return Rev{}, fmt.Errorf("apply object %q: %w", o.ID, err)
		}
	}
	if err := tx.setGrants(seq, grants); err != nil {
		return Rev{}, fmt.Errorf("apply object %q: %w", o.ID, err)
	}
	if _, err := tx.q.ExecContext(tx.ctx, `DELETE FROM attr_revs WHERE object_seq = ?`, seq); err != nil {
		return Rev{}, fmt.Errorf("apply object %q: %w", o.ID, tx.dbErr(err))
	}
	for _, r := range o.AttrRevs {
		if _, err := tx.q.ExecContext(tx.ctx, `INSERT INTO attr_revs (object_seq, name, clock, origin) VALUES (?, ?, ?, ?)`,
			seq, r.Name, r.Clock, r.Origin); err != nil {
			return Rev{}, fmt.Errorf("apply object %q: %w", o.ID, tx.dbErr(err))
		}
	}
	o.Rev = rev
	return rev, nil
}

// AttrRevs returns the attribute revisions of object id, by name.
func (tx *Tx) AttrRevs(id string) ([]AttrRev, error) {
	rows, err := tx.q.QueryContext(tx.ctx, `SELECT name, clock, origin FROM attr_revs
WHERE object_seq = (SELECT seq FROM objects WHERE id = ?) ORDER BY name`, id)
	if err != nil {
		return nil, fmt.Errorf("read attribute revisions of %q: %w", id, tx.dbErr(err))
	}
	defer rows.Close()
	var out []AttrRev
	for rows.Next() {
		var r AttrRev
		if err := rows.Scan(&r.Name, &r.Clock, &r.Origin); err != nil {
			return nil, fmt.Errorf("read attribute revisions of %q: %w", id, tx.dbErr(err))
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read attribute revisions of %q: %w", id, tx.dbErr(err))
	}
	return out, nil
}

// RevEntry is an object's identity and revisions, for anti-entropy digests.
type RevEntry struct {
	ID  string
	Rev Rev
	// Attrs lists its attribute revisions, "name:clock:origin" joined by ",".
	Attrs string
}

// Revisions returns every object's ID and revision in ID order.
func (tx *Tx) Revisions() ([]RevEntry, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("read revisions: %w", err)
	}
	rows, err := tx.q.QueryContext(tx.ctx, `SELECT id, rev_clock, rev_origin, life_clock, life_origin, grant_clock, grant_origin, mseq,
	COALESCE((SELECT group_concat(name || ':' || clock || ':' || origin, ',')
		FROM (SELECT name, clock, origin FROM attr_revs WHERE object_seq = o.seq ORDER BY name)), '')
FROM objects o ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read revisions: %w", tx.dbErr(err))
	}
	defer rows.Close()
	var out []RevEntry
	for rows.Next() {
		var e RevEntry
		if err := rows.Scan(&e.ID, &e.Rev.Clock, &e.Rev.Origin, &e.Rev.LifeClock, &e.Rev.LifeOrigin,
			&e.Rev.GrantClock, &e.Rev.GrantOrigin, &e.Rev.MSeq, &e.Attrs); err != nil {
			return nil, fmt.Errorf("read revisions: %w", tx.dbErr(err))
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read revisions: %w", tx.dbErr(err))
	}
	return out, nil
}

// Peer is a paired appliance and, for `mirror status`, how replication to
// and from it goes.
type Peer struct {
	ID      string // the peer's appliance id
	Name    string
	Addr    string // host:port of its mirror listener
	SPKI    string // hex SHA-256 of its TLS SubjectPublicKeyInfo
	ECDHPub []byte // its token's ECDH public key
	CAPEM   []byte // its CA certificate: KMIP clients it issued are trusted here too
	KEK     string // label of the pair KEK in this token
	Paired  time.Time
	Cursor  int64 // its journal position applied here

	State      string
	Acked      int64 // this appliance's journal position it has applied
	LagEntries int64
	Lag        time.Duration // age of the oldest change it has not applied
	// LagP50 and LagP99 summarise recent replication lags of objects it
	// created: its commit to this appliance's commit.
	LagP50, LagP99 time.Duration
	LastContact    time.Time
	LastError      string
	StatusAt       time.Time
}

const peerCols = `id, name, addr, spki, ecdh_pub, ca_pem, kek, paired, cursor, state, acked, lag_entries, lag_ms, lag_p50_ms, lag_p99_ms, last_contact, last_error, status_at`

func scanPeer(row scanner) (*Peer, error) {
	var (
		p                       Peer
		paired, lagMS, p50, p99 int64
		lastContact, statusAt   sql.NullInt64
	)
	if err := row.Scan(&p.ID, &p.Name, &p.Addr, &p.SPKI, &p.ECDHPub, &p.CAPEM, &p.KEK, &paired, &p.Cursor, &p.State,
		&p.Acked, &p.LagEntries, &lagMS, &p50, &p99, &lastContact, &p.LastError, &statusAt); err != nil {
		return nil, err
	}
	p.Paired = time.Unix(paired, 0).UTC()
	p.Lag = time.Duration(lagMS) * time.Millisecond
	p.LagP50, p.LagP99 = time.Duration(p50)*time.Millisecond, time.Duration(p99)*time.Millisecond
	if lastContact.Valid {
		p.LastContact = time.UnixMilli(lastContact.Int64).UTC()
	}
	if statusAt.Valid {
		p.StatusAt = time.UnixMilli(statusAt.Int64).UTC()
	}
	return &p, nil
}

// Peers returns the paired appliances by id.
func (tx *Tx) Peers() ([]*Peer, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	rows, err := tx.q.QueryContext(tx.ctx, `SELECT `+peerCols+` FROM mirror_peers ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", tx.dbErr(err))
	}
	defer rows.Close()
	var out []*Peer
	for rows.Next() {
		p, err := scanPeer(rows)
		if err != nil {
			return nil, fmt.Errorf("list peers: %w", tx.dbErr(err))
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list peers: %w", tx.dbErr(err))
	}
	return out, nil
}

// PutPeer records a pairing, replacing an earlier one with the same peer
// (whose cursor restarts at zero: re-pairing replays its journal, which
// applying idempotently makes harmless).
func (tx *Tx) PutPeer(p *Peer) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("save peer: %w", err)
	}
	if _, err := tx.q.ExecContext(tx.ctx, `INSERT INTO mirror_peers (id, name, addr, spki, ecdh_pub, ca_pem, kek, paired)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET name = excluded.name, addr = excluded.addr, spki = excluded.spki,
	ecdh_pub = excluded.ecdh_pub, ca_pem = excluded.ca_pem, kek = excluded.kek, paired = excluded.paired, cursor = 0,
	state = 'new', acked = 0, last_error = ''`,
		p.ID, p.Name, p.Addr, p.SPKI, p.ECDHPub, nonNilBytes(p.CAPEM), p.KEK, p.Paired.Unix()); err != nil {
		return fmt.Errorf("save peer %s: %w", p.ID, tx.dbErr(err))
	}
	return nil
}

// DeletePeer forgets a pairing; ErrNotFound if there is none.
func (tx *Tx) DeletePeer(id string) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("delete peer: %w", err)
	}
	res, err := tx.q.ExecContext(tx.ctx, `DELETE FROM mirror_peers WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete peer %s: %w", id, tx.dbErr(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete peer %s: %w", id, ErrNotFound)
	}
	return nil
}

// SetCursor records that the peer's journal is applied up to pos.
func (tx *Tx) SetCursor(peer string, pos int64) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	if _, err := tx.q.ExecContext(tx.ctx, `UPDATE mirror_peers SET cursor = ? WHERE id = ?`, pos, peer); err != nil {
		return fmt.Errorf("save cursor of %s: %w", peer, tx.dbErr(err))
	}
	return nil
}

// SetPeerStatus records how replication with p.ID goes (the status fields).
func (tx *Tx) SetPeerStatus(p *Peer) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("save peer status: %w", err)
	}
	var contact any
	if !p.LastContact.IsZero() {
		contact = p.LastContact.UnixMilli()
	}
	if _, err := tx.q.ExecContext(tx.ctx, `UPDATE mirror_peers SET state = ?, acked = ?, lag_entries = ?,
	lag_ms = ?, lag_p50_ms = ?, lag_p99_ms = ?, last_contact = ?, last_error = ?, status_at = ? WHERE id = ?`,
		p.State, p.Acked, p.LagEntries, p.Lag.Milliseconds(), p.LagP50.Milliseconds(), p.LagP99.Milliseconds(), contact, p.LastError, time.Now().UnixMilli(), p.ID); err != nil {
		return fmt.Errorf("save status of %s: %w", p.ID, tx.dbErr(err))
	}
	return nil
}

// AddInvite stores the hash of a pairing secret valid until expires.
func (tx *Tx) AddInvite(secretHash string, expires time.Time) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("save invitation: %w", err)
	}
	if _, err := tx.q.ExecContext(tx.ctx, `DELETE FROM mirror_invites WHERE expires < ?`, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("save invitation: %w", tx.dbErr(err))
	}
	if _, err := tx.q.ExecContext(tx.ctx, `INSERT INTO mirror_invites (secret_hash, expires) VALUES (?, ?)`,
		secretHash, expires.UnixMilli()); err != nil {
		return fmt.Errorf("save invitation: %w", tx.dbErr(err))
	}
	return nil
}

// Invites returns the unexpired invitation hashes.
func (tx *Tx) Invites() ([]string, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("read invitations: %w", err)
	}
	rows, err := tx.q.QueryContext(tx.ctx, `SELECT secret_hash FROM mirror_invites WHERE expires >= ?`, time.Now().UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("read invitations: %w", tx.dbErr(err))
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, fmt.Errorf("read invitations: %w", tx.dbErr(err))
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// UseInvite consumes an invitation; ErrNotFound if it is unknown or expired.
func (tx *Tx) UseInvite(secretHash string) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("use invitation: %w", err)
	}
	res, err := tx.q.ExecContext(tx.ctx, `DELETE FROM mirror_invites WHERE secret_hash = ? AND expires >= ?`,
		secretHash, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("use invitation: %w", tx.dbErr(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("use invitation: %w", ErrNotFound)
	}
	return nil
}

func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
