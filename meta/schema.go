package meta

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
)

// SchemaVersion reports the schema version of the database at path and the newest
// one this binary knows, without migrating or otherwise writing it (Open would
// migrate). It fails if path does not exist or is not a readable SQLite database;
// operators use it to check a configuration (`hsmkms config check`).
func SchemaVersion(ctx context.Context, path string) (have, want int, err error) {
	ms, err := migrations()
	if err != nil {
		return 0, 0, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, 0, fmt.Errorf("read schema version of %q: %w", path, err)
	}
	// Stat first: SQLite would create a missing file.
	if _, err := os.Stat(abs); err != nil {
		return 0, 0, fmt.Errorf("read schema version of %q: %w", path, err)
	}
	db, err := sql.Open("sqlite", dsn(abs, url.Values{"_query_only": {"1"}}))
	if err != nil {
		return 0, 0, fmt.Errorf("read schema version of %q: %w", path, err)
	}
	defer db.Close()
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'`).Scan(&tables); err != nil {
		return 0, 0, fmt.Errorf("read schema version of %q: %w", path, dbErr(err))
	}
	if tables == 1 {
		if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&have); err != nil {
			return 0, 0, fmt.Errorf("read schema version of %q: %w", path, dbErr(err))
		}
	}
	return have, len(ms), nil
}
