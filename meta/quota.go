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
func setQuota(ctx context.Context, conn *sql.Conn, maxBytes int64, log *slog.Logger) error {
	if maxBytes <= 0 {
		return nil
	}
	var pageSize, pages int64
	if err := conn.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
		return fmt.Errorf("read page size: %w", dbErr(err))
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return fmt.Errorf("read page count: %w", dbErr(err))
	}
	limit := max(maxBytes/pageSize, 1)
	// The pragma is not parameterisable; limit is an integer we computed.
	var set int64
	if err := conn.QueryRowContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", limit)).Scan(&set); err != nil {
		return fmt.Errorf("set max page count: %w", dbErr(err))
	}
	if pages >= limit {
		log.Warn("metadata store over quota; writes that need space fail until it is raised",
			"size_bytes", pages*pageSize, "quota_bytes", maxBytes)
	}
	return nil
}
