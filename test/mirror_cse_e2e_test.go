//go:build e2e && cse

package test

import (
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/test/framework"
	"github.com/hsmkms/hsmkms/test/mongocrypt"
)

// TestMirrorMongocrypt has libmongocrypt create a data key through appliance
// A (Register, Activate, Get of its KMIP secret) and then, as another
// application instance would, decrypt with it through appliance B alone.
func TestMirrorMongocrypt(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	nodes := startMirrored(t, 2, mirrorOptions{})
	a, b := nodes[0], nodes[1]
	bundle := a.IssueClient(t, "mongocrypt-app", "client")
	tlsCfg, err := framework.ClientTLS(framework.ReadFile(t, bundle), framework.ReadFile(t, caBundle(t, a)))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := mongocrypt.New(mongocrypt.Config{Endpoint: a.Addr, TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	keyDoc, err := ca.CreateDataKey(ctx, "")
	if err != nil {
		t.Fatalf("create data key through a: %v\nexchanges: %s", err, describeKMS(t, ca.Exchanges()))
	}
	const value = "hsmkms mirrored libmongocrypt: 987-65-4321"
	ct := encryptValue(t, ca, keyDoc, value, mongocrypt.Random)
	// The KMIP secret has reached B once its state is visible there.
	uid, _ := keyDoc.Lookup("masterKey", "keyId").StringValueOK()
	sb := openMirrorKMIP(t, b, a.AdminPEM, caBundle(t, a))
	waitFor(t, 10*time.Second, "the KMIP secret on b", func() bool { return getOK(sb, uid) })

	cb, err := mongocrypt.New(mongocrypt.Config{Endpoint: b.Addr, TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if got := decryptValue(t, cb, keyDoc, ct); got != value {
		t.Fatalf("decrypt through b gave %q, want %q", got, value)
	}
	ex := cb.Exchanges()
	calls := decodeKMS(t, ex)
	requireOps(t, "decrypt through b", calls, kmip14.OperationGet)
	if ex[0].Endpoint != b.Addr {
		t.Fatalf("libmongocrypt asked %s, want b at %s", ex[0].Endpoint, b.Addr)
	}
	requireSecret(t, "Get on b", calls[0], uid, decodeKMS(t, ca.Exchanges())[0])
}
