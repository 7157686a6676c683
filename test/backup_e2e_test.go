//go:build e2e

package test

// Backup and disaster recovery end to end: appliance A holds keys of every kind and
// state that clients used; its backup KEK is split among five custodians; A is
// deleted entirely; a fresh appliance B on a new token rebuilds the backup KEK from
// three shares, restores the backup, and serves every key as A did.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/test/framework"
)

var custodians = []string{"alice", "bob", "carol", "dave", "erin"}

// drKeys is how many objects A holds: both kinds in each of the six states, as many
// as the disaster-recovery scenario of the backup issue asks for.
const drKeys = 1000

// drObjects counts drKeys and the key PyKMIP seals a message with.
const drObjects = drKeys + 1

// sealedData is what a client encrypted on A.
type sealedData struct {
	uid, plain  string
	iv, ct, tag []byte
}

func TestBackupDisasterRecovery(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	a := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{Dir: filepath.Join(work, "a"), Env: []string{"HSMKMS_LOG_LEVEL=debug"}})
	s := openKMIP(t, a, a.AdminPEM, framework.Header{Version: ver14})

	// Objects of both kinds in every state; the material of each is learnt through
	// Get while it is fresh, to compare after the restore and to search for leaks.
	var ids []string
	var secrets []secret
	var sealedBefore []sealedData
	for i := range drKeys {
		var uid string
		if i%2 == 0 {
			bits := int32(128 + 128*(i/2%2))
			uid = s.ok(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
				enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
				intAttr("Cryptographic Length", bits),
				intAttr("Cryptographic Usage Mask", maskEncryptDecrypt),
				nameAttr(fmt.Sprintf("dr key %d", i)))).Child(kmip14.TagUniqueIdentifier).Text()
			secrets = append(secrets, secret{fmt.Sprintf("AES-%d %s", bits, uid), getSymKey(t, s, uid, bits)})
		} else {
			b := make([]byte, 32+i%64)
			rand.Read(b)
			uid = uidOf(t, "Register payload", s.ok(kmip14.OperationRegister, objType(kmip14.ObjectTypeSecretData),
				framework.Template(nameAttr(fmt.Sprintf("dr secret %d", i))),
				msg.Struct(kmip14.TagSecretData, msg.Enum(kmip14.TagSecretDataType, uint32(kmip14.SecretDataTypePassword)),
					msg.Struct(kmip14.TagKeyBlock, msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeOpaque)),
						msg.Struct(kmip14.TagKeyValue, msg.Bytes(kmip14.TagKeyMaterial, b))))))
			secrets = append(secrets, secret{"secret data " + uid, b})
		}
		ids = append(ids, uid)
		revoke := func(code kmip14.RevocationReasonCode) {
			p := []*msg.Node{framework.UID(uid), msg.Struct(kmip14.TagRevocationReason, msg.Enum(kmip14.TagRevocationReasonCode, uint32(code)))}
			if code == kmip14.RevocationReasonCodeKeyCompromise {
				p = append(p, msg.Date(kmip14.TagCompromiseOccurrenceDate, time.Now().Add(-time.Hour)))
			}
			s.ok(kmip14.OperationRevoke, p...)
		}
		switch i / 2 % 6 {
		case 1: // Active, and used
			s.ok(kmip14.OperationActivate, framework.UID(uid))
			if i%2 == 0 {
				plain := fmt.Sprintf("customer record %d", i)
				p := s.ok(kmip14.OperationEncrypt, framework.UID(uid),
					msg.Struct(kmip14.TagCryptographicParameters, msg.Enum(kmip14.TagBlockCipherMode, uint32(kmip14.BlockCipherModeGCM))),
					msg.Bytes(kmip14.TagData, []byte(plain)))
				sealedBefore = append(sealedBefore, sealedData{uid, plain, p.Child(kmip14.TagIVCounterNonce).Bytes,
					p.Child(kmip14.TagData).Bytes, p.Child(kmip14.TagAuthenticatedEncryptionTag).Bytes})
			}
		case 2: // Deactivated
			s.ok(kmip14.OperationActivate, framework.UID(uid))
			revoke(kmip14.RevocationReasonCodeCessationOfOperation)
		case 3: // Compromised
			revoke(kmip14.RevocationReasonCodeKeyCompromise)
		case 4: // Destroyed
			s.ok(kmip14.OperationDestroy, framework.UID(uid))
		case 5: // Destroyed Compromised
			revoke(kmip14.RevocationReasonCodeKeyCompromise)
			s.ok(kmip14.OperationDestroy, framework.UID(uid))
		}
	}
	a.MustCLI(t, "keys", "grant", ids[1], "auditor")
	attrsA := allAttributes(t, s, ids)
	if len(sealedBefore) == 0 {
		t.Fatal("no key was used before the backup")
	}

	// The key ceremony, while A serves: five custodians, any three.
	pass := filepath.Join(work, "passphrases")
	os.Mkdir(pass, 0o700)
	for _, c := range custodians {
		os.WriteFile(filepath.Join(pass, c+".passphrase"), []byte("the passphrase of "+c+"\n"), 0o600)
	}
	shares := filepath.Join(work, "shares")
	args := []string{"kek", "export-shares", "--threshold", "3", "--shares", "5", "--out", shares, "--passphrase-dir", pass}
	for _, c := range custodians {
		args = append(args, "--custodian", c)
	}
	var cliOut bytes.Buffer
	record := func(out string) string { cliOut.WriteString(out); return out }
	record(a.MustCLI(t, args...))

	// PyKMIP, a real client, seals a message on A; after the disaster it opens it on B
	// with a certificate of the same identity from B's CA.
	const pyMessage = "what PyKMIP sealed before the disaster"
	sealed := pykmipDR(t, a, "seal", "--message", pyMessage)

	backup1 := filepath.Join(work, "backup-1.hkb")
	out := record(a.MustCLI(t, "backup", "create", "--out", backup1))
	if !strings.Contains(out, fmt.Sprintf("objects     %d", drObjects)) {
		t.Fatalf("backup create output:\n%s", out)
	}
	out = record(a.MustCLI(t, "backup", "verify", backup1))
	if !strings.Contains(out, "seal        ok") || !strings.Contains(out, "SymmetricKey") || !strings.Contains(out, "DestroyedCompromised") {
		t.Fatalf("backup verify output:\n%s", out)
	}
	requireTamperRefused(t, a, backup1)
	if tail := a.MustCLI(t, "audit", "tail", "-n", "200"); !strings.Contains(tail, "backup create") || !strings.Contains(tail, "kek export-shares") {
		t.Fatalf("no audit record of the backup or of the share export:\n%s", tail)
	}

	// A second backup while a client keeps creating keys.
	backup2 := filepath.Join(work, "backup-2.hkb")
	stream := createStream(t, a, func() { record(a.MustCLI(t, "backup", "create", "--out", backup2)) })

	// Disaster: A is gone, token and data directory.
	a.Stop(t)
	logsA := a.Server.Logs()
	if err := os.RemoveAll(a.Dir); err != nil {
		t.Fatal(err)
	}

	b := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{Dir: filepath.Join(work, "b"), NoServe: true, Env: []string{"HSMKMS_LOG_LEVEL=debug"}})
	sharePath := func(c string) string { return filepath.Join(shares, c+".share") }
	res := b.CLI(t, "kek", "import-shares", "--passphrase-dir", pass, sharePath("alice"), sharePath("dave"))
	record(res.Stdout + res.Stderr)
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "too few shares") {
		t.Fatalf("2 shares were not refused: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	res = b.CLI(t, "backup", "restore", backup1)
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "nothing was changed") {
		t.Fatalf("restore without the backup KEK: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	record(b.MustCLI(t, "kek", "import-shares", "--passphrase-dir", pass, sharePath("bob"), sharePath("carol"), sharePath("erin")))
	out = record(b.MustCLI(t, "backup", "restore", backup1))
	if !strings.Contains(out, fmt.Sprintf("created %d, updated 0, skipped 0, conflicted 0", drObjects)) {
		t.Fatalf("restore output:\n%s", out)
	}
	out = record(b.MustCLI(t, "backup", "restore", backup1))
	if !strings.Contains(out, fmt.Sprintf("created 0, updated 0, skipped %d, conflicted 0", drObjects)) {
		t.Fatalf("second restore is not a no-op:\n%s", out)
	}
	// The refused restore (no backup KEK yet) and the two that ran are all recorded.
	if tail := b.MustCLI(t, "audit", "tail", "-n", "8"); strings.Count(tail, "backup restore Success") != 2 ||
		strings.Count(tail, "backup restore Failed") != 1 || !strings.Contains(tail, "kek import-shares Success") {
		t.Fatalf("want audit records of the share import and of one refused and two completed restores:\n%s", tail)
	}

	// B serves every key as A did: same identifiers, attributes (state, digest,
	// dates, names ...), material, grants; what clients sealed on A opens on B.
	b.Serve(t)
	if out := pykmipDR(t, b, "open", "--message", pyMessage, "--sealed", sealed); out != "opened" {
		t.Fatalf("PyKMIP on B: %q", out)
	}
	sb := openKMIP(t, b, b.AdminPEM, framework.Header{Version: ver14})
	attrsB := allAttributes(t, sb, ids)
	for _, id := range ids {
		if !bytes.Equal(attrsA[id], attrsB[id]) {
			t.Fatalf("object %s: Get Attributes differs after the restore\nA: %x\nB: %x", id, attrsA[id], attrsB[id])
		}
	}
	for _, d := range sealedBefore {
		p := sb.ok(kmip14.OperationDecrypt, framework.UID(d.uid),
			msg.Struct(kmip14.TagCryptographicParameters, msg.Enum(kmip14.TagBlockCipherMode, uint32(kmip14.BlockCipherModeGCM))),
			msg.Bytes(kmip14.TagData, d.ct), msg.Bytes(kmip14.TagIVCounterNonce, d.iv), msg.Bytes(kmip14.TagAuthenticatedEncryptionTag, d.tag))
		if got := string(p.Child(kmip14.TagData).Bytes); got != d.plain {
			t.Fatalf("key %s decrypts to %q, want %q", d.uid, got, d.plain)
		}
	}
	for i, id := range ids {
		if i/2%6 >= 4 {
			continue // destroyed: no material
		}
		var km *msg.Node
		framework.Walk(sb.ok(kmip14.OperationGet, framework.UID(id)), func(n *msg.Node) {
			if n.Tag == kmip14.TagKeyMaterial {
				km = n
			}
		})
		if km == nil || !bytes.Equal(km.Bytes, secrets[i].b) {
			t.Fatalf("object %s: Get on B returns other material than on A", id)
		}
	}
	var show struct{ Grants []string }
	if err := json.Unmarshal([]byte(b.MustCLI(t, "keys", "show", "--json", ids[1])), &show); err != nil || !slices.Equal(show.Grants, []string{"auditor"}) {
		t.Fatalf("grants after the restore: %v, %v", show.Grants, err)
	}

	// The mid-stream backup holds exactly the first k keys the client created.
	res = b.CLI(t, "backup", "restore", backup2)
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "serve") {
		t.Fatalf("restore while serve runs: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	b.Stop(t)
	record(b.MustCLI(t, "backup", "restore", backup2))
	var list []struct{ ID string }
	if err := json.Unmarshal([]byte(b.MustCLI(t, "keys", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, o := range list {
		have[o.ID] = true
	}
	k := 0
	for k < len(stream) && have[stream[k]] {
		k++
	}
	for _, id := range stream[k:] {
		if have[id] {
			t.Fatalf("the mid-stream backup holds key %s but not key %s created before it", id, stream[k])
		}
	}
	if k == 0 || k == len(stream) || len(list) != drObjects+k {
		t.Fatalf("the mid-stream backup holds %d of %d streamed keys (%d objects): want a proper prefix", k, len(stream), len(list))
	}
	t.Logf("mid-stream backup: %d of %d streamed creates", k, len(stream))

	// No key material in the backups, the share files, the logs or the CLI output.
	var stacks []hay
	for _, f := range []string{backup1, backup2} {
		stacks = append(stacks, hay{f, framework.ReadFile(t, f)})
	}
	for _, c := range custodians {
		stacks = append(stacks, hay{sharePath(c), framework.ReadFile(t, sharePath(c))})
	}
	stacks = append(stacks, hay{"A's log", []byte(logsA)}, hay{"B's log", []byte(b.Server.Logs())}, hay{"CLI output", cliOut.Bytes()})
	for _, sec := range secrets {
		for form, needle := range sec.forms() {
			for _, h := range stacks {
				if bytes.Contains(h.data, needle) {
					t.Errorf("%s (%s) found in %s", sec.name, form, h.name)
				}
			}
		}
	}
}

// allAttributes returns each object's Get Attributes reply (every attribute).
func allAttributes(t testing.TB, s *kmipSession, ids []string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, id := range ids {
		out[id] = s.ok(kmip14.OperationGetAttributes, framework.UID(id)).Append(nil)
	}
	return out
}

// requireTamperRefused changes bytes across the file (and cuts and extends it):
// `backup verify` must refuse each copy. The unit tests change every byte.
func requireTamperRefused(t *testing.T, a *framework.Appliance, path string) {
	t.Helper()
	orig := framework.ReadFile(t, path)
	var copies [][]byte
	for i := 0; i < len(orig); i += len(orig)/12 + 1 {
		b := bytes.Clone(orig)
		b[i] ^= 0x20
		copies = append(copies, b)
	}
	last := bytes.Clone(orig)
	last[len(last)-1] ^= 1
	copies = append(copies, last, orig[:len(orig)-1], orig[:len(orig)/2], append(bytes.Clone(orig), '\n'))
	for i, b := range copies {
		p := filepath.Join(t.TempDir(), fmt.Sprintf("tampered-%d.hkb", i))
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if res := a.CLI(t, "backup", "verify", p); res.ExitCode == 0 {
			t.Fatalf("changed copy %d verifies:\n%s", i, res.Stdout)
		}
	}
}

// createStream keeps a client creating keys on a, one at a time, while during()
// runs, and returns their IDs in creation order (each acknowledged before the next
// is sent).
func createStream(t *testing.T, a *framework.Appliance, during func()) []string {
	t.Helper()
	c, err := framework.Dial(t.Context(), a.Addr, framework.ReadFile(t, a.AdminPEM), framework.ReadFile(t, a.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	create := func() (string, error) {
		req := framework.Request(framework.Header{Version: ver12}, framework.Item(kmip14.OperationCreate, nil,
			objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
				enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
				intAttr("Cryptographic Length", 256))))
		raw, err := c.RoundTripRaw(req.Append(nil))
		if err != nil {
			return "", err
		}
		root, err := msg.Decode(raw)
		if err != nil {
			return "", err
		}
		r := framework.Reply{Root: root}
		if st, reason := r.Status(0); st != kmip14.ResultStatusSuccess {
			return "", fmt.Errorf("create: %v %v", st, reason)
		}
		return r.Payload(0).Child(kmip14.TagUniqueIdentifier).Text(), nil
	}
	var (
		mu     sync.Mutex
		ids    []string
		failed error
		stop   = make(chan struct{})
		done   = make(chan struct{})
	)
	count := func() (int, error) { mu.Lock(); defer mu.Unlock(); return len(ids), failed }
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			id, err := create()
			mu.Lock()
			ids, failed = append(ids, id), err
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	waitFor := func(n int) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := count()
			if err != nil {
				t.Fatalf("the create stream failed after %d keys: %v", got, err)
			}
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the create stream stalled at %d keys", got)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(20)
	during()
	n, _ := count()
	waitFor(n + 20)
	close(stop)
	<-done
	return ids
}

// TestRotateMasterOnline rotates the master key while a client keeps creating and
// using keys, then retires the old master with serve stopped: every key made before,
// during and after still works.
func TestRotateMasterOnline(t *testing.T) {
	t.Parallel()
	a := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	s := openKMIP(t, a, a.AdminPEM, framework.Header{Version: ver14})
	gcm := msg.Struct(kmip14.TagCryptographicParameters, msg.Enum(kmip14.TagBlockCipherMode, uint32(kmip14.BlockCipherModeGCM)))
	var sealedAll []sealedData
	use := func(s *kmipSession, n int) {
		for i := range n {
			uid := s.ok(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
				enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
				intAttr("Cryptographic Length", 256),
				intAttr("Cryptographic Usage Mask", maskEncryptDecrypt))).Child(kmip14.TagUniqueIdentifier).Text()
			s.ok(kmip14.OperationActivate, framework.UID(uid))
			plain := fmt.Sprintf("record %d of %s", i, uid)
			p := s.ok(kmip14.OperationEncrypt, framework.UID(uid), gcm, msg.Bytes(kmip14.TagData, []byte(plain)))
			sealedAll = append(sealedAll, sealedData{uid, plain, p.Child(kmip14.TagIVCounterNonce).Bytes,
				p.Child(kmip14.TagData).Bytes, p.Child(kmip14.TagAuthenticatedEncryptionTag).Bytes})
		}
	}
	decryptAll := func(s *kmipSession) {
		t.Helper()
		for _, d := range sealedAll {
			p := s.ok(kmip14.OperationDecrypt, framework.UID(d.uid), gcm, msg.Bytes(kmip14.TagData, d.ct),
				msg.Bytes(kmip14.TagIVCounterNonce, d.iv), msg.Bytes(kmip14.TagAuthenticatedEncryptionTag, d.tag))
			if got := string(p.Child(kmip14.TagData).Bytes); got != d.plain {
				t.Fatalf("key %s decrypts to %q", d.uid, got)
			}
		}
	}
	use(s, 50)

	// The client keeps working while the rotation runs (KMIP sessions are not
	// shared between goroutines: this one is the test's own).
	done := make(chan framework.Result)
	go func() {
		res, _ := framework.Run(t.Context(), framework.CLITimeout, append([]string{"HSMKMS_DIR=" + a.Dir}, a.Env...), a.Bin, "kek", "rotate-master")
		done <- res
	}()
	var res framework.Result
wait:
	for {
		select {
		case res = <-done:
			break wait
		default:
			use(s, 1)
			decryptAll(s)
		}
	}
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "created hsmkms-master-2") {
		t.Fatalf("online rotate-master: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	list := a.MustCLI(t, "kek", "list")
	if !strings.Contains(list, "hsmkms-master-1  0 keys") || !strings.Contains(list, "hsmkms-master-2  ") {
		t.Fatalf("after the online rotation:\n%s", list)
	}
	if r := a.CLI(t, "kek", "retire-master"); r.ExitCode == 0 || !strings.Contains(r.Stderr, "serve") {
		t.Fatalf("retire-master while serve runs: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	use(s, 5)
	decryptAll(s)

	a.Stop(t)
	if out := a.MustCLI(t, "kek", "retire-master"); !strings.Contains(out, "deleted hsmkms-master-1") {
		t.Fatalf("retire-master:\n%s", out)
	}
	if err := a.Server.Start(); err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitForPort(a.Addr, a.Server, framework.StartTimeout); err != nil {
		t.Fatal(err)
	}
	s = openKMIP(t, a, a.AdminPEM, framework.Header{Version: ver14})
	decryptAll(s)
	t.Logf("%d keys made before, during and after the rotation decrypt under hsmkms-master-2 alone", len(sealedAll))
}

// TestScheduledBackups lets serve write a backup every second and keep two.
func TestScheduledBackups(t *testing.T) {
	t.Parallel()
	a := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{
		Env: []string{"HSMKMS_BACKUP_SCHEDULE=1s", "HSMKMS_BACKUP_KEEP=2"}})
	s := openKMIP(t, a, a.AdminPEM, framework.Header{Version: ver14})
	for range 5 {
		s.ok(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
			enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
			intAttr("Cryptographic Length", 256)))
	}
	dir := filepath.Join(a.Dir, "backups")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if strings.Count(a.Server.Logs(), "scheduled backup written") >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 4 scheduled backups in 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.Stop(t)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || !strings.Contains(a.Server.Logs(), "old backup removed") {
		t.Fatalf("backup.keep = 2, but %s holds %v", dir, names)
	}
	out := a.MustCLI(t, "backup", "verify", filepath.Join(dir, names[1]))
	if !strings.Contains(out, "seal        ok") || !strings.Contains(out, "objects     5") {
		t.Fatalf("the newest scheduled backup:\n%s", out)
	}
}

// pykmipDR runs test/pykmip/dr.py against app as the client identity "pykmip-dr" and
// returns what it printed.
func pykmipDR(t *testing.T, app *framework.Appliance, args ...string) string {
	t.Helper()
	cert := filepath.Join(app.Dir, "clients", "pykmip-dr.pem")
	if _, err := os.Stat(cert); err != nil {
		cert = app.IssueClient(t, "pykmip-dr", "client")
	}
	_, port, _ := strings.Cut(app.Addr, ":")
	full := append([]string{"pykmip/dr.py", args[0], "--port", port, "--ca", app.CAPEM, "--cert", cert}, args[1:]...)
	res, err := framework.Run(context.Background(), pykmipTimeout, nil, pykmipPython, full...)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("PyKMIP %s exited %d:\n%s%s", args[0], res.ExitCode, res.Stdout, res.Stderr)
	}
	return strings.TrimSpace(res.Stdout)
}
