package meta

import (
	"fmt"
	"strings"
)

// walkPage is how many objects Walk reads per query: enough to amortise the
// statements, few enough that a page stays small in memory.
const walkPage = 512

// Walk calls fn for every object, in insertion order, with its attributes and
// its grants (sorted). Inside View every call sees the same snapshot, so a
// backup taken while the server writes is a consistent prefix of history.
// Objects are read a page at a time; fn must not keep o after returning if
// memory matters. An error from fn stops the walk and is returned as is.
func (tx *Tx) Walk(fn func(o *Object, grants []string) error) error {
	if err := tx.usable(false); err != nil {
		return fmt.Errorf("walk objects: %w", err)
	}
	var after int64
	for {
		objs, seqs, err := tx.page(after)
		if err != nil {
			return fmt.Errorf("walk objects: %w", err)
		}
		if len(objs) == 0 {
			return nil
		}
		lo, hi := seqs[0], seqs[len(seqs)-1]
		bySeq := make(map[int64]*Object, len(objs))
		for i, o := range objs {
			bySeq[seqs[i]] = o
		}
		if err := tx.loadAttrs(bySeq, lo, hi); err != nil {
			return fmt.Errorf("walk objects: %w", err)
		}
		grants, err := tx.grantsIn(lo, hi)
		if err != nil {
			return fmt.Errorf("walk objects: %w", err)
		}
		for i, o := range objs {
			if err := fn(o, grants[seqs[i]]); err != nil {
				return err
			}
		}
		after = hi
	}
}

// page reads up to walkPage objects with seq > after, without attributes.
func (tx *Tx) page(after int64) ([]*Object, []int64, error) {
	rows, err := tx.q.QueryContext(tx.ctx,
		`SELECT `+objectCols+` FROM objects WHERE seq > ? ORDER BY seq LIMIT ?`, after, walkPage)
	if err != nil {
		return nil, nil, fmt.Errorf("read objects: %w", tx.dbErr(err))
	}
	defer rows.Close()
	var (
		objs []*Object
		seqs []int64
	)
	for rows.Next() {
		seq, o, err := scanObject(rows)
		if err != nil {
			return nil, nil, fmt.Errorf("read objects: %w", tx.dbErr(err))
		}
		objs, seqs = append(objs, o), append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read objects: %w", tx.dbErr(err))
	}
	return objs, seqs, nil
}

// grantsIn returns the grants of the objects with seq in [lo, hi].
func (tx *Tx) grantsIn(lo, hi int64) (map[int64][]string, error) {
	rows, err := tx.q.QueryContext(tx.ctx, `SELECT object_seq, identity FROM grants
WHERE object_seq BETWEEN ? AND ? ORDER BY object_seq, identity`, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("read grants: %w", tx.dbErr(err))
	}
	defer rows.Close()
	out := make(map[int64][]string)
	for rows.Next() {
		var (
			seq int64
			id  string
		)
		if err := rows.Scan(&seq, &id); err != nil {
			return nil, fmt.Errorf("read grants: %w", tx.dbErr(err))
		}
		out[seq] = append(out[seq], id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read grants: %w", tx.dbErr(err))
	}
	return out, nil
}

// Census is the number of objects of one type in one state.
type Census struct {
	Type, State uint32
	Count       int
}

// Census counts the objects by type and state, ordered by type then state.
func (tx *Tx) Census() ([]Census, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("count objects by type and state: %w", err)
	}
	rows, err := tx.q.QueryContext(tx.ctx,
		`SELECT type, state, COUNT(*) FROM objects GROUP BY type, state ORDER BY type, state`)
	if err != nil {
		return nil, fmt.Errorf("count objects by type and state: %w", tx.dbErr(err))
	}
	defer rows.Close()
	var out []Census
	for rows.Next() {
		var c Census
		if err := rows.Scan(&c.Type, &c.State, &c.Count); err != nil {
			return nil, fmt.Errorf("count objects by type and state: %w", tx.dbErr(err))
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count objects by type and state: %w", tx.dbErr(err))
	}
	return out, nil
}

// KEKUsage returns, per KEK label, how many objects hold material wrapped
// under it. Destroyed objects hold none, and material with an empty KEK
// (public keys) is not wrapped.
func (tx *Tx) KEKUsage() (map[string]int, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("count wrapped keys by KEK: %w", err)
	}
	rows, err := tx.q.QueryContext(tx.ctx,
		`SELECT kek, COUNT(*) FROM objects WHERE wrapped IS NOT NULL AND kek != '' GROUP BY kek`)
	if err != nil {
		return nil, fmt.Errorf("count wrapped keys by KEK: %w", tx.dbErr(err))
	}
	defer rows.Close()
	out := make(map[string]int)
	for rows.Next() {
		var (
			kek string
			n   int
		)
		if err := rows.Scan(&kek, &n); err != nil {
			return nil, fmt.Errorf("count wrapped keys by KEK: %w", tx.dbErr(err))
		}
		out[kek] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count wrapped keys by KEK: %w", tx.dbErr(err))
	}
	return out, nil
}

// WrappedNotUnder returns up to limit objects holding material wrapped under
// a KEK other than kek (and not clear material, whose KEK is empty), oldest
// first. Only ID, Type, Algorithm, Length,
// Wrapped and KEK are filled: enough to rewrap them.
func (tx *Tx) WrappedNotUnder(kek string, limit int) ([]*Object, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("find keys not under %s: %w", kek, err)
	}
	rows, err := tx.q.QueryContext(tx.ctx, `SELECT id, type, algorithm, length, wrapped, kek FROM objects
WHERE wrapped IS NOT NULL AND kek != '' AND kek != ? ORDER BY seq LIMIT ?`, kek, limit)
	if err != nil {
		return nil, fmt.Errorf("find keys not under %s: %w", kek, tx.dbErr(err))
	}
	defer rows.Close()
	var out []*Object
	for rows.Next() {
		var o Object
		if err := rows.Scan(&o.ID, &o.Type, &o.Algorithm, &o.Length, &o.Wrapped, &o.KEK); err != nil {
			return nil, fmt.Errorf("find keys not under %s: %w", kek, tx.dbErr(err))
		}
		out = append(out, &o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find keys not under %s: %w", kek, tx.dbErr(err))
	}
	return out, nil
}

// SetWrapped replaces the material of object id with blob under kek, but
// only if it is still oldBlob under oldKEK: a concurrent change (a Destroy,
// another rewrap) wins, and changed reports false. The object's Last Change
// Date stays: the key and its attributes did not change, only its wrapping.
func (tx *Tx) SetWrapped(id string, oldBlob []byte, oldKEK string, blob []byte, kek string) (changed bool, err error) {
	if err := tx.usable(true); err != nil {
		return false, fmt.Errorf("set material of %q: %w", id, err)
	}
	if len(blob) == 0 || len(oldBlob) == 0 {
		return false, fmt.Errorf("set material of %q: %w: empty blob", id, ErrInvalid)
	}
	res, err := tx.q.ExecContext(tx.ctx, `UPDATE objects SET wrapped = ?, kek = ?
WHERE id = ? AND wrapped = ? AND kek = ?`, blob, kek, id, oldBlob, oldKEK)
	if err != nil {
		return false, fmt.Errorf("set material of %q: %w", id, tx.dbErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("set material of %q: %w", id, tx.dbErr(err))
	}
	return n == 1, nil
}

// SetGrants makes identities exactly the grants of object id, under a new
// grant revision.
func (tx *Tx) SetGrants(id string, identities []string) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("set grants of %q: %w", id, err)
	}
	seq, err := tx.seq(id)
	if err != nil {
		return fmt.Errorf("set grants of %q: %w", id, err)
	}
	if err := tx.setGrants(seq, identities); err != nil {
		return fmt.Errorf("set grants of %q: %w", id, err)
	}
	if err := tx.touch(seq); err != nil {
		return fmt.Errorf("set grants of %q: %w", id, err)
	}
	return nil
}

func (tx *Tx) setGrants(seq int64, identities []string) error {
	if _, err := tx.q.ExecContext(tx.ctx, `DELETE FROM grants WHERE object_seq = ?`, seq); err != nil {
		return tx.dbErr(err)
	}
	for _, ident := range identities {
		if _, err := tx.q.ExecContext(tx.ctx,
			`INSERT INTO grants (object_seq, identity) VALUES (?, ?) ON CONFLICT DO NOTHING`, seq, ident); err != nil {
			return tx.dbErr(err)
		}
	}
	return nil
}

// Existing returns which of ids name an object, in one query per 500 IDs: a
// restore into an empty or partly restored store learns what it must create
// without reading every object.
func (tx *Tx) Existing(ids []string) (map[string]bool, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("look up objects: %w", err)
	}
	out := make(map[string]bool)
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 500)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		marks := strings.Repeat(",?", len(chunk))[1:]
		rows, err := tx.q.QueryContext(tx.ctx, `SELECT id FROM objects WHERE id IN (`+marks+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("look up objects: %w", tx.dbErr(err))
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("look up objects: %w", tx.dbErr(err))
			}
			out[id] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("look up objects: %w", tx.dbErr(err))
		}
	}
	return out, nil
}
