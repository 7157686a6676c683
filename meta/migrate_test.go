package meta

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/schema.golden")

// dumpSchema renders sqlite_master in a stable order.
func dumpSchema(t *testing.T, s *Store) string {
	t.Helper()
	var b strings.Builder
	mustView(t, s, func(tx *Tx) error {
		rows, err := tx.q.QueryContext(tx.ctx,
			`SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var typ, name, sql string
			if err := rows.Scan(&typ, &name, &sql); err != nil {
				return err
			}
			fmt.Fprintf(&b, "-- %s %s\n%s;\n\n", typ, name, sql)
		}
		return rows.Err()
	})
	return b.String()
}

func TestSchemaGolden(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	got := dumpSchema(t, s)
	golden := filepath.Join("testdata", "schema.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("schema migrated from zero differs from %s (run with -update and review the diff):\n%s", golden, got)
	}
}

func TestMigrateReopen(t *testing.T) {
	t.Parallel()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	s, path := openTest(t)
	first := dumpSchema(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, path)
	if again := dumpSchema(t, s); again != first {
		t.Errorf("reopening changed the schema:\n%s", again)
	}
	var versions []int
	mustView(t, s, func(tx *Tx) error {
		rows, err := tx.q.QueryContext(tx.ctx, `SELECT version FROM schema_version ORDER BY version`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				return err
			}
			versions = append(versions, v)
		}
		return rows.Err()
	})
	if len(versions) != len(ms) || versions[len(versions)-1] != len(ms) {
		t.Errorf("schema_version rows = %v, want 1..%d once each", versions, len(ms))
	}
}

func TestMigrateRefusesNewer(t *testing.T) {
	t.Parallel()
	s, path := openTest(t)
	mustUpdate(t, s, func(tx *Tx) error {
		_, err := tx.q.ExecContext(tx.ctx, `INSERT INTO schema_version (version, applied) VALUES (999, 0)`)
		return err
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(t.Context(), path, Options{})
	if err == nil {
		s2.Close()
		t.Fatal("Open accepted a database from a newer schema")
	}
	if !strings.Contains(err.Error(), "version 999") {
		t.Errorf("error does not name the version: %v", err)
	}
}
