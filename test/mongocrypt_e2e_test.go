//go:build e2e && cse

package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/test/framework"
	"github.com/hsmkms/hsmkms/test/mongocrypt"
)

// libmongocrypt 1.7 registers a 96-byte secret (a local-KMS-style master key).
const mongocryptSecretLen = 96

// TestMongocryptKMIP drives libmongocrypt 1.7.2 (MongoDB's real KMIP client
// code, through the Go driver's binding) against the binary with no database:
// create a data key (Register SecretData, Activate, Get, all KMIP 1.0), encrypt
// and decrypt with it, create a second data key on the same KMIP secret (Get),
// then restart the server and decrypt in a fresh process, where libmongocrypt
// must Get the secret again. Finally another identity and a destroyed secret must
// both make decryption fail.
//
// libmongocrypt 1.7.2 has no `delegated: true` mode (Create, Encrypt, Decrypt on
// the server; added in 1.10), so that path is not reachable with this client.
func TestMongocryptKMIP(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	helper := buildMcdecrypt(t)

	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	bundle := app.IssueClient(t, "mongocrypt-app", "client")
	tlsCfg, err := framework.ClientTLS(framework.ReadFile(t, bundle), framework.ReadFile(t, app.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	c, err := mongocrypt.New(mongocrypt.Config{Endpoint: app.Addr, TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Data key with a new KMIP secret: Register, Activate, Get.
	keyDoc, err := c.CreateDataKey(ctx, "")
	if err != nil {
		t.Fatalf("create data key: %v\nexchanges: %s", err, describeKMS(t, c.Exchanges()))
	}
	t.Logf("create data key:%s", describeKMS(t, c.Exchanges()))
	calls := decodeKMS(t, c.Exchanges())
	requireOps(t, "create data key", calls, kmip14.OperationRegister, kmip14.OperationActivate, kmip14.OperationGet)
	reg, act, get := calls[0], calls[1], calls[2]
	if got := firstTag(reg.payload(), kmip14.TagObjectType); got == nil || got.Int != int64(kmip14.ObjectTypeSecretData) {
		t.Fatalf("libmongocrypt registered %v, want Secret Data", got)
	}
	secret := firstTag(firstTag(reg.payload(), kmip14.TagSecretData), kmip14.TagKeyMaterial)
	if secret == nil || len(secret.Bytes) != mongocryptSecretLen {
		t.Fatalf("Register carries key material %v, want %d bytes", secret, mongocryptSecretLen)
	}
	uid := uidOf(t, "Register reply", reg.reply.Payload(0))
	if got := firstTag(act.payload(), kmip14.TagUniqueIdentifier); got == nil || got.Text() != uid {
		t.Fatalf("Activate asked for %v, want %q", got, uid)
	}
	if got := uidOf(t, "Activate reply", act.reply.Payload(0)); got != uid {
		t.Fatalf("Activate reply identifier %q, want %q (W11)", got, uid)
	}
	requireSecret(t, "Get after Register", get, uid, reg)
	mk, ok := keyDoc.Lookup("masterKey").DocumentOK()
	if !ok {
		t.Fatalf("data key document has no masterKey: %v", keyDoc)
	}
	if p, _ := mk.Lookup("provider").StringValueOK(); p != "kmip" {
		t.Fatalf("masterKey.provider %q, want kmip", p)
	}
	if id, _ := mk.Lookup("keyId").StringValueOK(); id != uid {
		t.Fatalf("masterKey.keyId %q, want the registered %q", id, uid)
	}

	// The KMIP secret is Active and owned: check it as the administrator would.
	admin := openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver12})
	if st := keyState(t, admin, uid); st != kmip14.StateActive {
		t.Fatalf("KMIP secret %s is %v after libmongocrypt's Activate, want Active", uid, st)
	}

	// Explicit encryption: deterministic twice is identical, random differs, all decrypt.
	const value = "hsmkms libmongocrypt e2e: 123-45-6789"
	det1 := encryptValue(t, c, keyDoc, value, mongocrypt.Deterministic)
	det2 := encryptValue(t, c, keyDoc, value, mongocrypt.Deterministic)
	rnd1 := encryptValue(t, c, keyDoc, value, mongocrypt.Random)
	rnd2 := encryptValue(t, c, keyDoc, value, mongocrypt.Random)
	if !bytes.Equal(det1, det2) {
		t.Fatal("deterministic encryption of one value gave two ciphertexts")
	}
	if bytes.Equal(rnd1, rnd2) || bytes.Equal(rnd1, det1) {
		t.Fatal("random encryption repeated a ciphertext")
	}
	if bytes.Contains(det1, []byte(value)) || bytes.Contains(rnd1, []byte(value)) {
		t.Fatal("ciphertext contains the plaintext")
	}
	for _, ct := range [][]byte{det1, rnd1, rnd2} {
		if got := decryptValue(t, c, keyDoc, ct); got != value {
			t.Fatalf("decrypt gave %q, want %q", got, value)
		}
	}
	// Whatever libmongocrypt fetched for that was the same secret, by Get.
	for _, call := range decodeKMS(t, c.Exchanges())[3:] {
		requireSecret(t, "Get for encryption", call, uid, reg)
	}

	// A second data key on the existing secret: a single Get.
	before := len(c.Exchanges())
	keyDoc2, err := c.CreateDataKey(ctx, uid)
	if err != nil {
		t.Fatalf("create data key on %s: %v\nexchanges: %s", uid, err, describeKMS(t, c.Exchanges()[before:]))
	}
	calls = decodeKMS(t, c.Exchanges()[before:])
	requireOps(t, "create data key with keyId", calls, kmip14.OperationGet)
	requireSecret(t, "Get of an existing secret", calls[0], uid, reg)
	if id1, _ := mongocrypt.KeyID(keyDoc); bytes.Equal(id1, mustKeyID(t, keyDoc2)) {
		t.Fatal("two data keys share an _id")
	}
	ct2 := encryptValue(t, c, keyDoc2, value, mongocrypt.Random)
	if got := decryptValue(t, c, keyDoc2, ct2); got != value {
		t.Fatalf("decrypt with the second data key gave %q", got)
	}

	// Restart the server; a fresh process (empty key cache) must Get the secret.
	dir := t.TempDir()
	keyFile := writeTemp(t, dir, "key.bson", keyDoc)
	detFile := writeTemp(t, dir, "det.bson", det1)
	rndFile := writeTemp(t, dir, "rnd.bson", rnd1)
	app.Restart(t)
	for _, ct := range []string{detFile, rndFile} {
		out := runMcdecrypt(t, helper, app, bundle, keyFile, ct)
		if out.err != "" {
			t.Fatalf("decrypt after restart in a new process: %s\nexchanges: %s", out.err, describeKMS(t, out.Exchanges))
		}
		if out.Plaintext != value {
			t.Fatalf("decrypt after restart gave %q, want %q", out.Plaintext, value)
		}
		t.Logf("decrypt after restart, new process:%s", describeKMS(t, out.Exchanges))
		calls := decodeKMS(t, out.Exchanges)
		requireOps(t, "decrypt after restart", calls, kmip14.OperationGet)
		requireSecret(t, "Get after restart", calls[0], uid, reg)
	}

	// Another client identity may not read the secret, so it cannot decrypt.
	intruder := app.IssueClient(t, "mongocrypt-other", "client")
	out := runMcdecrypt(t, helper, app, intruder, keyFile, detFile)
	if out.err == "" {
		t.Fatalf("another identity decrypted with %s's secret: %q", "mongocrypt-app", out.Plaintext)
	}
	t.Logf("decrypt as another identity:%s", describeKMS(t, out.Exchanges))
	requireFailedGet(t, "Get by another identity", out.Exchanges, kmip14.ResultReasonPermissionDenied)

	// Once the secret is destroyed, nothing decrypts any more.
	admin = openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver12})
	admin.ok(kmip14.OperationRevoke, framework.UID(uid),
		msg.Struct(kmip14.TagRevocationReason,
			msg.Enum(kmip14.TagRevocationReasonCode, uint32(kmip14.RevocationReasonCodeCessationOfOperation))))
	admin.ok(kmip14.OperationDestroy, framework.UID(uid))
	out = runMcdecrypt(t, helper, app, bundle, keyFile, rndFile)
	if out.err == "" {
		t.Fatalf("decrypted %q with a destroyed KMIP secret", out.Plaintext)
	}
	if !strings.Contains(out.err, "KMIP") && !strings.Contains(out.err, "kms") {
		t.Fatalf("decryption failed for another reason than the KMIP Get: %s", out.err)
	}
	t.Logf("decrypt after destroy: %s%s", out.err, describeKMS(t, out.Exchanges))
	requireFailedGet(t, "Get of a destroyed secret", out.Exchanges, 0)
}

// kmsCall is one decoded libmongocrypt exchange; every reply already passed the
// envelope rules (W2, W3, and for 1.0 no later tags).
type kmsCall struct {
	op    kmip14.Operation
	req   *msg.Request
	reply framework.Reply
}

func (k kmsCall) payload() *msg.Node { return k.req.Items[0].Payload }

func decodeKMS(t testing.TB, ex []mongocrypt.Exchange) []kmsCall {
	t.Helper()
	out := make([]kmsCall, 0, len(ex))
	for i, e := range ex {
		root, err := msg.Decode(e.Request)
		if err != nil {
			t.Fatalf("exchange %d: libmongocrypt's request does not decode: %v", i, err)
		}
		req, err := msg.ParseRequest(root)
		if err != nil {
			t.Fatalf("exchange %d: parse libmongocrypt's request: %v", i, err)
		}
		if len(req.Items) != 1 {
			t.Fatalf("exchange %d: %d batch items", i, len(req.Items))
		}
		op := kmip14.Operation(req.Items[0].Operation)
		// libmongocrypt's default mode speaks KMIP 1.0 (CLIENTS.md).
		if req.Header.Version != ver10 {
			t.Fatalf("exchange %d (%v): libmongocrypt sent version %v, this test expects 1.0", i, op, req.Header.Version)
		}
		rroot, err := msg.Decode(e.Response)
		if err != nil {
			t.Fatalf("exchange %d (%v): reply does not decode: %v", i, op, err)
		}
		r := framework.Reply{Root: rroot}
		if err := r.CheckHeader(req.Header.Version); err != nil {
			t.Fatalf("exchange %d (%v): W2: %v", i, op, err)
		}
		if err := r.CheckItem(0, op, nil); err != nil {
			t.Fatalf("exchange %d (%v): W3: %v", i, op, err)
		}
		if err := check10(rroot); err != nil {
			t.Fatalf("exchange %d (%v): 1.0 reply: %v", i, op, err)
		}
		out = append(out, kmsCall{op: op, req: req, reply: r})
	}
	return out
}

// describeKMS renders exchanges for a failure message.
func describeKMS(t testing.TB, ex []mongocrypt.Exchange) string {
	var b strings.Builder
	for i, e := range ex {
		fmt.Fprintf(&b, "\n  #%d", i)
		if root, err := msg.Decode(e.Request); err == nil {
			if req, err := msg.ParseRequest(root); err == nil && len(req.Items) > 0 {
				b.WriteString(" " + kmip14.Operation(req.Items[0].Operation).String())
			}
		}
		if root, err := msg.Decode(e.Response); err == nil {
			st, reason := framework.Reply{Root: root}.Status(0)
			b.WriteString(" -> " + st.String())
			if reason != 0 {
				b.WriteString(" " + reason.String())
			}
			if m := firstTag(root, kmip14.TagResultMessage); m != nil {
				b.WriteString(" " + m.Text())
			}
		} else {
			b.WriteString(" -> undecodable reply (" + err.Error() + ")")
		}
	}
	return b.String()
}

func requireOps(t testing.TB, what string, calls []kmsCall, want ...kmip14.Operation) {
	t.Helper()
	got := make([]kmip14.Operation, len(calls))
	for i, c := range calls {
		got[i] = c.op
		if st, reason := c.reply.Status(0); st != kmip14.ResultStatusSuccess {
			t.Fatalf("%s: %v failed: %v %v", what, c.op, st, reason)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: libmongocrypt sent %v, want %v", what, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: libmongocrypt sent %v, want %v", what, got, want)
		}
	}
}

// requireSecret checks a Get reply: the UID asked for, Secret Data holding exactly
// the bytes and key format Register sent (W7).
func requireSecret(t testing.TB, what string, get kmsCall, uid string, reg kmsCall) {
	t.Helper()
	if get.op != kmip14.OperationGet {
		t.Fatalf("%s: operation %v, want Get", what, get.op)
	}
	if got := firstTag(get.payload(), kmip14.TagUniqueIdentifier); got == nil || got.Text() != uid {
		t.Fatalf("%s: asked for %v, want %q", what, got, uid)
	}
	p := get.reply.Payload(0)
	requireTags(t, what+" payload", p, kmip14.TagObjectType, kmip14.TagUniqueIdentifier, kmip14.TagSecretData)
	if p.Children[0].Int != int64(kmip14.ObjectTypeSecretData) || p.Children[1].Text() != uid {
		t.Fatalf("%s: reply object type %v uid %q", what, kmip14.ObjectType(p.Children[0].Int), p.Children[1].Text())
	}
	regBlock := firstTag(firstTag(reg.payload(), kmip14.TagSecretData), kmip14.TagKeyBlock)
	gotBlock := firstTag(p.Children[2], kmip14.TagKeyBlock)
	for _, tag := range []ttlv.Tag{kmip14.TagKeyFormatType, kmip14.TagKeyMaterial} {
		want, got := firstTag(regBlock, tag), firstTag(gotBlock, tag)
		if want == nil || got == nil || !want.Equal(got) {
			t.Fatalf("%s: %v in the reply differs from what was registered", what, tag)
		}
	}
	if got, want := firstTag(p.Children[2], kmip14.TagSecretDataType), firstTag(reg.payload(), kmip14.TagSecretDataType); want == nil || got == nil || got.Int != want.Int {
		t.Fatalf("%s: Secret Data Type %v, registered %v", what, got, want)
	}
}

// requireFailedGet checks that the only exchange was a Get that the server
// refused, with reason unless it is 0.
func requireFailedGet(t testing.TB, what string, ex []mongocrypt.Exchange, reason kmip14.ResultReason) {
	t.Helper()
	if len(ex) != 1 {
		t.Fatalf("%s: %d exchanges, want one Get:%s", what, len(ex), describeKMS(t, ex))
	}
	root, err := msg.Decode(ex[0].Response)
	if err != nil {
		t.Fatalf("%s: reply does not decode: %v", what, err)
	}
	r := framework.Reply{Root: root}
	if err := r.CheckItem(0, kmip14.OperationGet, nil); err != nil {
		t.Fatalf("%s: W3: %v", what, err)
	}
	st, got := r.Status(0)
	if st != kmip14.ResultStatusOperationFailed || (reason != 0 && got != reason) {
		t.Fatalf("%s: status %v reason %v, want OperationFailed %v", what, st, got, reason)
	}
}

func firstTag(n *msg.Node, tag ttlv.Tag) *msg.Node {
	if n == nil {
		return nil
	}
	var hit *msg.Node
	framework.Walk(n, func(c *msg.Node) {
		if hit == nil && c.Tag == tag {
			hit = c
		}
	})
	return hit
}

func encryptValue(t testing.TB, c *mongocrypt.Crypt, keyDoc bsoncore.Document, value, alg string) []byte {
	t.Helper()
	ct, err := c.Encrypt(t.Context(), keyDoc, value, alg)
	if err != nil {
		t.Fatalf("encrypt (%s): %v", alg, err)
	}
	if sub, _, ok := ct.Lookup("v").BinaryOK(); !ok || sub != 6 {
		t.Fatalf("encrypt (%s) returned %v, want {v: binary subtype 6}", alg, ct)
	}
	return ct
}

func decryptValue(t testing.TB, c *mongocrypt.Crypt, keyDoc bsoncore.Document, ct []byte) string {
	t.Helper()
	pt, err := c.Decrypt(t.Context(), keyDoc, ct)
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	return pt
}

func mustKeyID(t testing.TB, keyDoc bsoncore.Document) []byte {
	t.Helper()
	id, err := mongocrypt.KeyID(keyDoc)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func writeTemp(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// buildMcdecrypt builds the separate-process helper with the same tags.
func buildMcdecrypt(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "mcdecrypt")
	res, err := framework.Run(context.Background(), 5*time.Minute, nil, "go", "build", "-tags", "e2e cse", "-o", out, "./mongocrypt/mcdecrypt")
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("build mcdecrypt: %s%s", res.Stdout, res.Stderr)
	}
	return out
}

type mcdecryptResult struct {
	Plaintext string
	Exchanges []mongocrypt.Exchange
	err       string // stderr of a failed run
}

func runMcdecrypt(t testing.TB, helper string, app *framework.Appliance, bundle, keyFile, ctFile string) mcdecryptResult {
	t.Helper()
	res, err := framework.Run(context.Background(), 2*time.Minute, nil, helper,
		"-endpoint", app.Addr, "-bundle", bundle, "-ca", app.CAPEM, "-keydoc", keyFile, "-ciphertext", ctFile)
	if err != nil {
		t.Fatal(err)
	}
	var out mcdecryptResult
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil {
		t.Fatalf("mcdecrypt printed no result (exit %d): %v\nstdout: %s\nstderr: %s", res.ExitCode, err, res.Stdout, res.Stderr)
	}
	if res.ExitCode != 0 {
		out.err = strings.TrimSpace(res.Stderr)
		if out.err == "" {
			out.err = fmt.Sprintf("exit code %d", res.ExitCode)
		}
	}
	return out
}
