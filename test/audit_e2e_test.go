//go:build e2e

package test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"
	_ "modernc.org/sqlite"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/test/framework"
)

// exportedRecord is one line of `hsmkms audit export`.
type exportedRecord struct {
	Seq         int64    `json:"seq"`
	Time        string   `json:"time"`
	Kind        string   `json:"kind"`
	Actor       string   `json:"actor"`
	Fingerprint string   `json:"cert_sha256"`
	RemoteAddr  string   `json:"remote_addr"`
	Version     string   `json:"kmip_version"`
	Operation   string   `json:"operation"`
	ObjectIDs   []string `json:"object_ids"`
	Status      string   `json:"status"`
	Reason      string   `json:"reason"`
	Message     string   `json:"message"`
	MAC         string   `json:"mac"`
}

// TestAuditTrail runs mongod's sequence and some administration against the real
// binary, then checks that the trail verifies, exports every identity, and that
// `audit verify` names the seq and kind of each tampering done to a copy of the
// database.
func TestAuditTrail(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	mongod := app.IssueClient(t, "mongod-1", "client")
	intruder := app.IssueClient(t, "intruder", "client")
	h := framework.Header{Version: ver12}

	// mongod's first start, its state polls and audit-log encryption.
	s := openKMIP(t, app, mongod, h)
	uid := s.ok(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
		enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
		intAttr("Cryptographic Length", 256),
		intAttr("Cryptographic Usage Mask", maskEncryptDecrypt))).Child(kmip14.TagUniqueIdentifier).Text()
	getSymKey(t, s, uid, 256)
	s.ok(kmip14.OperationActivate, framework.UID(uid))
	for range 3 {
		keyState(t, s, uid)
	}
	for range 2 {
		s.ok(kmip14.OperationEncrypt, framework.UID(uid), msg.Bytes(kmip14.TagData, []byte("audit log line")))
	}
	// Another client is refused; an administrator grants it.
	openKMIP(t, app, intruder, h).fail(kmip14.OperationGetAttributes, kmip14.ResultReasonPermissionDenied, framework.UID(uid))
	app.MustCLI(t, "keys", "grant", uid, "intruder")
	app.Stop(t)

	// init, 2 × certs issue, 8 mongod items, 1 refusal, keys grant.
	const want = 13
	out := app.MustCLI(t, "audit", "verify")
	m := regexp.MustCompile(`audit trail OK: (\d+) records`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("audit verify: %q", out)
	}
	var n int
	fmt.Sscan(m[1], &n)
	if n < want {
		t.Fatalf("audit verify counted %d records, want at least %d", n, want)
	}

	recs := exportAudit(t, app)
	if len(recs) != n {
		t.Errorf("export wrote %d records, verify counted %d", len(recs), n)
	}
	find := func(kind, actor, op, status string) *exportedRecord {
		for i := range recs {
			r := &recs[i]
			if r.Kind == kind && r.Actor == actor && r.Operation == op && r.Status == status {
				return r
			}
		}
		t.Errorf("no %s record of %s by %q with status %s in:\n%+v", kind, op, actor, status, recs)
		return &exportedRecord{}
	}
	for _, op := range []string{"Create", "Get", "Activate", "GetAttributes", "Encrypt"} {
		r := find("kmip", "mongod-1", op, "Success")
		if !slices.Contains(r.ObjectIDs, uid) || len(r.Fingerprint) != 64 || !strings.HasPrefix(r.RemoteAddr, "127.0.0.1:") ||
			r.Version != "1.2" || len(r.MAC) != 64 {
			t.Errorf("%s record lacks the object, identity or MAC: %+v", op, *r)
		}
	}
	if r := find("kmip", "intruder", "GetAttributes", "OperationFailed"); r.Reason != "PermissionDenied" {
		t.Errorf("refusal recorded as %+v", *r)
	}
	for _, op := range []string{"init", "certs issue", "keys grant"} {
		if r := find("cli", osUserName(t), op, "Success"); op == "keys grant" && !slices.Contains(r.ObjectIDs, uid) {
			t.Errorf("keys grant record names %v, not %s", r.ObjectIDs, uid)
		}
	}
	// Batched records (Encrypt, Get Attributes) are committed up to 200 ms after their
	// reply, so they may follow the CLI's own record: check the count and the
	// newest-last order, not which record is last.
	tail := strings.Split(strings.TrimSpace(app.MustCLI(t, "audit", "tail", "-n", "3")), "\n")
	if len(tail) != 3 {
		t.Errorf("audit tail -n 3 printed %d lines:\n%s", len(tail), strings.Join(tail, "\n"))
	}
	var seqs []int
	for _, line := range tail {
		n, err := strconv.Atoi(strings.Fields(line)[0])
		if err != nil {
			t.Fatalf("audit tail line %q has no sequence number", line)
		}
		seqs = append(seqs, n)
	}
	if !slices.IsSorted(seqs) {
		t.Errorf("audit tail is not oldest-first: %v", seqs)
	}
	if all := app.MustCLI(t, "audit", "tail", "-n", "100"); !strings.Contains(all, "keys grant") {
		t.Errorf("audit tail lacks the keys grant record:\n%s", all)
	}

	seqOf := func(op, actor string) int64 { return find("kmip", actor, op, "Success").Seq }
	get, create := seqOf("Get", "mongod-1"), seqOf("Create", "mongod-1")
	forged := `INSERT INTO audit (seq, time_ns, kind, actor, fingerprint, remote_addr, kmip_version, operation,
		object_ids, status, reason, message, mac) SELECT %d, time_ns, kind, 'mallory', fingerprint, remote_addr,
		kmip_version, 'Get', object_ids, status, reason, message, mac FROM audit WHERE seq = %d`
	const content = `time_ns, kind, actor, fingerprint, remote_addr, kmip_version, operation, object_ids, status, reason, message, mac`
	tests := []struct {
		name  string
		sql   []string
		seq   int64
		issue string
	}{
		{"modified operation", []string{fmt.Sprintf(`UPDATE audit SET operation = 'Destroy' WHERE seq = %d`, get)}, get, "modified"},
		{"deleted record", []string{fmt.Sprintf(`DELETE FROM audit WHERE seq = %d`, get)}, get, "deleted"},
		{"inserted forgery", []string{
			fmt.Sprintf(`UPDATE audit SET seq = -(seq + 1) WHERE seq >= %d`, get),
			`UPDATE audit SET seq = -seq WHERE seq < 0`,
			fmt.Sprintf(forged, get, create),
		}, get, "inserted"},
		{"swapped records", []string{
			fmt.Sprintf(`CREATE TEMP TABLE x AS SELECT * FROM audit WHERE seq IN (%d, %d)`, create, get+1),
			fmt.Sprintf(`UPDATE audit SET (%[1]s) = (SELECT %[1]s FROM x WHERE seq = %[3]d) WHERE seq = %[2]d`, content, create, get+1),
			fmt.Sprintf(`UPDATE audit SET (%[1]s) = (SELECT %[1]s FROM x WHERE seq = %[2]d) WHERE seq = %[3]d`, content, create, get+1),
		}, create, "reordered"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := copyDB(t, filepath.Join(app.Dir, "hsmkms.db"))
			tamper(t, db, tc.sql...)
			res, err := framework.Run(context.Background(), framework.CLITimeout,
				append([]string{"HSMKMS_DIR=" + app.Dir, "HSMKMS_STORE_PATH=" + db}, app.Env...), app.Bin, "audit", "verify")
			if err != nil {
				t.Fatal(err)
			}
			wantMsg := fmt.Sprintf("record %d %s", tc.seq, tc.issue)
			if res.ExitCode != 1 || !strings.Contains(res.Stderr, wantMsg) {
				t.Errorf("audit verify after %s exited %d, want 1 and %q:\n%s%s", tc.name, res.ExitCode, wantMsg, res.Stdout, res.Stderr)
			}
		})
	}
}

func exportAudit(t *testing.T, app *framework.Appliance) []exportedRecord {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	app.MustCLI(t, "audit", "export", "--since", "1h", "--out", path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []exportedRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r exportedRecord
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

// copyDB copies a stopped appliance's database (and WAL, if any) to a temp dir.
func copyDB(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy.db")
	for _, suffix := range []string{"", "-wal"} {
		in, err := os.Open(src + suffix)
		if os.IsNotExist(err) && suffix != "" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.OpenFile(dst+suffix, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(out, in)
		in.Close()
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// tamper edits the database file directly, as someone with the file but not the
// token would.
func tamper(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // the TEMP table lives on one connection
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// osUserName is the actor of CLI records run by this test.
func osUserName(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if s := os.Getenv("SUDO_USER"); s != "" && s != u.Username {
		return u.Username + " (sudo by " + s + ")"
	}
	return u.Username
}
