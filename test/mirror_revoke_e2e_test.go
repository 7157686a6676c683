//go:build e2e

package test

import (
	"strings"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/test/framework"
)

// served reports whether a client with bundle gets a Discover Versions answer
// from nd (caFile names the server CAs it trusts).
func served(t *testing.T, nd *mirrorNode, bundle, caFile string) bool {
	t.Helper()
	c, err := framework.Dial(t.Context(), nd.Addr, framework.ReadFile(t, bundle), framework.ReadFile(t, caFile))
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.RoundTripRaw(framework.Request(framework.Header{Version: ver12}, framework.Item(kmip14.OperationDiscoverVersions, nil)).Append(nil))
	return err == nil
}

// TestMirrorSharesRevocations: a client certificate A issued is served by B
// (peers trust each other's clients); once A revokes it, B refuses it too
// within seconds, records why, and a certificate not revoked still works.
func TestMirrorSharesRevocations(t *testing.T) {
	t.Parallel()
	nodes := startMirrored(t, 2, mirrorOptions{})
	a, b := nodes[0], nodes[1]
	ca := caBundle(t, a)
	bad := a.IssueClient(t, "leaked", "client")
	good := a.IssueClient(t, "kept", "client")
	for _, nd := range nodes {
		if !served(t, nd, bad, ca) || !served(t, nd, good, ca) {
			t.Fatalf("%s does not serve A's clients before the revocation", nd.Name)
		}
	}
	a.MustCLI(t, "certs", "revoke", "--name", "leaked")
	start := time.Now()
	waitFor(t, 15*time.Second, "b to refuse the certificate A revoked", func() bool { return !served(t, b, bad, ca) })
	t.Logf("revocation reached b in %s", time.Since(start).Round(10*time.Millisecond))
	if served(t, a, bad, ca) {
		t.Error("a still serves the certificate it revoked")
	}
	if !served(t, b, good, ca) {
		t.Error("b refuses a certificate nobody revoked")
	}
	if tail := b.MustCLI(t, "audit", "tail", "-n", "100"); !strings.Contains(tail, "mirror certificate revocation") {
		t.Errorf("b's audit trail does not record the revocation it received:\n%s", tail)
	}
}
