package meta

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one numbered schema step.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded steps in order. Their numbers must run
// 1, 2, 3, ... without gaps, so a missing file cannot be silently skipped.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("parse migration name %q: want NNNN_name.sql", e.Name())
		}
		b, err := migrationFS.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %q: %w", e.Name(), err)
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	// fs.ReadDir sorts by name and the numbers are zero-padded.
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("check migration %q: want version %d", m.name, i+1)
		}
	}
	return ms, nil
}

// migrate brings the schema on conn up to the newest embedded version. Each
// step runs in its own transaction together with its schema_version row, so
// a crash leaves the database at a whole version. It refuses a database newer
// than this binary, since migrations only move forward.
func migrate(ctx context.Context, conn *sql.Conn) (int, error) {
	ms, err := migrations()
	if err != nil {
		return 0, err
	}
	const ddl = `CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied INTEGER NOT NULL
) STRICT`
	if _, err := conn.ExecContext(ctx, ddl); err != nil {
		return 0, fmt.Errorf("create schema_version: %w", dbErr(err))
	}
	var current int
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return 0, fmt.Errorf("read schema version: %w", dbErr(err))
	}
	if current > len(ms) {
		return 0, fmt.Errorf("check schema version: database is at version %d, this binary knows up to %d (a newer hsmkms wrote it)", current, len(ms))
	}
	for _, m := range ms[current:] {
		if err := applyMigration(ctx, conn, m); err != nil {
			return 0, err
		}
		current = m.version
	}
	return current, nil
}

func applyMigration(ctx context.Context, conn *sql.Conn, m migration) (err error) {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("begin migration %q: %w", m.name, dbErr(err))
	}
	defer func() {
		if err != nil {
			_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	if _, err := conn.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("apply migration %q: %w", m.name, dbErr(err))
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO schema_version (version, applied) VALUES (?, ?)`,
		m.version, time.Now().Unix()); err != nil {
		return fmt.Errorf("record migration %q: %w", m.name, dbErr(err))
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit migration %q: %w", m.name, dbErr(err))
	}
	return nil
}
