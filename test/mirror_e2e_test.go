//go:build e2e

package test

// Mirroring seen from outside: clients of any appliance see one service,
// concurrent conflicting changes converge by the lifecycle and last-writer
// rules, write_ack holds Create until peers have the key (and leaves no usable
// key when they cannot), strangers are refused, and no key bytes cross the
// wire or reach a peer's disk in the clear.

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
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

// TestMirrorClientsSeeOneService replays mongod's and Percona's KMIP
// sequences with every step on a different appliance of a full mesh of three.
func TestMirrorClientsSeeOneService(t *testing.T) {
	t.Parallel()
	nodes := startMirrored(t, 3, mirrorOptions{})
	a, b, c := nodes[0], nodes[1], nodes[2]
	ca := caBundle(t, a)

	for _, v := range []msg.Version{ver12, ver10} {
		h := framework.Header{Version: v}
		open := func(nd *mirrorNode) *kmipSession {
			s := openMirrorKMIP(t, nd, a.AdminPEM, ca)
			s.h = h
			return s
		}
		sa, sb, sc := open(a), open(b), open(c)

		// First start on A: Create, Get, Activate.
		p := sa.ok(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
			enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
			intAttr("Cryptographic Length", 256),
			intAttr("Cryptographic Usage Mask", maskEncryptDecrypt)))
		uid := p.Child(kmip14.TagUniqueIdentifier).Text()
		key := getSymKey(t, sa, uid, 256)
		uidOf(t, "Activate payload", sa.ok(kmip14.OperationActivate, framework.UID(uid)))

		// Restart against B: the same key bytes.
		waitFor(t, 10*time.Second, "the key on b", func() bool { return getOK(sb, uid) })
		if got := getSymKey(t, sb, uid, 256); !bytes.Equal(got, key) {
			t.Fatalf("v%v: Get on b returned other key bytes than on a", v)
		}
		// State polling against C, a new connection each time, until the
		// Activate made on A shows.
		waitFor(t, 10*time.Second, "Active on c", func() bool {
			poll := open(c)
			defer poll.c.Close()
			st, ok := tryState(poll, uid)
			return ok && st == kmip14.StateActive
		})
		if st := keyState(t, sc, uid); st != kmip14.StateActive {
			t.Fatalf("v%v: state on c %v", v, st)
		}

		if v == ver12 {
			// Encrypt on A, Decrypt on B, and the other way round.
			for _, pair := range [][2]*kmipSession{{sa, sb}, {sb, sa}, {sc, sa}} {
				plain := []byte("audit log record " + v.String())
				e := pair[0].ok(kmip14.OperationEncrypt, framework.UID(uid), msg.Bytes(kmip14.TagData, plain))
				ct, iv := e.Child(kmip14.TagData).Bytes, e.Child(kmip14.TagIVCounterNonce).Bytes
				if got := cbcDecrypt(t, key, iv, ct); !bytes.Equal(got, plain) {
					t.Fatal("Encrypt on one appliance is not AES-CBC under the key Get returned")
				}
				d := pair[1].ok(kmip14.OperationDecrypt, framework.UID(uid), msg.Bytes(kmip14.TagData, ct), msg.Bytes(kmip14.TagIVCounterNonce, iv))
				if !bytes.Equal(d.Child(kmip14.TagData).Bytes, plain) {
					t.Fatal("Decrypt on another appliance did not return the plaintext")
				}
			}
		}

		// Revoke on C, Destroy on B once B sees the revocation; A sees
		// Destroyed and no appliance hands out the key any more.
		sc.ok(kmip14.OperationRevoke, framework.UID(uid), msg.Struct(kmip14.TagRevocationReason,
			msg.Enum(kmip14.TagRevocationReasonCode, uint32(kmip14.RevocationReasonCodeCessationOfOperation))))
		waitState(t, sb, uid, kmip14.StateDeactivated)
		sb.ok(kmip14.OperationDestroy, framework.UID(uid))
		waitState(t, sa, uid, kmip14.StateDestroyed)
		waitState(t, sc, uid, kmip14.StateDestroyed)
		for i, s := range []*kmipSession{sa, sb, sc} {
			if getOK(s, uid) {
				t.Fatalf("v%v: Get of the destroyed key succeeded on %s", v, nodes[i].Name)
			}
		}
	}

	// Percona (libkmip, 1.0): Register and Activate on B, start up against C.
	pa := openMirrorKMIP(t, b, a.AdminPEM, ca)
	pa.h = perconaHeader(0)
	secret := make([]byte, 32)
	rand.Read(secret)
	uid := uidOf(t, "Register payload", pa.ok(kmip14.OperationRegister, objType(kmip14.ObjectTypeSymmetricKey),
		framework.Template(intAttr("Cryptographic Usage Mask", maskEncryptDecrypt)),
		symmetricKey(secret, kmip14.CryptographicAlgorithmAES, 256)))
	uidOf(t, "Activate payload", pa.ok(kmip14.OperationActivate, framework.UID(uid)))
	for _, nd := range []*mirrorNode{c, a} {
		s := openMirrorKMIP(t, nd, a.AdminPEM, ca)
		s.h = perconaHeader(0)
		waitState(t, s, uid, kmip14.StateActive)
		if got := getSymKey(t, s, uid, 256); !bytes.Equal(got, secret) {
			t.Fatalf("Percona's Get on %s returned other bytes than registered on b", nd.Name)
		}
	}
	waitConverged(t, 20*time.Second, a, b, c)
}

// TestMirrorConflictsConverge makes conflicting changes to the same objects
// on two appliances, first cut off from each other (every change truly
// concurrent) and then racing live, and checks that both end with identical
// objects that obey the lifecycle: state only moves forward and destroyed
// objects keep no key anywhere.
func TestMirrorConflictsConverge(t *testing.T) {
	t.Parallel()
	proxies := make([]*tcpProxy, 2)
	nodes := startMirrored(t, 2, mirrorOptions{Advertise: func(i int, listen string) string {
		proxies[i] = newTCPProxy(t, listen)
		return proxies[i].Addr()
	}})
	a, b := nodes[0], nodes[1]
	ca := caBundle(t, a)
	sa, sb := openMirrorKMIP(t, a, a.AdminPEM, ca), openMirrorKMIP(t, b, a.AdminPEM, ca)

	const per = 4
	mk := func(group string) []string {
		ids := make([]string, per)
		for i := range ids {
			ids[i] = createAES(sa, fmt.Sprintf("%s-%d", group, i))
		}
		return ids
	}
	attrIDs, grantIDs, actRev, compDes := mk("attrs"), mk("grants"), mk("act-rev"), mk("comp-des")
	liveAttr, liveLife := mk("live-attrs"), mk("live-life")
	waitConverged(t, 20*time.Second, a, b)

	// Phase 1, partitioned: neither appliance sees the other's changes.
	for _, p := range proxies {
		p.Pause()
	}
	compromise := func(id string) []*msg.Node {
		return []*msg.Node{framework.UID(id), msg.Struct(kmip14.TagRevocationReason,
			msg.Enum(kmip14.TagRevocationReasonCode, uint32(kmip14.RevocationReasonCodeKeyCompromise))),
			msg.Date(kmip14.TagCompromiseOccurrenceDate, time.Now().Add(-time.Hour))}
	}
	cessation := func(id string) []*msg.Node {
		return []*msg.Node{framework.UID(id), msg.Struct(kmip14.TagRevocationReason,
			msg.Enum(kmip14.TagRevocationReasonCode, uint32(kmip14.RevocationReasonCodeCessationOfOperation)))}
	}
	contact := func(v string) *msg.Node { return framework.Attr("Contact Information", msg.Text(0, v)) }
	// Grants through the CLI on A, a separate process, meanwhile.
	var wg sync.WaitGroup
	var grantErrs []string
	wg.Go(func() {
		for _, id := range append(slices.Clone(grantIDs), attrIDs[0]) {
			if res := a.CLI(t, "keys", "grant", id, "mongod-a"); res.ExitCode != 0 {
				grantErrs = append(grantErrs, res.Stderr)
			}
		}
	})
	for i, id := range attrIDs {
		sa.ok(kmip14.OperationModifyAttribute, framework.UID(id), nameAttr(fmt.Sprintf("renamed-on-a-%d", i)))
		sa.ok(kmip14.OperationAddAttribute, framework.UID(id), contact("ops-a@example.com"))
		sb.ok(kmip14.OperationModifyAttribute, framework.UID(id), nameAttr(fmt.Sprintf("renamed-on-b-%d", i)))
		sb.ok(kmip14.OperationAddAttribute, framework.UID(id), contact("ops-b@example.com"))
		if i%2 == 0 {
			sb.ok(kmip14.OperationDeleteAttribute, framework.UID(id), msg.Text(kmip14.TagAttributeName, "Contact Information"))
		}
		// Different attributes changed on each side both survive the merge.
		sa.ok(kmip14.OperationAddAttribute, framework.UID(id), framework.Attr("x-from-a", msg.Text(0, "a")))
		sb.ok(kmip14.OperationAddAttribute, framework.UID(id), framework.Attr("x-from-b", msg.Text(0, "b")))
	}
	for _, id := range actRev {
		sa.ok(kmip14.OperationActivate, framework.UID(id))
		sb.ok(kmip14.OperationRevoke, cessation(id)...)
	}
	for _, id := range compDes {
		sa.ok(kmip14.OperationRevoke, compromise(id)...)
		sb.ok(kmip14.OperationDestroy, framework.UID(id))
	}
	wg.Wait()
	if len(grantErrs) > 0 {
		t.Fatalf("keys grant failed: %v", grantErrs)
	}
	// The partition holds: each side sees only its own changes.
	for _, id := range compDes {
		if st := keyState(t, sa, id); st != kmip14.StateCompromised {
			t.Fatalf("partitioned a: %s is %v, want Compromised", id, st)
		}
	}
	for _, id := range actRev {
		if st := keyState(t, sa, id); st != kmip14.StateActive {
			t.Fatalf("partitioned a: %s is %v, want Active", id, st)
		}
	}
	for _, p := range proxies {
		p.Resume()
	}

	// Phase 2, live: the same kinds of conflicts race on both appliances.
	type outcome struct{ compromised, destroyed map[string]bool }
	var mu sync.Mutex
	out := outcome{map[string]bool{}, map[string]bool{}}
	race := func(nd *mirrorNode, mine int) {
		defer wg.Done()
		cl := dialRaw(t, nd, a.AdminPEM, ca)
		defer cl.Close()
		for round := range 3 {
			for i, id := range liveAttr {
				rawCall(cl, kmip14.OperationModifyAttribute, framework.UID(id), nameAttr(fmt.Sprintf("live-%s-%d-%d", nd.Name, i, round)))
				rawCall(cl, kmip14.OperationAddAttribute, framework.UID(id), contact(nd.Name+"@example.com"))
				rawCall(cl, kmip14.OperationDeleteAttribute, framework.UID(id), msg.Text(kmip14.TagAttributeName, "Contact Information"))
				rawCall(cl, kmip14.OperationAddAttribute, framework.UID(id), framework.Attr("x-writer", msg.Text(0, nd.Name)))
			}
		}
		for i, id := range liveLife {
			switch {
			case i < per/2 && mine == 0:
				rawCall(cl, kmip14.OperationActivate, framework.UID(id))
			case i < per/2:
				rawCall(cl, kmip14.OperationRevoke, cessation(id)...)
			case mine == 0:
				if rawCall(cl, kmip14.OperationRevoke, compromise(id)...) == kmip14.ResultStatusSuccess {
					mu.Lock()
					out.compromised[id] = true
					mu.Unlock()
				}
			default:
				if rawCall(cl, kmip14.OperationDestroy, framework.UID(id)) == kmip14.ResultStatusSuccess {
					mu.Lock()
					out.destroyed[id] = true
					mu.Unlock()
				}
			}
		}
	}
	wg.Add(2)
	go race(a, 0)
	go race(b, 1)
	wg.Wait()

	final := waitConverged(t, 30*time.Second, a, b)
	keyDigest := map[string]string{}
	for l := range strings.SplitSeq(strings.TrimSpace(final), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("digest line %q", l)
		}
		keyDigest[f[0]] = f[2]
	}
	if len(keyDigest) != 6*per {
		t.Fatalf("%d objects after convergence, want %d", len(keyDigest), 6*per)
	}

	want := map[string]kmip14.State{}
	for _, id := range actRev {
		want[id] = kmip14.StateDeactivated // Active < Deactivated: the revocation wins
	}
	for _, id := range compDes {
		want[id] = kmip14.StateDestroyedCompromised
	}
	for i, id := range liveLife {
		switch {
		case i < per/2:
			want[id] = kmip14.StateDeactivated
		case out.compromised[id]:
			want[id] = kmip14.StateDestroyedCompromised
		default:
			want[id] = kmip14.StateDestroyed
		}
	}
	for _, id := range append(slices.Clone(attrIDs), append(grantIDs, liveAttr...)...) {
		want[id] = kmip14.StatePreActive
	}
	for _, s := range []*kmipSession{sa, sb} {
		for id, w := range want {
			if st := keyState(t, s, id); st != w {
				t.Errorf("%s: state %v, want %v", id, st, w)
			}
			destroyed := w == kmip14.StateDestroyed || w == kmip14.StateDestroyedCompromised
			if destroyed != (keyDigest[id] == "-") {
				t.Errorf("%s is %v but its key digest is %q", id, w, keyDigest[id])
			}
			if destroyed && getOK(s, id) {
				t.Errorf("%s is %v but Get returned its key", id, w)
			}
		}
	}
	for i, id := range attrIDs {
		na, nb := attrText(t, sa, id, "Name"), attrText(t, sb, id, "Name")
		if na != nb || (na != fmt.Sprintf("renamed-on-a-%d", i) && na != fmt.Sprintf("renamed-on-b-%d", i)) {
			t.Errorf("%s: Name %q on a, %q on b: want one writer's name on both", id, na, nb)
		}
		for _, sess := range []*kmipSession{sa, sb} {
			if xa, xb := attrText(t, sess, id, "x-from-a"), attrText(t, sess, id, "x-from-b"); xa != "a" || xb != "b" {
				t.Errorf("%s: x-from-a %q, x-from-b %q: want both concurrent additions kept", id, xa, xb)
			}
		}
	}
	// The grants made on A alone (nobody else touched those objects) reached B.
	for _, id := range grantIDs {
		var show struct{ Grants []string }
		if err := json.Unmarshal([]byte(b.MustCLI(t, "keys", "show", "--json", id)), &show); err != nil || !slices.Contains(show.Grants, "mongod-a") {
			t.Errorf("%s: grants on b %v (%v), want mongod-a granted on a", id, show.Grants, err)
		}
	}
	t.Logf("live race: %d of %d compromises won against the Destroy", len(out.compromised), per/2)
}

// TestMirrorWriteAck: with write_ack=all a new key is on every peer when
// Create answers; with a peer down Create fails clearly and the half-made
// key is destroyed everywhere; write_ack=one is content with one peer.
func TestMirrorWriteAck(t *testing.T) {
	t.Parallel()
	nodes := startMirrored(t, 3, mirrorOptions{Env: []string{"HSMKMS_MIRROR_WRITE_ACK=all", "HSMKMS_MIRROR_ACK_TIMEOUT=2s"}})
	a, b, c := nodes[0], nodes[1], nodes[2]
	ca := caBundle(t, a)
	sa, sb, sc := openMirrorKMIP(t, a, a.AdminPEM, ca), openMirrorKMIP(t, b, a.AdminPEM, ca), openMirrorKMIP(t, c, a.AdminPEM, ca)

	// All up: the key is on both peers the moment Create and Register answer.
	for i := range 3 {
		id := createAES(sa, fmt.Sprintf("acked-%d", i))
		for _, s := range []*kmipSession{sb, sc} {
			if !getOK(s, id) {
				t.Fatalf("write_ack=all: Create %d answered but the key is not on a peer yet", i)
			}
		}
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	rid := registerAES(sb, "acked-registered", secret)
	for _, s := range []*kmipSession{sa, sc} {
		if got := getSymKey(t, s, rid, 256); !bytes.Equal(got, secret) {
			t.Fatal("write_ack=all: Register answered but a peer does not hold the key")
		}
	}

	// C down: Create on A cannot be acknowledged by all.
	if _, err := c.Server.Stop(framework.StopTimeout); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := sa.call(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
		enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
		intAttr("Cryptographic Length", 256), intAttr("Cryptographic Usage Mask", maskEncryptDecrypt), nameAttr("unacked")))
	st, reason := r.Status(0)
	message := r.Items()[0].Child(kmip14.TagResultMessage).Text()
	if st != kmip14.ResultStatusOperationFailed || reason != kmip14.ResultReasonGeneralFailure ||
		!strings.Contains(message, "mirror") || !strings.Contains(message, "acknowledged") {
		t.Fatalf("Create with a peer down: %v %v %q; want General Failure naming the mirror acknowledgement", st, reason, message)
	}
	if took := time.Since(start); took < 2*time.Second || took > 10*time.Second {
		t.Errorf("the failed Create took %v; want about the 2s ack timeout", took)
	}
	t.Logf("Create with a peer down: %q", message)
	// The half-made key is there only as a destroyed object, on A and on B
	// (which had acknowledged it).
	loc := sa.ok(kmip14.OperationLocate, nameAttr("unacked"), enumAttr("State", uint32(kmip14.StateDestroyed))).All(kmip14.TagUniqueIdentifier)
	if len(loc) != 1 {
		t.Fatalf("Locate of the unacknowledged key as Destroyed found %d objects", len(loc))
	}
	bad := loc[0].Text()
	if live := sa.ok(kmip14.OperationLocate, nameAttr("unacked")).All(kmip14.TagUniqueIdentifier); len(live) != 0 {
		t.Fatalf("the unacknowledged key is locatable as a live object on a: %d", len(live))
	}
	for _, s := range []*kmipSession{sa, sb} {
		waitState(t, s, bad, kmip14.StateDestroyed)
		if getOK(s, bad) {
			t.Fatal("the unacknowledged key is usable")
		}
	}

	// write_ack=one: B is enough while C is still down.
	a.Server.Env = append(a.Server.Env, "HSMKMS_MIRROR_WRITE_ACK=one")
	a.Restart(t)
	waitFor(t, 20*time.Second, "a in sync with b again", func() bool {
		return peerState(t, a, "b") == "in-sync"
	})
	sa = openMirrorKMIP(t, a, a.AdminPEM, ca)
	one := createAES(sa, "acked-by-one")
	if !getOK(sb, one) {
		t.Fatal("write_ack=one: Create answered but the key is not on the only peer up")
	}

	// C back: it catches up, holds the acknowledged keys and never the
	// unacknowledged one.
	if err := c.Server.Start(); err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitForPort(c.Addr, c.Server, framework.StartTimeout); err != nil {
		t.Fatal(err)
	}
	d := waitConverged(t, 30*time.Second, a, b, c)
	if !strings.Contains(d, bad+" ") || !strings.Contains(d, one+" ") {
		t.Fatalf("after convergence the digest lacks the unacknowledged or the write_ack=one key:\n%s", d)
	}
	for l := range strings.SplitSeq(d, "\n") {
		if strings.HasPrefix(l, bad+" ") && !strings.HasSuffix(l, " -") {
			t.Fatalf("the unacknowledged key has material somewhere: %s", l)
		}
	}
	sc = openMirrorKMIP(t, c, a.AdminPEM, ca)
	if st := keyState(t, sc, bad); st != kmip14.StateDestroyed {
		t.Fatalf("the unacknowledged key is %v on c", st)
	}
	if getOK(sc, bad) {
		t.Fatal("the unacknowledged key is usable on c")
	}
	if !getOK(sc, one) {
		t.Fatal("the write_ack=one key did not reach c")
	}
}

// TestMirrorRefusesStrangers: the mirror listener serves paired appliances
// only, an invitation works once and not after it expired, and unpairing
// stops replication.
func TestMirrorRefusesStrangers(t *testing.T) {
	t.Parallel()
	nodes := startMirrored(t, 2, mirrorOptions{})
	a, b := nodes[0], nodes[1]
	c := startMirrored(t, 1, mirrorOptions{})[0]
	c.Name = "c"

	strangers := map[string]tls.Certificate{
		"self-signed certificate":              selfSigned(t),
		"b's admin bundle":                     loadBundle(t, b.AdminPEM),
		"an unpaired appliance's admin bundle": loadBundle(t, c.AdminPEM),
	}
	aID, bID := a.status(t).ID, b.status(t).ID
	for what, cert := range strangers {
		// Each claims to be B, which A is paired with.
		reply, err := pullAsStranger(a.MirrorAddr, cert, bID)
		if err == nil && !strings.Contains(reply, `"t":"error"`) {
			t.Fatalf("%s: the mirror listener answered %s", what, reply)
		}
		t.Logf("%s: %q %v", what, reply, err)
	}
	if _, err := pullAsStranger(a.MirrorAddr, tls.Certificate{}, "x"); err == nil {
		t.Fatal("a client without a certificate got a reply from the mirror listener")
	}
	waitFor(t, 5*time.Second, "the refusal in a's log", func() bool {
		return strings.Count(a.Server.Logs(), "not a paired appliance") >= len(strangers)
	})

	// An invitation is good once.
	inv := filepath.Join(t.TempDir(), "invite")
	if err := os.WriteFile(inv, []byte(a.MustCLI(t, "mirror", "invite")), 0o600); err != nil {
		t.Fatal(err)
	}
	c.MustCLI(t, "mirror", "join", "--yes", "--invite-file", inv)
	res := b.CLI(t, "mirror", "join", "--yes", "--invite-file", inv)
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "unknown, expired or used") {
		t.Fatalf("a second join with a used invitation: exit %d\n%s", res.ExitCode, res.Stderr)
	}
	// And not after it expired.
	expired := filepath.Join(t.TempDir(), "expired")
	if err := os.WriteFile(expired, []byte(a.MustCLI(t, "mirror", "invite", "--ttl", "1ms")), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // expiry is stored in whole seconds
	res = b.CLI(t, "mirror", "join", "--yes", "--invite-file", expired)
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "unknown, expired or used") {
		t.Fatalf("a join with an expired invitation: exit %d\n%s", res.ExitCode, res.Stderr)
	}
	if !strings.Contains(a.Server.Logs(), "pairing refused") {
		t.Fatal("a's log does not record the refused pairings")
	}

	// Unpair A and B on both sides: A's new keys reach C, never B.
	a.MustCLI(t, "mirror", "unpair", bID)
	b.MustCLI(t, "mirror", "unpair", aID)
	for _, nd := range []*mirrorNode{a, b} {
		if err := nd.Server.WaitForLog("mirror: peer removed", 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if ps := b.status(t).Peers; len(ps) != 0 {
		t.Fatalf("b still lists peers after unpairing: %+v", ps)
	}
	if ps := a.status(t).Peers; len(ps) != 1 || ps[0].ID != c.status(t).ID {
		t.Fatalf("a lists peers %+v after unpairing b, want only c", ps)
	}
	ca := caBundle(t, a)
	id := createAES(openMirrorKMIP(t, a, a.AdminPEM, ca), "after-unpair")
	sc := openMirrorKMIP(t, c, a.AdminPEM, ca)
	waitFor(t, 10*time.Second, "the new key on c", func() bool { return getOK(sc, id) })
	sb := openMirrorKMIP(t, b, b.AdminPEM, b.CAPEM)
	time.Sleep(3 * time.Second) // a stream or anti-entropy round would have delivered it by now
	sb.fail(kmip14.OperationGet, kmip14.ResultReasonItemNotFound, framework.UID(id))
}

// TestMirrorNoPlaintext registers known keys on both appliances and looks for
// them in everything that crossed the mirror links and in every file of the
// appliance directories.
func TestMirrorNoPlaintext(t *testing.T) {
	t.Parallel()
	proxies := make([]*tcpProxy, 2)
	nodes := startMirrored(t, 2, mirrorOptions{
		Env: []string{"HSMKMS_LOG_LEVEL=debug"},
		Advertise: func(i int, listen string) string {
			proxies[i] = newTCPProxy(t, listen)
			return proxies[i].Addr()
		}})
	a, b := nodes[0], nodes[1]
	ca := caBundle(t, a)
	var secrets []secret
	for i, nd := range nodes {
		s := openMirrorKMIP(t, nd, a.AdminPEM, ca)
		for j := range 3 {
			k := make([]byte, 32)
			rand.Read(k)
			registerAES(s, fmt.Sprintf("known-%d-%d", i, j), k)
			secrets = append(secrets, secret{fmt.Sprintf("key %d registered on %s", j, nd.Name), k})
		}
		id := createAES(s, "created-on-"+nd.Name)
		secrets = append(secrets, secret{"key created on " + nd.Name, getSymKey(t, s, id, 256)})
	}
	waitConverged(t, 20*time.Second, a, b)
	// The keys are usable on the other appliance: they did cross.
	sb := openMirrorKMIP(t, b, a.AdminPEM, ca)
	loc := sb.ok(kmip14.OperationLocate, nameAttr("known-0-0")).All(kmip14.TagUniqueIdentifier)
	if len(loc) != 1 || !bytes.Equal(getSymKey(t, sb, loc[0].Text(), 256), secrets[0].b) {
		t.Fatal("a's registered key is not on b with its bytes")
	}

	var haystacks []hay
	for i, p := range proxies {
		traffic := p.Captured()
		if len(traffic) < 4096 {
			t.Fatalf("only %d bytes captured in front of %s's mirror listener", len(traffic), nodes[i].Name)
		}
		haystacks = append(haystacks, hay{"mirror traffic to " + nodes[i].Name, traffic})
	}
	for _, nd := range nodes {
		haystacks = append(haystacks, readTree(t, nd.Dir)...)
		haystacks = append(haystacks, hay{nd.Name + "'s server logs", []byte(nd.Server.Logs())})
	}
	pin := bytes.TrimSpace(framework.ReadFile(t, filepath.Join(b.Dir, "softhsm", "user.pin")))
	if !slices.ContainsFunc(haystacks, func(h hay) bool { return bytes.Contains(h.data, pin) }) {
		t.Fatal("self-check: b's PIN was found nowhere; the search reads nothing")
	}
	for _, s := range secrets {
		for form, needle := range s.forms() {
			for _, h := range haystacks {
				if bytes.Contains(h.data, needle) {
					t.Errorf("%s (%s) found in %s", s.name, form, h.name)
				}
			}
		}
	}
	t.Logf("searched %d keys in %d files, logs and %d+%d bytes of mirror traffic",
		len(secrets), len(haystacks)-4, len(proxies[0].Captured()), len(proxies[1].Captured()))
}

// --- helpers ---

// getOK reports whether Get of id succeeds.
func getOK(s *kmipSession, id string) bool {
	st, _ := s.call(kmip14.OperationGet, framework.UID(id)).Status(0)
	return st == kmip14.ResultStatusSuccess
}

// tryState is the State of id, or false when Get Attributes fails.
func tryState(s *kmipSession, id string) (kmip14.State, bool) {
	r := s.call(kmip14.OperationGetAttributes, framework.UID(id), msg.Text(kmip14.TagAttributeName, "State"))
	if st, _ := r.Status(0); st != kmip14.ResultStatusSuccess {
		return 0, false
	}
	v := r.Payload(0).Child(kmip14.TagAttribute).Child(kmip14.TagAttributeValue)
	return kmip14.State(v.Int), v != nil
}

func waitState(t *testing.T, s *kmipSession, id string, want kmip14.State) {
	t.Helper()
	var last kmip14.State
	if !poll(10*time.Second, func() bool {
		st, ok := tryState(s, id)
		last = st
		return ok && st == want
	}) {
		t.Fatalf("%s: state %v after 10s, want %v", id, last, want)
	}
}

// attrText is the text of attribute name of id (the Name Value for Name).
func attrText(t *testing.T, s *kmipSession, id, name string) string {
	t.Helper()
	p := s.ok(kmip14.OperationGetAttributes, framework.UID(id), msg.Text(kmip14.TagAttributeName, name))
	v := p.Child(kmip14.TagAttribute).Child(kmip14.TagAttributeValue)
	if nv := v.Child(kmip14.TagNameValue); nv != nil {
		return nv.Text()
	}
	return v.Text()
}

// dialRaw opens a KMIP 1.2 connection for use off the test goroutine.
func dialRaw(t *testing.T, nd *mirrorNode, bundle, caFile string) *framework.Client {
	t.Helper()
	c, err := framework.Dial(t.Context(), nd.Addr, framework.ReadFile(t, bundle), framework.ReadFile(t, caFile))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawCall sends one operation and returns its status (Operation Failed on a
// transport error: racing goroutines may not fail the test themselves).
func rawCall(c *framework.Client, op kmip14.Operation, payload ...*msg.Node) kmip14.ResultStatus {
	root, err := c.RoundTrip(framework.Request(framework.Header{Version: ver12}, framework.Item(op, nil, payload...)))
	if err != nil {
		return kmip14.ResultStatusOperationFailed
	}
	st, _ := framework.Reply{Root: root}.Status(0)
	return st
}

// mirrorStatus is `mirror status --json`.
type mirrorStatus struct {
	ID    string `json:"id"`
	Peers []struct {
		ID        string `json:"id"`
		Name      string `json:"name"`
		State     string `json:"state"`
		LastError string `json:"last_error"`
	} `json:"peers"`
}

func (nd *mirrorNode) status(t *testing.T) mirrorStatus {
	t.Helper()
	var st mirrorStatus
	if err := json.Unmarshal([]byte(nd.MustCLI(t, "mirror", "status", "--json")), &st); err != nil {
		t.Fatalf("mirror status --json of %s: %v", nd.Name, err)
	}
	return st
}

// peerState is the state nd reports for its peer named name ("" if none).
func peerState(t *testing.T, nd *mirrorNode, name string) string {
	t.Helper()
	for _, p := range nd.status(t).Peers {
		if p.Name == name {
			return p.State
		}
	}
	return ""
}

// pullAsStranger connects to a mirror listener with cert, asks for the
// journal as appliance from and returns the first frame of the answer.
func pullAsStranger(addr string, cert tls.Certificate, from string) (string, error) {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if cert.Certificate != nil {
		cfg.Certificates = []tls.Certificate{cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	body, _ := json.Marshal(map[string]any{"t": "pull", "from": from})
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	if _, err := c.Write(append(frame, body...)); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > 1<<20 {
		return "", fmt.Errorf("frame of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stranger"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// loadBundle reads a PEM file holding a certificate and its key.
func loadBundle(t *testing.T, path string) tls.Certificate {
	t.Helper()
	b := framework.ReadFile(t, path)
	c, err := tls.X509KeyPair(b, b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tcpProxy forwards connections to target, records every byte both ways,
// and can cut the link (Pause) to partition appliances.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	paused bool
	conns  map[net.Conn]bool
	rec    []*bytes.Buffer // one per connection and direction
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		ln.Close()
		p.Pause()
	})
	go p.serve()
	return p
}

func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(in)
	}
}

func (p *tcpProxy) forward(in net.Conn) {
	p.mu.Lock()
	paused := p.paused
	p.mu.Unlock()
	if paused {
		in.Close()
		return
	}
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	p.mu.Lock()
	p.conns[in], p.conns[out] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		rec := &bytes.Buffer{}
		p.mu.Lock()
		p.rec = append(p.rec, rec)
		p.mu.Unlock()
		io.Copy(io.MultiWriter(dst, recorder{p, rec}), src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go cp(out, in)
	go cp(in, out)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, in)
	delete(p.conns, out)
	p.mu.Unlock()
}

// Pause closes every forwarded connection and refuses new ones.
func (p *tcpProxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for c := range p.conns {
		c.Close()
	}
}

// Resume forwards new connections again.
func (p *tcpProxy) Resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

// Captured returns a copy of every byte forwarded so far, each connection's
// direction in one piece.
func (p *tcpProxy) Captured() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []byte
	for _, b := range p.rec {
		out = append(out, b.Bytes()...)
	}
	return out
}

// recorder appends to buf under the proxy's lock.
type recorder struct {
	p   *tcpProxy
	buf *bytes.Buffer
}

func (r recorder) Write(b []byte) (int, error) {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	return r.buf.Write(b)
}
