package meta

import "fmt"

// Grant lets identity use object id (besides its owner). Granting twice is a
// no-op. It returns ErrNotFound if id does not exist.
func (tx *Tx) Grant(id, identity string) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("grant object %q: %w", id, err)
	}
	seq, err := tx.seq(id)
	if err != nil {
		return fmt.Errorf("grant object %q: %w", id, err)
	}
	if _, err := tx.q.ExecContext(tx.ctx,
		`INSERT INTO grants (object_seq, identity) VALUES (?, ?) ON CONFLICT DO NOTHING`, seq, identity); err != nil {
		return fmt.Errorf("grant object %q: %w", id, tx.dbErr(err))
	}
	if err := tx.touch(seq); err != nil {
		return fmt.Errorf("grant object %q: %w", id, err)
	}
	return nil
}

// Revoke removes identity's grant on id; revoking a missing grant is a no-op.
// It returns ErrNotFound if id does not exist.
func (tx *Tx) Revoke(id, identity string) error {
	if err := tx.usable(true); err != nil {
		return fmt.Errorf("revoke object %q: %w", id, err)
	}
	seq, err := tx.seq(id)
	if err != nil {
		return fmt.Errorf("revoke object %q: %w", id, err)
	}
	if _, err := tx.q.ExecContext(tx.ctx,
		`DELETE FROM grants WHERE object_seq = ? AND identity = ?`, seq, identity); err != nil {
		return fmt.Errorf("revoke object %q: %w", id, tx.dbErr(err))
	}
	if err := tx.touch(seq); err != nil {
		return fmt.Errorf("revoke object %q: %w", id, err)
	}
	return nil
}

// Granted reports whether identity holds an explicit grant on id. Ownership
// is not a grant: callers compare Object.Owner themselves.
func (tx *Tx) Granted(id, identity string) (bool, error) {
	if err := tx.usable(false); err != nil {
		return false, fmt.Errorf("check grant on %q: %w", id, err)
	}
	seq, err := tx.seq(id)
	if err != nil {
		return false, fmt.Errorf("check grant on %q: %w", id, err)
	}
	var ok bool
	if err := tx.q.QueryRowContext(tx.ctx,
		`SELECT EXISTS (SELECT 1 FROM grants WHERE object_seq = ? AND identity = ?)`, seq, identity).Scan(&ok); err != nil {
		return false, fmt.Errorf("check grant on %q: %w", id, tx.dbErr(err))
	}
	return ok, nil
}

// Grants lists the identities granted id, sorted.
func (tx *Tx) Grants(id string) ([]string, error) {
	if err := tx.usable(false); err != nil {
		return nil, fmt.Errorf("list grants on %q: %w", id, err)
	}
	seq, err := tx.seq(id)
	if err != nil {
		return nil, fmt.Errorf("list grants on %q: %w", id, err)
	}
	rows, err := tx.q.QueryContext(tx.ctx,
		`SELECT identity FROM grants WHERE object_seq = ? ORDER BY identity`, seq)
	if err != nil {
		return nil, fmt.Errorf("list grants on %q: %w", id, tx.dbErr(err))
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("list grants on %q: %w", id, tx.dbErr(err))
		}
		ids = append(ids, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list grants on %q: %w", id, tx.dbErr(err))
	}
	return ids, nil
}
