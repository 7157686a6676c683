//go:build e2e

package test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/test/framework"
)

// TestMirrorAntiEntropyRepairs makes B's stream from A skip changes: while B
// is stopped, A creates keys and B's durable cursor for A is moved to A's
// journal head, as a lost write of B's database would leave it. Those keys
// reach B only through anti-entropy (bucket digests every 5 s here).
func TestMirrorAntiEntropyRepairs(t *testing.T) {
	t.Parallel()
	nodes := startMirrored(t, 2, mirrorOptions{})
	a, b := nodes[0], nodes[1]
	ca := caBundle(t, a)
	b.Stop(t)
	sa := openMirrorKMIP(t, a, a.AdminPEM, ca)
	var ids []string
	for i := range 5 {
		ids = append(ids, createAES(sa, "repaired-"+string(rune('0'+i))))
	}
	res, err := framework.Run(t.Context(), framework.CLITimeout, nil, pykmipPython, "-c",
		`import sqlite3, sys
head = sqlite3.connect(sys.argv[1]).execute("SELECT MAX(mseq) FROM objects").fetchone()[0]
c = sqlite3.connect(sys.argv[2])
n = c.execute("UPDATE mirror_peers SET cursor = ?", (head,)).rowcount
c.commit()
print(n)`, filepath.Join(a.Dir, "hsmkms.db"), filepath.Join(b.Dir, "hsmkms.db"))
	if err != nil || res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != "1" {
		t.Fatalf("move B's cursor: %v %s %s", err, res.Stdout, res.Stderr)
	}
	if err := b.Server.Start(); err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitForPort(b.Addr, b.Server, framework.StartTimeout); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	conv := waitConverged(t, 30*time.Second, a, b)
	for _, id := range ids {
		if !strings.Contains(conv, id+" ") {
			t.Errorf("key %s missing after convergence", id)
		}
	}
	if !strings.Contains(b.Server.Logs(), "anti-entropy repaired") {
		t.Errorf("B converged without an anti-entropy repair in its log: the stream was not really cut")
	}
	t.Logf("repaired by anti-entropy in %s", time.Since(start).Round(100*time.Millisecond))
}

// TestMirrorCursorPastJournal: a peer whose cursor is past this appliance's
// journal (this database was restored or replaced) gets the whole journal
// replayed at once instead of waiting for anti-entropy.
func TestMirrorCursorPastJournal(t *testing.T) {
	t.Parallel()
	nodes := startMirrored(t, 2, mirrorOptions{Env: []string{"HSMKMS_MIRROR_ANTI_ENTROPY=1h"}})
	a, b := nodes[0], nodes[1]
	ca := caBundle(t, a)
	b.Stop(t)
	res, err := framework.Run(t.Context(), framework.CLITimeout, nil, pykmipPython, "-c",
		`import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
n = c.execute("UPDATE mirror_peers SET cursor = 1000000000").rowcount
c.commit()
print(n)`, filepath.Join(b.Dir, "hsmkms.db"))
	if err != nil || res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != "1" {
		t.Fatalf("move B's cursor: %v %s %s", err, res.Stdout, res.Stderr)
	}
	sa := openMirrorKMIP(t, a, a.AdminPEM, ca)
	id := createAES(sa, "replayed")
	if err := b.Server.Start(); err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitForPort(b.Addr, b.Server, framework.StartTimeout); err != nil {
		t.Fatal(err)
	}
	conv := waitConverged(t, 20*time.Second, a, b)
	if !strings.Contains(conv, id+" ") {
		t.Errorf("key %s missing after convergence", id)
	}
	if !strings.Contains(a.Server.Logs(), "replaying the journal") {
		t.Errorf("A did not log the replay")
	}
}
