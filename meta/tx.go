package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"modernc.org/sqlite"
)

// Tx is the handle View and Update pass to their function. It is valid only
// during that call and must not be shared between goroutines.
type Tx struct {
	ctx      context.Context
	q        querier
	writable bool
	audit    Chainer // nil: audit methods fail with ErrAuditDisabled
	// err is the first SQLite error seen by a write Tx. SQLite may have
	// rolled back part of the transaction, so the Tx refuses further work
	// rather than write outside it.
	err error
	// self caches ApplianceID for the transaction.
	self string
	// room is the page count object writes may reach (0: unlimited).
	room int64
}

// querier is what *sql.Conn (writer) and *sql.Tx (reader) have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// usable reports why the Tx cannot run a statement, if it cannot.
func (tx *Tx) usable(write bool) error {
	if write && !tx.writable {
		return ErrReadOnly
	}
	if tx.err != nil {
		return fmt.Errorf("meta: transaction failed earlier: %w", tx.err)
	}
	return nil
}

// dbErr classifies err and, in a write Tx, remembers SQLite errors.
func (tx *Tx) dbErr(err error) error {
	e := dbErr(err)
	var se *sqlite.Error
	if tx.writable && tx.err == nil && errors.As(err, &se) {
		tx.err = e
	}
	return e
}

// seq returns the rowid of object id.
func (tx *Tx) seq(id string) (int64, error) {
	var seq int64
	err := tx.q.QueryRowContext(tx.ctx, `SELECT seq FROM objects WHERE id = ?`, id).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, tx.dbErr(err)
	}
	return seq, nil
}
