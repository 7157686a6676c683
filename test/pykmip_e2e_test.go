//go:build e2e

package test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/test/framework"
)

// pykmipPython is Debian's interpreter: python3-pykmip is installed for it, not for
// whatever python3 comes first on PATH.
const pykmipPython = "/usr/bin/python3"

// pykmipTimeout bounds one run of the PyKMIP script (about twenty operations).
const pykmipTimeout = 90 * time.Second

// TestPyKMIP runs the real PyKMIP 0.10 ProxyKmipClient (test/pykmip/client_suite.py)
// against the binary once per KMIP protocol version: lifecycle, Get formats,
// attributes, Locate, Register of keys and secret data, Encrypt/Decrypt checked
// against a local AES computation, and per-identity access control. The script
// exits non-zero with a "FAIL ..." line on the first wrong answer.
func TestPyKMIP(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(pykmipPython); err != nil {
		t.Fatalf("PyKMIP needs Debian's python (apt-get install -y python3-pykmip): %v", err)
	}
	if res, err := framework.Run(context.Background(), 30*time.Second, nil, pykmipPython, "-c", "import kmip.pie.client"); err != nil || res.ExitCode != 0 {
		t.Fatalf("PyKMIP is not importable (apt-get install -y python3-pykmip): %v %s", err, res.Stderr)
	}

	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	owner := app.IssueClient(t, "pykmip-owner", "client")
	other := app.IssueClient(t, "pykmip-other", "client")
	_, port, ok := strings.Cut(app.Addr, ":")
	if !ok {
		t.Fatalf("appliance address %q has no port", app.Addr)
	}

	// One appliance for all versions: the script names its objects uniquely per
	// run, so runs cannot see each other's results.
	for _, version := range []string{"1.0", "1.1", "1.2", "1.3", "1.4"} {
		t.Run("kmip"+version, func(t *testing.T) {
			res, err := framework.Run(context.Background(), pykmipTimeout, nil, pykmipPython,
				"pykmip/client_suite.py",
				"--host", "127.0.0.1", "--port", port,
				"--ca", app.CAPEM,
				// The bundle holds certificate and key; Python's ssl reads each from it.
				"--cert", owner, "--key", owner,
				"--other-cert", other, "--other-key", other,
				"--admin-cert", app.AdminPEM,
				"--version", version)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("PyKMIP output:\n%s", res.Stdout)
			if res.ExitCode != 0 {
				t.Fatalf("PyKMIP suite (KMIP %s) exited %d:\n%s", version, res.ExitCode, res.Stderr)
			}
			if want := "PASS [kmip " + version + "]"; !strings.Contains(res.Stdout, want) {
				t.Fatalf("PyKMIP suite did not report %q:\n%s", want, res.Stderr)
			}
		})
	}
}
