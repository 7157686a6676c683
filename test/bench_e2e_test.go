//go:build e2e

package test

// The bench smoke run: `hsmkms bench` end to end with short runs and no PyKMIP. It
// checks the report's shape and that every rate is real, not the numbers themselves,
// and that the bench leaves no process or file behind. TestMain and hsmkmsBin are in
// main_e2e_test.go.

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/test/framework"
)

func TestBenchSmoke(t *testing.T) {
	t.Parallel()
	// The bench's temporary directories go here, so the test can see they are gone
	// and find any child process still naming them on its command line.
	tmp := t.TempDir()
	out := filepath.Join(t.TempDir(), "bench.md")
	res, err := framework.Run(t.Context(), 5*time.Minute, []string{"TMPDIR=" + tmp},
		hsmkmsBin, "bench", "--duration", "300ms", "--skip-pykmip", "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("bench exited %d\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	md := string(framework.ReadFile(t, out))
	if md != res.Stdout {
		t.Errorf("--out file differs from stdout:\n%s\n---\n%s", md, res.Stdout)
	}

	// operation -> has a raw PKCS#11 ceiling
	ops := []struct {
		name string
		raw  bool
	}{
		{"Create", true},
		{"Get", true},
		{"Get Attributes", false},
		{"Encrypt 64 B", true},
		{"New connection (TLS + Get)", false},
	}
	rows := map[string][]string{} // "op/clients" -> cells
	main, mirror, ok := strings.Cut(md, "### Mirroring")
	if !ok {
		t.Fatalf("report has no mirroring section:\n%s", md)
	}
	for _, line := range strings.Split(main, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| operation ") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 9 {
			t.Fatalf("row %q has %d cells, want 9", line, len(cells))
		}
		rows[cells[0]+"/"+cells[1]] = cells
	}
	if len(rows) != 2*len(ops) {
		t.Errorf("table has %d rows, want %d:\n%s", len(rows), 2*len(ops), md)
	}
	rate := func(cell string) float64 {
		v, err := strconv.ParseFloat(strings.ReplaceAll(cell, ",", ""), 64)
		if err != nil {
			return 0
		}
		return v
	}
	for _, op := range ops {
		for _, clients := range []string{"1", "8"} {
			key := op.name + "/" + clients
			c, ok := rows[key]
			if !ok {
				t.Errorf("no row for %s", key)
				continue
			}
			if rate(c[2]) <= 0 {
				t.Errorf("%s: hsmkms ops/s %q, want > 0", key, c[2])
			}
			if !strings.HasSuffix(c[3], " ms") || !strings.HasSuffix(c[4], " ms") {
				t.Errorf("%s: p50 %q, p99 %q, want milliseconds", key, c[3], c[4])
			}
			if c[5] != "—" || c[6] != "—" {
				t.Errorf("%s: PyKMIP cells %q %q with --skip-pykmip, want empty", key, c[5], c[6])
			}
			if op.raw && (rate(c[7]) <= 0 || !strings.HasSuffix(c[8], "%")) {
				t.Errorf("%s: raw PKCS#11 %q (%q), want a rate and a percentage", key, c[7], c[8])
			}
			if !op.raw && c[7] != "—" {
				t.Errorf("%s: raw PKCS#11 %q, want none", key, c[7])
			}
		}
	}
	// The mirroring figures: two paired appliances, Create with write_ack local
	// and all, and the replication lag the receiver measured.
	for _, prefix := range []string{"| Create, write_ack=local ", "| Create, write_ack=all ", "| replication lag p50 / p99 "} {
		found := false
		for _, line := range strings.Split(mirror, "\n") {
			if strings.HasPrefix(line, prefix) {
				found = true
				cells := strings.Split(strings.Trim(line, "| "), " | ")
				if len(cells) != 2 || !strings.Contains(cells[1], " ms") || strings.HasPrefix(cells[1], "0,") || strings.HasPrefix(cells[1], "0 ms /") {
					t.Errorf("mirror row %q: want a rate and milliseconds", line)
				}
			}
		}
		if !found {
			t.Errorf("mirroring section lacks %q:\n%s", prefix, mirror)
		}
	}
	for _, want := range []string{"- PyKMIP: skipped\n", "- raw PKCS#11: measured\n", "### Targets\n", "Create, 8 clients: ",
		"mirror replication lag under sustained Create", "Create with write_ack=all: "} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}

	// Nothing left behind: the temporary directories are removed and no process
	// started for the bench is still running.
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("bench left %s in its temporary directory", e.Name())
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), tmp) {
			t.Errorf("process %s still running: %s", filepath.Dir(p), strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}
