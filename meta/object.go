package meta

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Attr is one generic KMIP attribute instance. Value is the TTLV encoding of
// the attribute value; meta never interprets it.
type Attr struct {
	Name  string
	Index int
	Value []byte
}

// Object is a KMIP managed object's metadata and wrapped material. Times have
// second precision (KMIP DateTime) and are returned in UTC; the zero time
// means unset.
type Object struct {
	ID         string // KMIP Unique Identifier
	Type       uint32 // KMIP Object Type
	State      uint32 // KMIP State
	Owner      string // identity that created it
	Algorithm  uint32 // KMIP Cryptographic Algorithm, 0 if none
	Length     int32  // Cryptographic Length, 0 if none
	UsageMask  int32
	Format     uint32 // KMIP Key Format Type of the registered/created material
	SecretType uint32 // KMIP Secret Data Type (Secret Data only)
	Wrapped    []byte // material wrapped under KEK; nil after Destroy
	KEK        string // label of the wrapping key
	Created    time.Time
	Updated    time.Time

	Activation, Deactivation, Destroyed, Compromise, CompromiseOccurrence time.Time

	RevocationReason  uint32
	RevocationMessage string
	// Attrs holds every other attribute, ordered by (Name, Index) on read.
	Attrs []Attr
	// Rev is the object's mirroring revision. Create and Put set it (the
	// caller's value is ignored); Apply stores a peer's as given.
	Rev Rev
	// AttrRevs are the revisions of the attributes writes changed or
	// deleted, by name. Journal reads (Changes, ObjectsByID) and AttrRevs
	// fill them, Put maintains them, Apply stores a peer's as given.
	AttrRevs []AttrRev `json:",omitempty"`
}

// AttrRev is the revision of one attribute name of an object.
type AttrRev struct {
	Name   string
	Clock  int64
	Origin string
}

// objectCols is the column list shared by every object SELECT and scanObject.
const objectCols = `seq, id, type, state, owner, algorithm, length, usage_mask, format,
	secret_type, wrapped, kek, created, updated, activation, deactivation, destroyed,
	compromise, compromise_occurrence, revocation_reason, revocation_message,
	rev_clock, rev_origin, life_clock, life_origin, grant_clock, grant_origin, mseq`

// fields returns o's typed columns (everything but seq, id and attrs) in
// objectCols order.
func (o *Object) fields() []any {
	var wrapped any
	if o.Wrapped != nil {
		wrapped = o.Wrapped
	}
	return []any{
		o.Type, o.State, o.Owner, o.Algorithm, o.Length, o.UsageMask, o.Format,
		o.SecretType, wrapped, o.KEK, unix(o.Created), unix(o.Updated),
		unix(o.Activation), unix(o.Deactivation), unix(o.Destroyed),
		unix(o.Compromise), unix(o.CompromiseOccurrence),
		o.RevocationReason, o.RevocationMessage,
	}
}

// unix maps a time to its column value: UTC seconds, NULL for the zero time.
func unix(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.Unix()
}

type scanner interface{ Scan(dest ...any) error }

// scanObject reads one row selected with objectCols.
func scanObject(row scanner) (int64, *Object, error) {
	var (
		seq   int64
		o     Object
		times [7]sql.NullInt64
	)
	err := row.Scan(&seq, &o.ID, &o.Type, &o.State, &o.Owner, &o.Algorithm, &o.Length,
		&o.UsageMask, &o.Format, &o.SecretType, &o.Wrapped, &o.KEK,
		&times[0], &times[1], &times[2], &times[3], &times[4], &times[5], &times[6],
		&o.RevocationReason, &o.RevocationMessage,
		&o.Rev.Clock, &o.Rev.Origin, &o.Rev.LifeClock, &o.Rev.LifeOrigin, &o.Rev.GrantClock, &o.Rev.GrantOrigin, &o.Rev.MSeq)
	if err != nil {
		return 0, nil, err
	}
	for i, p := range []*time.Time{&o.Created, &o.Updated, &o.Activation, &o.Deactivation,
		&o.Destroyed, &o.Compromise, &o.CompromiseOccurrence} {
		if times[i].Valid {
			*p = time.Unix(times[i].Int64, 0).UTC()
		}
	}
	return seq, &o, nil
}

// checkObject rejects objects meta cannot store faithfully.
func checkObject(o *Object) error {
	if o == nil || o.ID == "" {
		return fmt.Errorf("%w: object without ID", ErrInvalid)
	}
	type key struct {
		name string
		idx  int
	}
	seen := make(map[key]bool, len(o.Attrs))
	for _, a := range o.Attrs {
		k := key{a.Name, a.Index}
		if seen[k] {
			return fmt.Errorf("%w: attribute %q index %d given twice", ErrConflict, a.Name, a.Index)
		}
		seen[k] = true
	}
	return nil
}

// Create inserts a new object. It returns ErrExists if the ID is taken.
func (tx *Tx) Create(o *Object) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("create object: %w", err)
	}
	if err := checkObject(o); err != nil {
		return fmt.Errorf("create object: %w", err)
	}
	rev, err := tx.NewRev()
	if err != nil {
		return fmt.Errorf("create object %q: %w", o.ID, err)
	}
	rev.LifeClock, rev.LifeOrigin = rev.Clock, rev.Origin
	rev.GrantClock, rev.GrantOrigin = rev.Clock, rev.Origin
	return tx.insert(o, rev)
}

// insert adds o with revision rev.
func (tx *Tx) insert(o *Object, rev Rev) error {
	if err := tx.checkRoom(); err != nil {
		return fmt.Errorf("create object %q: %w", o.ID, err)
	}
	args := append([]any{o.ID}, o.fields()...)
	args = append(args, rev.Clock, rev.Origin, rev.LifeClock, rev.LifeOrigin, rev.GrantClock, rev.GrantOrigin, rev.MSeq)
	res, err := tx.q.ExecContext(tx.ctx, `INSERT INTO objects (
	id, type, state, owner, algorithm, length, usage_mask, format, secret_type, wrapped, kek,
	created, updated, activation, deactivation, destroyed, compromise, compromise_occurrence,
	revocation_reason, revocation_message, rev_clock, rev_origin, life_clock, life_origin,
	grant_clock, grant_origin, mseq
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING`, args...)
	if err != nil {
		return fmt.Errorf("create object %q: %w", o.ID, tx.dbErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("create object %q: %w", o.ID, tx.dbErr(err))
	}
	if n == 0 {
		return fmt.Errorf("create object %q: %w", o.ID, ErrExists)
	}
	seq, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("create object %q: %w", o.ID, tx.dbErr(err))
	}
	if err := tx.insertAttrs(seq, o.Attrs); err != nil {
		return fmt.Errorf("create object %q: %w", o.ID, err)
	}
	o.Rev = rev
	return nil
}

// Put replaces every field and attribute of the existing object o.ID and
// gives it a new local revision (the lifecycle revision too when a lifecycle
// field changed). It returns ErrNotFound if there is no such object.
func (tx *Tx) Put(o *Object) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("put object: %w", err)
	}
	if err := checkObject(o); err != nil {
		return fmt.Errorf("put object: %w", err)
	}
	seq, old, err := scanObject(tx.q.QueryRowContext(tx.ctx,
		`SELECT `+objectCols+` FROM objects WHERE id = ?`, o.ID))
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("put object %q: %w", o.ID, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("put object %q: %w", o.ID, tx.dbErr(err))
	}
	rev, err := tx.NewRev()
	if err != nil {
		return fmt.Errorf("put object %q: %w", o.ID, err)
	}
	rev.LifeClock, rev.LifeOrigin = old.Rev.LifeClock, old.Rev.LifeOrigin
	rev.GrantClock, rev.GrantOrigin = old.Rev.GrantClock, old.Rev.GrantOrigin
	if !SameLifecycle(old, o) {
		rev.LifeClock, rev.LifeOrigin = rev.Clock, rev.Origin
	}
	oldAttrs, err := tx.attrsOf(seq)
	if err != nil {
		return fmt.Errorf("put object %q: %w", o.ID, err)
	}
	if err := tx.update(seq, o, rev); err != nil {
		return fmt.Errorf("put object %q: %w", o.ID, err)
	}
	for _, name := range changedNames(oldAttrs, o.Attrs) {
		if _, err := tx.q.ExecContext(tx.ctx, `INSERT INTO attr_revs (object_seq, name, clock, origin) VALUES (?, ?, ?, ?)
ON CONFLICT (object_seq, name) DO UPDATE SET clock = excluded.clock, origin = excluded.origin`,
			seq, name, rev.Clock, rev.Origin); err != nil {
			return fmt.Errorf("put object %q: %w", o.ID, tx.dbErr(err))
		}
	}
	o.Rev = rev
	return nil
}

// attrsOf reads the attributes of object seq.
func (tx *Tx) attrsOf(seq int64) ([]Attr, error) {
	o := &Object{}
	if err := tx.loadAttrs(map[int64]*Object{seq: o}, seq, seq); err != nil {
		return nil, err
	}
	return o.Attrs, nil
}

// changedNames returns the attribute names whose instances differ between
// before and after (added, changed, deleted), sorted.
func changedNames(before, after []Attr) []string {
	group := func(as []Attr) map[string][]Attr {
		m := make(map[string][]Attr)
		for _, a := range as {
			m[a.Name] = append(m[a.Name], a)
		}
		for _, v := range m {
			slices.SortFunc(v, func(x, y Attr) int { return x.Index - y.Index })
		}
		return m
	}
	b, a := group(before), group(after)
	var out []string
	for name, bv := range b {
		if !slices.EqualFunc(bv, a[name], sameAttr) {
			out = append(out, name)
		}
	}
	for name := range a {
		if _, ok := b[name]; !ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func sameAttr(x, y Attr) bool {
	return x.Name == y.Name && x.Index == y.Index && bytes.Equal(x.Value, y.Value)
}

// update overwrites row seq with o at revision rev.
func (tx *Tx) update(seq int64, o *Object, rev Rev) error {
	args := append(o.fields(), rev.Clock, rev.Origin, rev.LifeClock, rev.LifeOrigin, rev.GrantClock, rev.GrantOrigin, rev.MSeq, seq)
	if _, err := tx.q.ExecContext(tx.ctx, `UPDATE objects SET
	type = ?, state = ?, owner = ?, algorithm = ?, length = ?, usage_mask = ?, format = ?,
	secret_type = ?, wrapped = ?, kek = ?, created = ?, updated = ?, activation = ?,
	deactivation = ?, destroyed = ?, compromise = ?, compromise_occurrence = ?,
	revocation_reason = ?, revocation_message = ?,
	rev_clock = ?, rev_origin = ?, life_clock = ?, life_origin = ?, grant_clock = ?, grant_origin = ?, mseq = ?
WHERE seq = ?`, args...); err != nil {
		return tx.dbErr(err)
	}
	if _, err := tx.q.ExecContext(tx.ctx, `DELETE FROM attrs WHERE object_seq = ?`, seq); err != nil {
		return tx.dbErr(err)
	}
	return tx.insertAttrs(seq, o.Attrs)
}

func (tx *Tx) insertAttrs(seq int64, attrs []Attr) error {
	for _, a := range attrs {
		v := a.Value
		if v == nil {
			v = []byte{} // the column is NOT NULL; an empty value is still a value
		}
		if _, err := tx.q.ExecContext(tx.ctx,
			`INSERT INTO attrs (object_seq, name, idx, value) VALUES (?, ?, ?, ?)`,
			seq, a.Name, a.Index, v); err != nil {
			return fmt.Errorf("insert attribute %q: %w", a.Name, tx.dbErr(err))
		}
	}
	return nil
}

// Get returns object id with its attributes. It returns ErrNotFound if there
// is no such object.
func (tx *Tx) Get(id string) (*Object, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("get object %q: %w", id, err)
	}
	seq, o, err := scanObject(tx.q.QueryRowContext(tx.ctx,
		`SELECT `+objectCols+` FROM objects WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get object %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get object %q: %w", id, tx.dbErr(err))
	}
	if err := tx.loadAttrs(map[int64]*Object{seq: o}, seq, seq); err != nil {
		return nil, fmt.Errorf("get object %q: %w", id, err)
	}
	return o, nil
}

// loadAttrs fills the Attrs of objs, whose seqs all lie in [lo, hi] and which
// are all the objects in that range.
func (tx *Tx) loadAttrs(objs map[int64]*Object, lo, hi int64) error {
	rows, err := tx.q.QueryContext(tx.ctx, `SELECT object_seq, name, idx, value FROM attrs
WHERE object_seq BETWEEN ? AND ? ORDER BY object_seq, name, idx`, lo, hi)
	if err != nil {
		return fmt.Errorf("read attributes: %w", tx.dbErr(err))
	}
	defer rows.Close()
	for rows.Next() {
		var (
			seq int64
			a   Attr
		)
		if err := rows.Scan(&seq, &a.Name, &a.Index, &a.Value); err != nil {
			return fmt.Errorf("read attributes: %w", tx.dbErr(err))
		}
		if a.Value == nil {
			a.Value = []byte{}
		}
		if o := objs[seq]; o != nil {
			o.Attrs = append(o.Attrs, a)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read attributes: %w", tx.dbErr(err))
	}
	return nil
}

// List returns up to limit objects (limit <= 0: all) in insertion order,
// starting after the object with ID after ("" starts at the beginning). It
// pages stably for the operator CLI and backups. It returns ErrNotFound if
// after names no object.
func (tx *Tx) List(after string, limit int) ([]*Object, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	var from int64
	if after != "" {
		seq, err := tx.seq(after)
		if err != nil {
			return nil, fmt.Errorf("list objects after %q: %w", after, err)
		}
		from = seq
	}
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := tx.q.QueryContext(tx.ctx,
		`SELECT `+objectCols+` FROM objects WHERE seq > ? ORDER BY seq LIMIT ?`, from, limit)
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", tx.dbErr(err))
	}
	defer rows.Close()
	var (
		objs  []*Object
		bySeq = make(map[int64]*Object)
		lo    int64
		hi    int64
	)
	for rows.Next() {
		seq, o, err := scanObject(rows)
		if err != nil {
			return nil, fmt.Errorf("list objects: %w", tx.dbErr(err))
		}
		if len(objs) == 0 {
			lo = seq
		}
		hi = seq
		objs = append(objs, o)
		bySeq[seq] = o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list objects: %w", tx.dbErr(err))
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("list objects: %w", tx.dbErr(err))
	}
	if len(objs) == 0 {
		return nil, nil
	}
	if err := tx.loadAttrs(bySeq, lo, hi); err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	return objs, nil
}

// Count returns the number of objects, in every state.
func (tx *Tx) Count() (int, error) {
	if err := tx.usable(false); err != nil {
		return 0, fmt.Errorf("count objects: %w", err)
	}
	var n int
	if err := tx.q.QueryRowContext(tx.ctx, `SELECT COUNT(*) FROM objects`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count objects: %w", tx.dbErr(err))
	}
	return n, nil
}
