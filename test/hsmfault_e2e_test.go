//go:build e2e

package test

// Faults of the server's two resources: the token missing at start, the token gone
// while serving (a PKCS#11 shim in front of SoftHSM2), and the database out of space
// (the store.max_size_mb quota, which fails writes exactly as a full disk does).

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/softhsm"
	"github.com/hsmkms/hsmkms/test/framework"
)

// Messages the client sees for each fault (kmip/errors.go).
const (
	msgHSMUnavailable = "the HSM is unavailable; retry later"
	msgStoreFull      = "the key store is out of space; nothing was written"
)

// TestStartupFaults starts serve with a broken token, configuration or store: each
// must end at once with its exit status and one line that names the key to fix.
func TestStartupFaults(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{NoServe: true})
	wrongPIN := filepath.Join(t.TempDir(), "wrong.pin")
	if err := os.WriteFile(wrongPIN, []byte("000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		env      string
		wantCode int
		wantKey  string // the line must name it
	}{
		{"token label that does not exist", "HSMKMS_HSM_TOKEN_LABEL=no-such-token", 3, "hsm.token_label"},
		{"module missing", "HSMKMS_HSM_MODULE=/nonexistent/libpkcs11.so", 3, "hsm.module"},
		{"wrong PIN", "HSMKMS_HSM_PIN_FILE=" + wrongPIN, 3, "hsm.pin_file"},
		{"PIN file missing", "HSMKMS_HSM_PIN_FILE=/nonexistent/user.pin", 3, "hsm.pin_file"},
		{"bad configuration value", "HSMKMS_STORE_MAX_SIZE_MB=-1", 2, "store.max_size_mb"},
		{"database missing", "HSMKMS_STORE_PATH=/nonexistent/hsmkms.db", 4, "store.path"},
	}
	// One after another: each serve takes the appliance lock before it fails.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := append([]string{tt.env}, app.Env...)
			res, err := framework.Run(t.Context(), framework.StartTimeout, env, app.Bin, "serve", "--dir", app.Dir, "--listen", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != tt.wantCode {
				t.Errorf("exit status %d, want %d\n%s", res.ExitCode, tt.wantCode, res.Stderr)
			}
			var lines []string
			for l := range strings.SplitSeq(res.Stderr, "\n") {
				if strings.HasPrefix(l, "hsmkms: ") {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 {
				t.Fatalf("%d lines start with \"hsmkms: \", want 1:\n%s", len(lines), res.Stderr)
			}
			if !strings.Contains(lines[0], tt.wantKey) {
				t.Errorf("the error does not name %s: %s", tt.wantKey, lines[0])
			}
			t.Logf("%d: %s", res.ExitCode, lines[0])
		})
	}
}

// buildShim compiles test/testdata/p11shim into a PKCS#11 module, with the headers
// miekg/pkcs11 ships.
func buildShim(t *testing.T) string {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/miekg/pkcs11")
	cmd.Dir = root
	inc, err := cmd.Output()
	if err != nil {
		t.Fatalf("find the PKCS#11 headers: %v", err)
	}
	out := filepath.Join(t.TempDir(), "p11shim.so")
	cc := exec.Command("gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I", strings.TrimSpace(string(inc)),
		"-o", out, filepath.Join(root, "test", "testdata", "p11shim", "p11shim.c"), "-ldl", "-lpthread")
	if b, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("build the PKCS#11 shim: %v\n%s", err, b)
	}
	return out
}

// failWith sends op and requires Operation Failed, General Failure and message.
func failWith(t *testing.T, s *kmipSession, message string, op kmip14.Operation, payload ...*msg.Node) {
	t.Helper()
	r := s.call(op, payload...)
	st, reason := r.Status(0)
	got := r.Items()[0].Child(kmip14.TagResultMessage).Text()
	if st != kmip14.ResultStatusOperationFailed || reason != kmip14.ResultReasonGeneralFailure || got != message {
		t.Fatalf("%v: %v %v %q, want OperationFailed GeneralFailure %q", op, st, reason, got, message)
	}
}

func createAES(s *kmipSession, name string) string {
	p := s.ok(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
		enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
		intAttr("Cryptographic Length", 256),
		intAttr("Cryptographic Usage Mask", maskEncryptDecrypt), nameAttr(name)))
	return p.Child(kmip14.TagUniqueIdentifier).Text()
}

func registerAES(s *kmipSession, name string, key []byte) string {
	p := s.ok(kmip14.OperationRegister, objType(kmip14.ObjectTypeSymmetricKey),
		framework.Template(intAttr("Cryptographic Usage Mask", maskEncryptDecrypt), nameAttr(name)),
		symmetricKey(key, kmip14.CryptographicAlgorithmAES, 256))
	return uidOf(s.t, "Register payload", p)
}

// roundTrip encrypts and decrypts a message with key id.
func roundTrip(t *testing.T, s *kmipSession, id string) {
	t.Helper()
	data := []byte("sixteen byte msg")
	enc := s.ok(kmip14.OperationEncrypt, framework.UID(id), msg.Bytes(kmip14.TagData, data))
	dec := s.ok(kmip14.OperationDecrypt, framework.UID(id), enc.Child(kmip14.TagData), enc.Child(kmip14.TagIVCounterNonce))
	if !bytes.Equal(dec.Child(kmip14.TagData).Bytes, data) {
		t.Fatal("Decrypt did not return the plaintext")
	}
}

// TestTokenGoneMidRun serves through a PKCS#11 shim that can make the token vanish:
// every session is closed (and the login lost) and calls fail with
// CKR_DEVICE_REMOVED / CKR_TOKEN_NOT_PRESENT while a control file exists. Requests
// that need the token must fail with General Failure and the HSM message, metadata
// reads must go on, the log must name the cause, and once the file is gone the same
// process must serve again on the same connection: no restart.
func TestTokenGoneMidRun(t *testing.T) {
	t.Parallel()
	shim := buildShim(t)
	module, err := softhsm.FindModule()
	if err != nil {
		t.Fatal(err)
	}
	control := filepath.Join(t.TempDir(), "token-gone")
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{NoServe: true})
	app.Env = append(app.Env, "HSMKMS_HSM_MODULE="+shim, "P11SHIM_MODULE="+module, "P11SHIM_CONTROL="+control)
	app.Serve(t)
	pid := app.Server.PID()
	s := openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver14})

	k1 := createAES(s, "fault-created")
	s.ok(kmip14.OperationActivate, framework.UID(k1))
	roundTrip(t, s, k1) // caches k1's unwrapped handle in the token
	key := make([]byte, 32)
	rand.Read(key)
	k2 := registerAES(s, "fault-registered", key)

	for cycle := 1; cycle <= 2; cycle++ {
		if err := os.WriteFile(control, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		failWith(t, s, msgHSMUnavailable, kmip14.OperationEncrypt, framework.UID(k1), msg.Bytes(kmip14.TagData, []byte("sixteen byte msg")))
		failWith(t, s, msgHSMUnavailable, kmip14.OperationGet, framework.UID(k2))
		failWith(t, s, msgHSMUnavailable, kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
			enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)), intAttr("Cryptographic Length", 256)))
		// Metadata needs no token: mongod's key state poll keeps working.
		if st := keyState(t, s, k1); st != kmip14.StateActive {
			t.Fatalf("cycle %d: state of %s is %v during the fault, want Active", cycle, k1, st)
		}

		if err := os.Remove(control); err != nil {
			t.Fatal(err)
		}
		recovered := time.Now()
		deadline := recovered.Add(10 * time.Second)
		attempts := 0
		for {
			attempts++
			r := s.call(kmip14.OperationGet, framework.UID(k2))
			if st, _ := r.Status(0); st == kmip14.ResultStatusSuccess {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: the server did not recover within 10 s of the token's return", cycle)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("cycle %d: first successful Get after %d attempt(s), %v", cycle, attempts, time.Since(recovered).Round(time.Millisecond))
		if attempts > 1 {
			// The fault retired every session, so the first request reopens one.
			t.Errorf("cycle %d: %d requests failed after the token returned", cycle, attempts-1)
		}
		if got := getSymKey(t, s, k2, 256); !bytes.Equal(got, key) {
			t.Fatalf("cycle %d: Get returned other bytes after recovery", cycle)
		}
		roundTrip(t, s, k1)
		k3 := createAES(s, fmt.Sprintf("after-fault-%d", cycle))
		getSymKey(t, s, k3, 256)
	}
	if !app.Server.Running() || app.Server.PID() != pid {
		t.Fatal("the server restarted; it must recover in place")
	}
	logs := app.Server.Logs()
	for _, want := range []string{"CKR_DEVICE_REMOVED", "token sessions recovered"} {
		if !strings.Contains(logs, want) {
			t.Errorf("server log lacks %q", want)
		}
	}
	if res := app.CLI(t, "audit", "verify"); res.ExitCode != 0 {
		t.Errorf("audit verify after the token faults: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
}

// TestStoreFull fills a store capped by store.max_size_mb: Register and Create must
// fail with General Failure and the out-of-space message and write nothing; reads
// that need no durable audit record (metadata, Locate, Encrypt and Decrypt) go on,
// while Get, which reveals a key and so must be recorded first, may only fail closed;
// the database stays intact; after a restart with a larger quota every key
// acknowledged before is there with its bytes, writes work again and the audit chain
// still verifies.
func TestStoreFull(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{NoServe: true})
	app.Env = append(app.Env, "HSMKMS_STORE_MAX_SIZE_MB=1")
	app.Serve(t)
	s := openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver14})
	db := openDBReadOnly(t, filepath.Join(app.Dir, "hsmkms.db"))
	active := createAES(s, "active")
	s.ok(kmip14.OperationActivate, framework.UID(active))

	keys := map[string][]byte{}
	var full framework.Reply
	for i := 0; ; i++ {
		if i == 5000 {
			t.Fatal("5000 keys fit in a 1 MiB quota")
		}
		key := make([]byte, 32)
		rand.Read(key)
		name := fmt.Sprintf("fill-%d-%s", i, strings.Repeat("x", 200))
		r := s.call(kmip14.OperationRegister, objType(kmip14.ObjectTypeSymmetricKey),
			framework.Template(intAttr("Cryptographic Usage Mask", maskEncryptDecrypt), nameAttr(name)),
			symmetricKey(key, kmip14.CryptographicAlgorithmAES, 256))
		if st, _ := r.Status(0); st != kmip14.ResultStatusSuccess {
			full = r
			break
		}
		keys[uidOf(t, "Register payload", r.Payload(0))] = key
	}
	st, reason := full.Status(0)
	message := full.Items()[0].Child(kmip14.TagResultMessage).Text()
	if st != kmip14.ResultStatusOperationFailed || reason != kmip14.ResultReasonGeneralFailure || message != msgStoreFull {
		t.Fatalf("Register when full: %v %v %q, want OperationFailed GeneralFailure %q", st, reason, message, msgStoreFull)
	}
	t.Logf("full after %d registered keys", len(keys))
	failWith(t, s, msgStoreFull, kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
		enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)), intAttr("Cryptographic Length", 256),
		nameAttr("create-when-full-"+strings.Repeat("y", 2000))))

	// Reads go on, and nothing of the failed writes is visible.
	checkDB := func(when string) {
		t.Helper()
		if rows := dbObjects(t, db); len(rows) != len(keys)+1 {
			t.Fatalf("%s: the database holds %d objects, %d were acknowledged", when, len(rows), len(keys)+1)
		}
		checkDBInvariants(t, db)
	}
	checkDB("while full")
	for id := range keys {
		if st := keyState(t, s, id); st != kmip14.StatePreActive {
			t.Fatalf("while full: %s is %v, want PreActive", id, st)
		}
	}
	if located := s.ok(kmip14.OperationLocate).All(kmip14.TagUniqueIdentifier); len(located) != len(keys)+1 {
		t.Fatalf("Locate while full found %d objects, want %d", len(located), len(keys)+1)
	}
	roundTrip(t, s, active)
	for id, key := range keys {
		r := s.call(kmip14.OperationGet, framework.UID(id))
		if st, _ := r.Status(0); st == kmip14.ResultStatusSuccess {
			// Check this reply's bytes: a second Get may find no room for its record.
			got := r.Payload(0).Child(kmip14.TagSymmetricKey).Child(kmip14.TagKeyBlock).Child(kmip14.TagKeyValue).Child(kmip14.TagKeyMaterial)
			if got == nil || !bytes.Equal(got.Bytes, key) {
				t.Fatalf("while full: Get %s returned other bytes", id)
			}
		} else {
			// The audit trail fails closed: no key leaves unrecorded.
			failWith(t, s, "audit trail unavailable", kmip14.OperationGet, framework.UID(id))
			t.Log("while full, Get fails closed: its audit record cannot be stored")
		}
		break
	}

	app.Stop(t)
	s.c.Close()
	app.Server.Env = append(app.Server.Env, "HSMKMS_STORE_MAX_SIZE_MB=64") // the later value wins
	if err := app.Server.Start(); err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitForPort(app.Addr, app.Server, framework.StartTimeout); err != nil {
		t.Fatal(err)
	}
	s = openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver14})
	key := make([]byte, 32)
	rand.Read(key)
	keys[registerAES(s, "after-quota-raised", key)] = key
	keys[active] = getSymKey(t, s, active, 256)
	for id, key := range keys {
		if got := getSymKey(t, s, id, 256); !bytes.Equal(got, key) {
			t.Fatalf("after raising the quota: Get %s returned other bytes", id)
		}
	}
	roundTrip(t, s, active)
	if rows := dbObjects(t, db); len(rows) != len(keys) {
		t.Fatalf("the database holds %d objects, %d were acknowledged", len(rows), len(keys))
	}
	checkDBInvariants(t, db)
	if res := app.CLI(t, "audit", "verify"); res.ExitCode != 0 {
		t.Errorf("audit verify after the store was full: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
}
