package meta

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
)

// setQuota caps the database at maxBytes (rounded down to whole pages) with
// PRAGMA max_page_count on the writer connection, the only one that writes.
// A write that would grow the file beyond the cap fails with SQLITE_FULL,
// exactly as on a full disk: it surfaces as ErrFull, nothing of it is
// committed, and reads keep working. SQLite never lowers the cap below the
// current size, so a database already over quota can still reuse free pages
// but not grow; that is logged. maxBytes <= 0 leaves the database unlimited.
//
// It returns how many pages objects may fill (0: unlimited): the rest of the
// quota is kept for audit records, so that when the store fills up it is an
// object write that fails, before it commits, and never the audit record of
// a change already committed (see Tx.checkRoom).
func setQuota(ctx context.Context, conn *sql.Conn, maxBytes int64, log *slog.Logger) (int64, error) {
	if maxBytes <= 0 {
		return 0, nil
	}
	var pageSize, pages int64
	if err := conn.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
		return 0, fmt.Errorf("read page size: %w", dbErr(err))
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return 0, fmt.Errorf("read page count: %w", dbErr(err))
	}
	limit := max(maxBytes/pageSize, 1)
	// The pragma is not parameterisable; limit is an integer we computed.
	var set int64
	if err := conn.QueryRowContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", limit)).Scan(&set); err != nil {
		return 0, fmt.Errorf("set max page count: %w", dbErr(err))
	}
	if pages >= limit {
		log.Warn("metadata store over quota; writes that need space fail until it is raised",
			"size_bytes", pages*pageSize, "quota_bytes", maxBytes)
	}
	return limit - auditReserve(limit), nil
}

// auditReserve is the pages of a quota of limit pages kept for audit records:
// a thirty-second, at least 8 and at most 2048 (8 MiB of 4 KiB pages).
func auditReserve(limit int64) int64 {
	return min(max(limit/32, 8), 2048, limit/2)
}

// checkRoom fails the insert of an object with ErrFull once the database
// has grown into the audit reserve. Updates are not held back: they mostly
// reuse the pages they free, and a Get must still clear Fresh.
func (tx *Tx) checkRoom() error {
	if tx.room <= 0 {
		return nil
	}
	var pages int64
	if err := tx.q.QueryRowContext(tx.ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return tx.dbErr(err)
	}
	if pages >= tx.room {
		return fmt.Errorf("%w: the rest of store.max_size_mb is kept for the audit trail", ErrFull)
	}
	return nil
}
