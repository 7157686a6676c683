//go:build e2e

package test

// The Debian package, installed for real: dpkg -i, init and serve as the hsmkms user
// from /usr/bin, one KMIP round trip, dpkg -r.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/test/framework"
)

const (
	pkgData = "/var/lib/hsmkms"
	pkgBin  = "/usr/bin/hsmkms"
	pkgUnit = "/lib/systemd/system/hsmkms.service"
)

// mustRun runs a command and fails the test unless it exits 0; it returns the output.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDebianPackage builds the package around the binary under test, installs it on
// this machine, checks what it laid down, runs init and serve from it as its system
// user (not through systemd, which a container lacks), makes one KMIP request, and
// removes it again. It needs root; CI runs as root.
func TestDebianPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installing a package with dpkg needs root (CI runs as root)")
	}
	t.Parallel()
	// Never touch a real installation.
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "hsmkms").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Fatalf("hsmkms is already installed on this machine (%s); remove it first (dpkg -P hsmkms)", out)
	}
	if entries, err := os.ReadDir(pkgData); err == nil && len(entries) > 0 {
		t.Fatalf("%s exists and is not empty; it may hold someone's keys", pkgData)
	}
	_, userErr := user.Lookup("hsmkms")
	userExisted := userErr == nil

	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	deb := strings.TrimSpace(mustRun(t, filepath.Join(root, "packaging", "deb", "build.sh"), hsmkmsBin, "1.2.3-4-gabcdef", t.TempDir()))
	if filepath.Base(deb) != "hsmkms_1.2.3+4+gabcdef_"+strings.TrimSpace(mustRun(t, "dpkg", "--print-architecture"))+".deb" {
		t.Fatalf("package file %s: want hsmkms_<version>_<arch>.deb", deb)
	}
	contents := mustRun(t, "dpkg-deb", "--contents", deb)
	for _, want := range []string{"./usr/bin/hsmkms", "./lib/systemd/system/hsmkms.service", "./etc/hsmkms/README", "./etc/hsmkms/hsmkms.env", "./var/lib/hsmkms/"} {
		if !strings.Contains(contents, want) {
			t.Errorf("package lacks %s:\n%s", want, contents)
		}
	}
	if info := mustRun(t, "dpkg-deb", "--field", deb, "Depends"); !strings.Contains(info, "softhsm2") {
		t.Errorf("Depends: %s lacks softhsm2", info)
	}

	t.Cleanup(func() {
		// Purge, then what the package keeps on purpose: the keys and the user.
		if out, err := exec.Command("dpkg", "--purge", "hsmkms").CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge hsmkms: %v\n%s", err, out)
		}
		os.RemoveAll(pkgData)
		if !userExisted {
			if out, err := exec.Command("userdel", "hsmkms").CombinedOutput(); err != nil {
				t.Errorf("userdel hsmkms: %v\n%s", err, out)
			}
		}
	})
	mustRun(t, "dpkg", "-i", deb)

	u, err := user.Lookup("hsmkms")
	if err != nil {
		t.Fatalf("postinst made no hsmkms user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	fi, err := os.Stat(pkgData)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o700 || int(st.Uid) != uid {
		t.Errorf("%s: mode %v owner %d, want 0700 hsmkms (%d)", pkgData, fi.Mode().Perm(), st.Uid, uid)
	}
	if target, err := os.Readlink("/etc/hsmkms/hsmkms.toml"); err != nil || target != filepath.Join(pkgData, "hsmkms.toml") {
		t.Errorf("/etc/hsmkms/hsmkms.toml: link to %q, %v; want %s/hsmkms.toml", target, err, pkgData)
	}
	unit := string(framework.ReadFile(t, pkgUnit))
	for _, want := range []string{"User=hsmkms", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/hsmkms",
		"PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"MemoryDenyWriteExecute=yes", "LimitNOFILE=65536", "ExecStart=/usr/bin/hsmkms serve --dir /var/lib/hsmkms"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", strings.TrimSpace(want))
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed: the unit is not verified")
	} else if out, err := exec.Command("systemd-analyze", "verify", pkgUnit).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify %s: %v\n%s", pkgUnit, err, out)
	}

	// As the unit would: the service user, no new privileges. setpriv execs, so the
	// process it starts is the server itself.
	asUser := []string{"--reuid=hsmkms", "--regid=hsmkms", "--init-groups", "--no-new-privs", "--"}
	env := []string{"HOME=" + pkgData}
	res, err := framework.Run(t.Context(), framework.InitTimeout, env, "setpriv", append(asUser, pkgBin, "init", "--dir", pkgData)...)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("hsmkms init as hsmkms exited %d:\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if _, err := os.Stat("/etc/hsmkms/hsmkms.toml"); err != nil {
		t.Errorf("/etc/hsmkms/hsmkms.toml does not lead to the configuration after init: %v", err)
	}

	app := &framework.Appliance{Bin: pkgBin, Dir: pkgData, Addr: framework.FreeAddr(t),
		AdminPEM: filepath.Join(pkgData, "pki", "admin.pem"), CAPEM: filepath.Join(pkgData, "pki", "ca.pem")}
	srv := framework.New(t, "packaged hsmkms serve", "setpriv", append(asUser, pkgBin, "serve", "--dir", pkgData, "--listen", app.Addr)...)
	srv.Env = env
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitForPort(app.Addr, srv, framework.StartTimeout); err != nil {
		t.Fatal(err)
	}
	s := openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver14})
	id := createAES(s, "packaged")
	if got := getSymKey(t, s, id, 256); len(got) != 32 {
		t.Fatalf("Get returned %d bytes of a 256-bit key", len(got))
	}
	s.ok(kmip14.OperationDiscoverVersions)

	// MemoryDenyWriteExecute=yes kills a process that maps memory writable and
	// executable; neither the Go runtime nor SoftHSM2 may do so.
	maps := framework.ReadFile(t, fmt.Sprintf("/proc/%d/maps", srv.PID()))
	for l := range bytes.SplitSeq(maps, []byte("\n")) {
		if f := bytes.Fields(l); len(f) > 1 && bytes.Contains(f[1], []byte("w")) && bytes.Contains(f[1], []byte("x")) {
			t.Errorf("writable and executable mapping, incompatible with MemoryDenyWriteExecute: %s", l)
		}
	}
	if status := string(framework.ReadFile(t, fmt.Sprintf("/proc/%d/status", srv.PID()))); !strings.Contains(status, "Uid:\t"+u.Uid+"\t") {
		t.Errorf("the server does not run as hsmkms:\n%s", status)
	}
	s.c.Close()
	code, err := srv.Stop(framework.StopTimeout)
	if err != nil || code != 0 {
		t.Fatalf("serve after SIGTERM: exit %d, %v", code, err)
	}

	mustRun(t, "dpkg", "-r", "hsmkms")
	if _, err := os.Stat(pkgBin); !os.IsNotExist(err) {
		t.Errorf("%s still exists after dpkg -r: %v", pkgBin, err)
	}
	if _, err := os.Stat(filepath.Join(pkgData, "hsmkms.db")); err != nil {
		t.Errorf("dpkg -r removed the keys: %v", err)
	}
}
