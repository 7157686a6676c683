package meta

import (
	"fmt"
	"strings"
)

// Filter selects objects for Locate. Zero-valued fields match anything.
type Filter struct {
	Type      uint32
	State     uint32
	Algorithm uint32
	Length    int32
	// Owner, if set, keeps objects owned by Owner or granted to Owner.
	Owner string
	// Attrs must each match an attribute with the same Name and a
	// byte-identical Value; Index is ignored.
	Attrs []Attr
	// Offset skips that many matches; Limit caps them (0 = no limit).
	Offset int
	Limit  int
}

// Locate returns the IDs of the objects matching f, newest first (by Created,
// then by insertion order).
func (tx *Tx) Locate(f Filter) ([]string, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("locate objects: %w", err)
	}
	var (
		where []string
		args  []any
	)
	eq := func(col string, v any) {
		where = append(where, col+" = ?")
		args = append(args, v)
	}
	if f.Type != 0 {
		eq("o.type", f.Type)
	}
	if f.State != 0 {
		eq("o.state", f.State)
	}
	if f.Algorithm != 0 {
		eq("o.algorithm", f.Algorithm)
	}
	if f.Length != 0 {
		eq("o.length", f.Length)
	}
	if f.Owner != "" {
		where = append(where, `(o.owner = ? OR o.seq IN (
	SELECT object_seq FROM grants WHERE identity = ?))`)
		args = append(args, f.Owner, f.Owner)
	}
	for _, a := range f.Attrs {
		v := a.Value
		if v == nil {
			v = []byte{}
		}
		// IN lets SQLite drive the search from the (name, value) index:
		// a Locate by Name touches only the matching objects.
		where = append(where, `o.seq IN (
	SELECT object_seq FROM attrs WHERE name = ? AND value = ?)`)
		args = append(args, a.Name, v)
	}
	q := "SELECT o.id FROM objects o"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	q += " ORDER BY o.created DESC, o.seq DESC LIMIT ? OFFSET ?"
	args = append(args, limit, max(f.Offset, 0))

	rows, err := tx.q.QueryContext(tx.ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("locate objects: %w", tx.dbErr(err))
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("locate objects: %w", tx.dbErr(err))
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("locate objects: %w", tx.dbErr(err))
	}
	return ids, nil
}
