//go:build e2e

package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmkms/hsmkms/test/framework"
	"github.com/hsmkms/hsmkms/test/vectors"
)

// vectorsDir is $HSMKMS_VECTORS or ../shared/kmip-vectors beside the repository.
func vectorsDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("HSMKMS_VECTORS"); d != "" {
		return d
	}
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(root, "..", "shared", "kmip-vectors")
	if _, err := os.Stat(d); err != nil {
		t.Fatalf("vector directory: %v (set HSMKMS_VECTORS)", err)
	}
	return d
}

// TestConformanceVectors replays every OASIS conversation in the vector directory
// (symmetric key lifecycle and foundry, basic cryptographic services incl. GCM, RNG,
// tape library, and the 1.0/1.2 test cases) against one fresh appliance, in file
// order (TL-M-3 uses the key TL-M-2 made). Every file must pass or sit on
// vectors.Skiplist with its reason; the symmetric key lifecycle files may not be
// skipped.
func TestConformanceVectors(t *testing.T) {
	t.Parallel()
	dir := vectorsDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "*", "*.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 51 {
		t.Fatalf("found %d vector files in %s, want at least 51", len(files), dir)
	}
	sklc := 0
	for _, f := range files {
		name := filepath.Base(f)
		if !strings.HasPrefix(name, "SKLC") {
			continue
		}
		sklc++
		if reason, ok := vectors.Skiplist[name]; ok {
			t.Errorf("%s is skipped (%s): SKLC vectors may not be skipped", name, reason)
		}
	}
	if sklc != 8 {
		t.Errorf("found %d SKLC vector files, want 8", sklc)
	}
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	cfg, err := framework.ClientTLS(framework.ReadFile(t, app.AdminPEM), framework.ReadFile(t, app.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	r := &vectors.Runner{Addr: app.Addr, TLS: cfg, Skip: vectors.Skiplist}
	var out strings.Builder
	sum := r.RunAll(t.Context(), files, &out)
	// The report ends with the totals and the skip list with each reason.
	t.Logf("vector results:\n%s", out.String())
	for _, res := range sum.Results {
		if res.Status == vectors.Failed {
			t.Errorf("%s: %s", res.File, res.Detail)
		}
	}
	if sum.Passed+sum.Skipped != len(files) {
		t.Errorf("%d passed, %d failed, %d skipped of %d", sum.Passed, sum.Failed, sum.Skipped, len(files))
	}
}
