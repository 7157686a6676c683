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

// TestSymmetricKeyLifecycleVectors replays the OASIS Symmetric Key Lifecycle profile
// conversations (1.4 and 1.0) against a fresh appliance; all must pass.
func TestSymmetricKeyLifecycleVectors(t *testing.T) {
	t.Parallel()
	dir := vectorsDir(t)
	var files []string
	for _, pat := range []string{"v1.4/SKLC-*.xml", "v1.0/SKLC_*.xml"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) != 8 {
		t.Fatalf("found %d SKLC vector files in %s, want 8", len(files), dir)
	}
	for _, f := range files {
		if reason, ok := vectors.Skiplist[filepath.Base(f)]; ok {
			t.Errorf("%s is skipped (%s): SKLC vectors may not be skipped", filepath.Base(f), reason)
		}
	}
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	cfg, err := framework.ClientTLS(framework.ReadFile(t, app.AdminPEM), framework.ReadFile(t, app.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	r := &vectors.Runner{Addr: app.Addr, TLS: cfg, Skip: vectors.Skiplist}
	var out strings.Builder
	sum := r.RunAll(t.Context(), files, &out)
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
