package framework

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Time limits of the appliance's lifecycle in tests. They are generous because CI
// machines are slow and run suites in parallel.
const (
	InitTimeout  = 60 * time.Second
	StartTimeout = 30 * time.Second
	StopTimeout  = 10 * time.Second
	CLITimeout   = 60 * time.Second
)

// ApplianceOptions tunes StartAppliance. The zero value is an embedded-SoftHSM
// appliance on a free loopback port.
type ApplianceOptions struct {
	// Dir is the appliance directory; "" makes one in t.TempDir().
	Dir string
	// SANs are extra server certificate names (init --san).
	SANs []string
	// InitArgs are more flags for init, e.g. "--tls-key-in-token".
	InitArgs []string
	// Env is added to the server's and the CLI's environment, e.g.
	// "HSMKMS_LOG_LEVEL=debug" or "HSMKMS_SERVER_IDLE_TIMEOUT=2s".
	Env []string
	// NoServe runs init only; call Serve later.
	NoServe bool
}

// Appliance is an initialised hsmkms directory and, after Serve, its running server.
type Appliance struct {
	Bin  string // the hsmkms binary
	Dir  string // the appliance directory
	Addr string // host:port the server listens on (127.0.0.1)
	// AdminAddr is the admin listener (/metrics, /healthz, /readyz), a free loopback
	// port so that parallel appliances do not fight over the default 9696. Env may
	// override it with HSMKMS_ADMIN_LISTEN.
	AdminAddr string
	AdminPEM  string // DIR/pki/admin.pem: administrator certificate and key
	CAPEM     string // DIR/pki/ca.pem: the CA clients must trust
	Server    *Process
	Env       []string

	t testing.TB
}

// StartAppliance runs `hsmkms init` and, unless opts.NoServe, `hsmkms serve` on a
// free port, and returns once the port accepts connections. Cleanup stops the
// server; its logs are printed if the test failed.
func StartAppliance(t testing.TB, bin string, opts ApplianceOptions) *Appliance {
	t.Helper()
	dir := opts.Dir
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "appliance")
	}
	a := &Appliance{
		Bin:      bin,
		Dir:      dir,
		AdminPEM: filepath.Join(dir, "pki", "admin.pem"),
		CAPEM:    filepath.Join(dir, "pki", "ca.pem"),
		Env:      opts.Env,
		t:        t,
	}
	args := []string{"init", "--dir", dir}
	for _, s := range opts.SANs {
		args = append(args, "--san", s)
	}
	args = append(args, opts.InitArgs...)
	res, err := Run(context.Background(), InitTimeout, a.Env, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("hsmkms init exited %d:\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if !opts.NoServe {
		a.Serve(t)
	}
	return a
}

// Serve starts `hsmkms serve` on a free loopback port and waits until it accepts
// connections. A port taken by someone else between FreeAddr and the bind is
// retried on another port.
func (a *Appliance) Serve(t testing.TB) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		a.Addr, a.AdminAddr = FreeAddr(t), FreeAddr(t)
		p := New(t, "hsmkms serve "+filepath.Base(a.Dir), a.Bin, "serve", "--dir", a.Dir, "--listen", a.Addr)
		// a.Env comes last: for a repeated variable the last value wins.
		p.Env = append([]string{"HSMKMS_ADMIN_LISTEN=" + a.AdminAddr}, a.Env...)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		a.Server = p
		err := WaitForPort(a.Addr, p, StartTimeout)
		if err == nil {
			t.Cleanup(func() {
				a.Server.Stop(StopTimeout)
				// A server built with -race (make e2e-race) reports races in its log.
				if strings.Contains(a.Server.Logs(), "WARNING: DATA RACE") {
					t.Errorf("hsmkms serve %s hit a data race:\n%s", filepath.Base(a.Dir), a.Server.Logs())
				}
			})
			return
		}
		if attempt < 3 && strings.Contains(p.Logs(), "address already in use") {
			continue
		}
		t.Fatalf("start appliance: %v", err)
	}
}

// Stop sends SIGTERM to the server and fails the test unless it exits 0 within
// StopTimeout.
func (a *Appliance) Stop(t testing.TB) {
	t.Helper()
	code, err := a.Server.Stop(StopTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("hsmkms serve exited %d after SIGTERM", code)
	}
}

// Restart stops the server gracefully and serves again on the same address.
func (a *Appliance) Restart(t testing.TB) {
	t.Helper()
	a.Stop(t)
	if err := a.Server.Start(); err != nil {
		t.Fatal(err)
	}
	if err := WaitForPort(a.Addr, a.Server, StartTimeout); err != nil {
		t.Fatalf("restart appliance: %v", err)
	}
}

// CLI runs `hsmkms ARGS...` against this appliance (HSMKMS_DIR names it, so args
// need no --dir) and returns the result; a non-zero exit is not a test failure.
func (a *Appliance) CLI(t testing.TB, args ...string) Result {
	t.Helper()
	env := append([]string{"HSMKMS_DIR=" + a.Dir}, a.Env...)
	res, err := Run(context.Background(), CLITimeout, env, a.Bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// MustCLI is CLI that fails the test on a non-zero exit and returns stdout.
func (a *Appliance) MustCLI(t testing.TB, args ...string) string {
	t.Helper()
	res := a.CLI(t, args...)
	if res.ExitCode != 0 {
		t.Fatalf("hsmkms %s exited %d:\n%s%s", strings.Join(args, " "), res.ExitCode, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

// IssueClient issues a client bundle (certificate and key, one PEM file) for name
// with role "admin" or "client" and returns its path, DIR/clients/NAME.pem.
func (a *Appliance) IssueClient(t testing.TB, name, role string) string {
	t.Helper()
	dir := filepath.Join(a.Dir, "clients")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name+".pem")
	a.MustCLI(t, "certs", "issue", "--name", name, "--role", role, "--out", out)
	return out
}

// ReadFile returns the contents of path or fails the test; handy for the PEM files.
func ReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
