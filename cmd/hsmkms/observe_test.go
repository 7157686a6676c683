package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNewestBackup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	last := newestBackup(dir)
	if _, ok := last(); ok {
		t.Fatal("a backup reported in an empty directory")
	}
	old, newer := time.Now().Add(-48*time.Hour).Truncate(time.Second), time.Now().Add(-time.Hour).Truncate(time.Second)
	for name, mtime := range map[string]time.Time{
		backupFileName(old):   old,
		backupFileName(newer): newer,
		"notes.txt":           time.Now(), // not a backup
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if got, ok := last(); !ok || !got.Equal(newer) {
		t.Errorf("newest backup %v (%v), want %v", got, ok, newer)
	}
}
