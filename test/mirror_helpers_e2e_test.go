//go:build e2e

package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/test/framework"
)

// mirrorNode is one appliance of a mirrored group in a test.
type mirrorNode struct {
	*framework.Appliance
	Name       string
	MirrorAddr string // its mirror listener
	Advertise  string // what peers dial (MirrorAddr, or a proxy in front of it)
}

// mirrorOptions tunes startMirrored.
type mirrorOptions struct {
	// Env is added to every appliance's environment, e.g. HSMKMS_MIRROR_WRITE_ACK=all.
	Env []string
	// Advertise, when set, returns the address peers should dial to reach the
	// mirror listener listen of appliance i (a fault-injecting proxy).
	Advertise func(i int, listen string) string
}

// startMirrored initialises and serves n appliances with mirroring enabled,
// each with its own SoftHSM2 token and database, and pairs every two.
func startMirrored(t *testing.T, n int, opts mirrorOptions) []*mirrorNode {
	t.Helper()
	nodes := make([]*mirrorNode, n)
	for i := range nodes {
		name := string(rune('a' + i))
		listen := framework.FreeAddr(t)
		adv := listen
		if opts.Advertise != nil {
			adv = opts.Advertise(i, listen)
		}
		env := append([]string{
			"HSMKMS_MIRROR_ENABLED=true",
			"HSMKMS_MIRROR_LISTEN=" + listen,
			"HSMKMS_MIRROR_ADVERTISE=" + adv,
			"HSMKMS_MIRROR_NAME=" + name,
			"HSMKMS_MIRROR_ANTI_ENTROPY=5s",
		}, opts.Env...)
		app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{
			Dir: filepath.Join(t.TempDir(), name), Env: env,
		})
		nodes[i] = &mirrorNode{Appliance: app, Name: name, MirrorAddr: listen, Advertise: adv}
	}
	for i := range nodes {
		for j := i + 1; j < n; j++ {
			pair(t, nodes[i], nodes[j])
		}
	}
	// Every node has seen every pairing (serve rereads them every 2 s).
	for _, nd := range nodes {
		waitFor(t, 20*time.Second, nd.Name+" connected to all peers", func() bool {
			st := nd.MustCLI(t, "mirror", "status")
			return strings.Count(st, "in-sync") == n-1
		})
	}
	return nodes
}

// pair makes inviter invite and joiner join.
func pair(t *testing.T, inviter, joiner *mirrorNode) {
	t.Helper()
	inv := inviter.MustCLI(t, "mirror", "invite")
	f := filepath.Join(t.TempDir(), "invite")
	if err := os.WriteFile(f, []byte(inv), 0o600); err != nil {
		t.Fatal(err)
	}
	joiner.MustCLI(t, "mirror", "join", "--yes", "--invite-file", f)
}

// caBundle writes the CA file a failing-over client uses: every appliance's CA.
func caBundle(t *testing.T, nd *mirrorNode) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca-bundle.pem")
	if err := os.WriteFile(f, []byte(nd.MustCLI(t, "mirror", "ca-bundle")), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// digest is `mirror digest` of nd: one line per object (metadata digest and
// token-side key digest), in ID order.
func digest(t *testing.T, nd *mirrorNode) string {
	t.Helper()
	return nd.MustCLI(t, "mirror", "digest")
}

// waitConverged waits until every node reports the same digest and returns it.
func waitConverged(t *testing.T, timeout time.Duration, nodes ...*mirrorNode) string {
	t.Helper()
	var last []string
	ok := poll(timeout, func() bool {
		last = last[:0]
		for _, nd := range nodes {
			last = append(last, digest(t, nd))
		}
		for _, d := range last[1:] {
			if d != last[0] {
				return false
			}
		}
		return true
	})
	if !ok {
		for i, d := range last {
			t.Logf("%s digest:\n%s", nodes[i].Name, d)
		}
		t.Fatalf("appliances did not converge within %s", timeout)
	}
	return last[0]
}

func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// TestMirrorPairAndReplicate is the smallest mirroring check: two appliances
// pair, a key created on one is fetched with the same value on the other,
// and both converge to identical digests.
func TestMirrorPairAndReplicate(t *testing.T) {
	t.Parallel()
	nodes := startMirrored(t, 2, mirrorOptions{})
	a, b := nodes[0], nodes[1]
	ca := caBundle(t, a)
	sa := openMirrorKMIP(t, a, a.AdminPEM, ca)
	id := createAES(sa, "replicated")
	sb := openMirrorKMIP(t, b, a.AdminPEM, ca)
	waitFor(t, 10*time.Second, "the key on b", func() bool {
		st, _ := sb.call(kmip14.OperationGet, framework.UID(id)).Status(0)
		return st == kmip14.ResultStatusSuccess
	})
	waitConverged(t, 20*time.Second, a, b)
	// The inviter recorded the pairing, the receiver the applied changes, and
	// `audit verify` still accepts both chains.
	if tail := a.MustCLI(t, "audit", "tail", "-n", "100"); !strings.Contains(tail, "mirror pair") {
		t.Errorf("a's audit trail lacks the pairing:\n%s", tail)
	}
	waitFor(t, 10*time.Second, "b's audit record of the applied key", func() bool {
		tail := b.MustCLI(t, "audit", "tail", "-n", "100")
		return strings.Contains(tail, "mirror apply") && strings.Contains(tail, id)
	})
	for _, nd := range nodes {
		nd.MustCLI(t, "audit", "verify")
	}
}

// openMirrorKMIP opens a KMIP session to nd trusting caFile (a CA bundle).
func openMirrorKMIP(t *testing.T, nd *mirrorNode, bundle, caFile string) *kmipSession {
	t.Helper()
	c, err := framework.Dial(t.Context(), nd.Addr, framework.ReadFile(t, bundle), framework.ReadFile(t, caFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &kmipSession{t: t, c: c, h: framework.Header{Version: ver12}}
}
