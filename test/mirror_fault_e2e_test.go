//go:build e2e

package test

// Mirroring under faults: a peer killed mid-stream, a network partition while
// both sides write, a peer whose store fills up and a peer whose token fails.
// Every case ends with the appliances converged and no acknowledged key lost
// or duplicated.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"github.com/hsmkms/hsmkms/softhsm"
	"github.com/hsmkms/hsmkms/test/framework"
)

// faultProxy forwards TCP connections to target until partitioned: then it
// cuts every live connection and blackholes new ones (accepts and holds them
// without forwarding, as a dropped route does) until healed.
type faultProxy struct {
	ln     net.Listener
	Addr   string
	target string

	mu          sync.Mutex
	down        bool
	conns       map[net.Conn]struct{} // forwarded both ways, or held while down
	forwarded   int                   // connections forwarded to target
	blackholed  int                   // connections held during partitions
	healedConns int                   // forwarded since the last heal
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, Addr: ln.Addr().String(), target: target, conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
	})
	return p
}

func (p *faultProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[c] = struct{}{}
		if p.down {
			p.blackholed++
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		go p.forward(c)
	}
}

func (p *faultProxy) forward(c net.Conn) {
	d, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	p.mu.Lock()
	if err != nil || p.down {
		delete(p.conns, c)
		p.mu.Unlock()
		c.Close()
		if d != nil {
			d.Close()
		}
		return
	}
	p.conns[d] = struct{}{}
	p.forwarded++
	p.healedConns++
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		io.Copy(d, c)
		d.Close()
		c.Close()
		close(done)
	}()
	io.Copy(c, d)
	c.Close()
	d.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, d)
	p.mu.Unlock()
}

// cut closes every connection the proxy holds.
func (p *faultProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// partition cuts every live connection and blackholes new ones.
func (p *faultProxy) partition() {
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	p.cut()
}

// heal drops the blackholed connections (their dialers see a reset) and
// forwards again.
func (p *faultProxy) heal() {
	p.mu.Lock()
	p.down = false
	p.healedConns = 0
	p.mu.Unlock()
	p.cut()
}

func (p *faultProxy) stats() (forwarded, blackholed, sinceHeal int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.forwarded, p.blackholed, p.healedConns
}

// fxPeer and fxStatus are `mirror status --json`.
type fxPeer struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Addr       string `json:"addr"`
	State      string `json:"state"`
	LagEntries int64  `json:"lag_entries"`
	LastError  string `json:"last_error"`
}

type fxStatus struct {
	ID          string   `json:"id"`
	JournalHead int64    `json:"journal_head"`
	Peers       []fxPeer `json:"peers"`
}

// fxPeerStatus is nd's view of its only peer.
func fxPeerStatus(t *testing.T, nd *mirrorNode) fxPeer {
	t.Helper()
	var st fxStatus
	out := nd.MustCLI(t, "mirror", "status", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("mirror status --json of %s: %v\n%s", nd.Name, err, out)
	}
	if len(st.Peers) != 1 {
		t.Fatalf("mirror status of %s lists %d peers, want 1:\n%s", nd.Name, len(st.Peers), out)
	}
	return st.Peers[0]
}

// waitInSync waits until nd reports its peer in sync with nothing pending
// and no error.
func waitInSync(t *testing.T, timeout time.Duration, nd *mirrorNode) {
	t.Helper()
	var last fxPeer
	if !poll(timeout, func() bool {
		last = fxPeerStatus(t, nd)
		return last.State == "in-sync" && last.LagEntries == 0 && last.LastError == ""
	}) {
		t.Fatalf("%s: peer not back in sync within %s: %+v", nd.Name, timeout, last)
	}
}

// digestLines parses `mirror digest`: ID to its whole line. It fails on a
// repeated ID or a key digest the token could not compute.
func digestLines(t *testing.T, name, d string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for l := range strings.Lines(d) {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("%s: digest line %q: want ID, metadata digest, key digest", name, l)
		}
		if _, dup := out[f[0]]; dup {
			t.Fatalf("%s: object %s appears twice in the digest", name, f[0])
		}
		if strings.HasPrefix(f[2], "error:") {
			t.Fatalf("%s: key digest of %s failed: %s", name, f[0], f[2])
		}
		out[f[0]] = l
	}
	return out
}

// requireAllOnce checks a converged digest: it holds exactly the objects
// before (IDs that existed at the start) plus every acknowledged create, each
// once, so nothing acknowledged is missing and nothing is duplicated.
func requireAllOnce(t *testing.T, converged string, before map[string]string, acked ...[]string) {
	t.Helper()
	lines := strings.Count(converged, "\n")
	got := digestLines(t, "converged", converged)
	want := len(before)
	for id := range before {
		if _, ok := got[id]; !ok {
			t.Errorf("pre-existing object %s is gone", id)
		}
	}
	seen := map[string]bool{}
	for _, ids := range acked {
		for _, id := range ids {
			if seen[id] {
				t.Fatalf("two acknowledged creates returned the same ID %s", id)
			}
			seen[id] = true
			want++
			if _, ok := got[id]; !ok {
				t.Errorf("acknowledged key %s is missing after convergence", id)
			}
		}
	}
	if lines != len(got) || len(got) != want {
		t.Fatalf("converged digest: %d lines, %d distinct IDs, want %d (pre-existing %d + acknowledged creates)",
			lines, len(got), want, len(before))
	}
}

// tryOp sends one KMIP 1.2 operation on c and returns the payload, or an
// error for a failed operation or a broken connection. It does not touch
// testing.T, so load goroutines can use it.
func tryOp(c *framework.Client, op kmip14.Operation, payload ...*msg.Node) (*msg.Node, error) {
	req := framework.Request(framework.Header{Version: ver12}, framework.Item(op, nil, payload...))
	raw, err := c.RoundTripRaw(req.Append(nil))
	if err != nil {
		return nil, fmt.Errorf("%v: %w", op, err)
	}
	root, err := msg.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%v: reply does not decode: %w", op, err)
	}
	r := framework.Reply{Root: root}
	if st, reason := r.Status(0); st != kmip14.ResultStatusSuccess {
		m := ""
		if it := r.Items(); len(it) > 0 {
			m = it[0].Child(kmip14.TagResultMessage).Text()
		}
		return nil, fmt.Errorf("%v: %v %v %q", op, st, reason, m)
	}
	if p := r.Payload(0); p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("%v: success without a payload", op)
}

// fxCreate creates an AES-256 key named name with the extra attributes.
func fxCreate(c *framework.Client, name string, extra ...*msg.Node) (string, error) {
	attrs := append([]*msg.Node{
		enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
		intAttr("Cryptographic Length", 256),
		intAttr("Cryptographic Usage Mask", maskEncryptDecrypt), nameAttr(name)}, extra...)
	p, err := tryOp(c, kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(attrs...))
	if err != nil {
		return "", err
	}
	id := p.Child(kmip14.TagUniqueIdentifier)
	if id == nil || id.Text() == "" {
		return "", errors.New("Create: no Unique Identifier")
	}
	return id.Text(), nil
}

func fxDial(t *testing.T, nd *mirrorNode, ca string) *framework.Client {
	t.Helper()
	c, err := framework.Dial(t.Context(), nd.Addr, framework.ReadFile(t, nd.AdminPEM), framework.ReadFile(t, ca))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func textAttr(name, v string) *msg.Node { return framework.Attr(name, msg.Text(0, v)) }

// restartWith stops nd gracefully and serves it again on the same addresses
// with env added (later values win) for the server and the CLI.
func restartWith(t *testing.T, nd *mirrorNode, env ...string) {
	t.Helper()
	nd.Stop(t)
	nd.Env = append(nd.Env, env...)
	nd.Server.Env = append(nd.Server.Env, env...)
	if err := nd.Server.Start(); err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitForPort(nd.Addr, nd.Server, framework.StartTimeout); err != nil {
		t.Fatal(err)
	}
}

// TestMirrorKillPeerMidStream creates keys on A from 8 clients for about 5 s
// while B is killed with SIGKILL and restarted: once the load stops the two
// converge, every acknowledged key is on B with A's token digest, and no
// object is there twice.
func TestMirrorKillPeerMidStream(t *testing.T) {
	t.Parallel()
	nodes := startMirrored(t, 2, mirrorOptions{Env: []string{"HSMKMS_MIRROR_WRITE_ACK=local"}})
	a, b := nodes[0], nodes[1]
	ca := caBundle(t, a)
	before := digestLines(t, "a", digest(t, a))

	const workers = 8
	clients := make([]*framework.Client, workers)
	for i := range clients {
		clients[i] = fxDial(t, a, ca)
	}
	var (
		mu    sync.Mutex
		acked []string
		errs  []error
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for w, c := range clients {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id, err := fxCreate(c, fmt.Sprintf("load-%d-%d", w, i))
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					acked = append(acked, id)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	time.Sleep(1500 * time.Millisecond)
	pid := b.Server.PID()
	b.Server.Kill()
	killedAt := count()
	t.Logf("killed b (pid %d) after %d acknowledged creates", pid, killedAt)
	// What b had durably applied when it died: part of the stream.
	if n := len(digestLines(t, "b killed", digest(t, b))) - len(before); n == 0 {
		t.Fatal("b had applied none of the stream when it was killed")
	} else {
		t.Logf("b held %d of the new keys when killed", n)
	}
	time.Sleep(time.Second)
	if err := b.Server.Start(); err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitForPort(b.Addr, b.Server, framework.StartTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("b restarted (pid %d) after %d acknowledged creates", b.Server.PID(), count())
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	for _, err := range errs {
		t.Errorf("create on a: %v", err)
	}
	if killedAt == 0 || len(acked) <= killedAt {
		t.Fatalf("the load did not span the kill: %d creates before it, %d in all", killedAt, len(acked))
	}
	t.Logf("%d keys created on a", len(acked))

	start := time.Now()
	converged := waitConverged(t, 30*time.Second, a, b)
	t.Logf("converged %v after the load stopped", time.Since(start).Round(time.Millisecond))
	requireAllOnce(t, converged, before, acked)
	// Each line carries the key digest computed in each token: equal lines
	// mean B's token holds the very key A's does.
	da, db := digestLines(t, "a", digest(t, a)), digestLines(t, "b", digest(t, b))
	for _, id := range acked {
		if da[id] != db[id] {
			t.Fatalf("key %s differs: a %q, b %q", id, da[id], db[id])
		}
	}
	waitInSync(t, 15*time.Second, a)
	waitInSync(t, 15*time.Second, b)
}

// TestMirrorPartition puts a fault-injecting proxy in front of each mirror
// listener, partitions A from B for 30 s while both create keys, modify and
// add attributes of shared keys and revoke some, then heals: the status shows
// the split while it lasts, and afterwards both converge with every key
// created on either side, none twice, revocations kept, and back in sync.
func TestMirrorPartition(t *testing.T) {
	t.Parallel()
	proxies := make([]*faultProxy, 2)
	nodes := startMirrored(t, 2, mirrorOptions{Advertise: func(i int, listen string) string {
		proxies[i] = newFaultProxy(t, listen)
		return proxies[i].Addr
	}})
	a, b := nodes[0], nodes[1]
	pa, pb := proxies[0], proxies[1]
	// Each dials the other through the other's proxy: all mirror traffic
	// crosses them.
	if got := fxPeerStatus(t, a).Addr; got != pb.Addr {
		t.Fatalf("a reaches b at %s, not through b's proxy %s", got, pb.Addr)
	}
	if got := fxPeerStatus(t, b).Addr; got != pa.Addr {
		t.Fatalf("b reaches a at %s, not through a's proxy %s", got, pa.Addr)
	}
	ca := caBundle(t, a)
	sa := openMirrorKMIP(t, a, a.AdminPEM, ca)
	sb := openMirrorKMIP(t, b, a.AdminPEM, ca)

	const nShared = 8
	shared := make([]string, nShared)
	for i := range shared {
		id, err := fxCreate(sa.c, fmt.Sprintf("shared-%d", i), textAttr("x-tag", "init"))
		if err != nil {
			t.Fatal(err)
		}
		sa.ok(kmip14.OperationActivate, framework.UID(id))
		shared[i] = id
	}
	before := digestLines(t, "converged", waitConverged(t, 20*time.Second, a, b))
	if fa, _, _ := pa.stats(); fa == 0 {
		t.Fatal("no mirror connection went through a's proxy")
	}
	if fb, _, _ := pb.stats(); fb == 0 {
		t.Fatal("no mirror connection went through b's proxy")
	}

	pa.partition()
	pb.partition()
	partitioned := time.Now()
	var createdA, createdB []string
	revokedA, revokedB, revokedBoth := shared[0], shared[1], shared[2]
	revoke := func(s *kmipSession, id string) {
		s.ok(kmip14.OperationRevoke, framework.UID(id), msg.Struct(kmip14.TagRevocationReason,
			msg.Enum(kmip14.TagRevocationReasonCode, uint32(kmip14.RevocationReasonCodeCessationOfOperation))))
	}
	var (
		splitSeen bool // a's status showed the peer out of sync with lag
		states    []string
	)
	for i := 0; time.Since(partitioned) < 30*time.Second; i++ {
		for _, x := range []struct {
			s   *kmipSession
			out *[]string
			tag string
		}{{sa, &createdA, "a"}, {sb, &createdB, "b"}} {
			id, err := fxCreate(x.s.c, fmt.Sprintf("split-%s-%d", x.tag, i))
			if err != nil {
				t.Fatalf("create on %s during the partition: %v", x.tag, err)
			}
			*x.out = append(*x.out, id)
			// Concurrent changes of the same attribute on both sides, and
			// an instance added on each.
			k := shared[i%nShared]
			x.s.ok(kmip14.OperationModifyAttribute, framework.UID(k), textAttr("x-tag", fmt.Sprintf("%s-%d", x.tag, i)))
			if i%4 == 0 {
				x.s.ok(kmip14.OperationAddAttribute, framework.UID(shared[(i/4)%nShared]), textAttr("x-added-by-"+x.tag, fmt.Sprint(i)))
			}
		}
		switch i {
		case 3:
			revoke(sa, revokedA)
			revoke(sa, revokedBoth)
		case 5:
			revoke(sb, revokedB)
			revoke(sb, revokedBoth)
		}
		if !splitSeen {
			st := fxPeerStatus(t, a)
			if !slices.Contains(states, st.State) {
				states = append(states, st.State)
			}
			if st.State == "in-sync" && time.Since(partitioned) > 5*time.Second {
				t.Fatalf("a reports b in sync %v into the partition: %+v", time.Since(partitioned).Round(time.Second), st)
			}
			splitSeen = st.State != "in-sync" && st.LagEntries > 0
			if splitSeen {
				t.Logf("a's status %v into the partition: %+v", time.Since(partitioned).Round(time.Millisecond), st)
				if !slices.Contains([]string{"error", "disconnected", "catching-up"}, st.State) {
					t.Fatalf("a reports state %q for a partitioned peer", st.State)
				}
			}
		}
		time.Sleep(150 * time.Millisecond)
	}
	if !splitSeen {
		t.Fatalf("a's status never showed b out of sync with entries pending during 30 s of partition (states seen %v)", states)
	}
	if st := fxPeerStatus(t, a); st.State == "in-sync" || st.LagEntries == 0 {
		t.Fatalf("a's status at the end of the partition: %+v, want out of sync with entries pending", st)
	}
	if st := fxPeerStatus(t, b); st.State == "in-sync" || st.LagEntries == 0 {
		t.Fatalf("b's status at the end of the partition: %+v, want out of sync with entries pending", st)
	}
	if _, ba, _ := pa.stats(); ba == 0 {
		t.Error("b never tried to reach a during the partition")
	}
	if _, bb, _ := pb.stats(); bb == 0 {
		t.Error("a never tried to reach b during the partition")
	}
	t.Logf("partition over: %d keys created on a, %d on b", len(createdA), len(createdB))

	pa.heal()
	pb.heal()
	healed := time.Now()
	converged := waitConverged(t, 30*time.Second, a, b)
	t.Logf("converged %v after the heal", time.Since(healed).Round(time.Millisecond))
	requireAllOnce(t, converged, before, createdA, createdB)
	if _, _, n := pa.stats(); n == 0 {
		t.Error("nothing crossed a's proxy after the heal")
	}
	// The lifecycle goes forward whatever the attribute writes: a key revoked
	// on either side is Deactivated on both, the others stay Active.
	for _, k := range shared {
		want := kmip14.StateActive
		if k == revokedA || k == revokedB || k == revokedBoth {
			want = kmip14.StateDeactivated
		}
		for _, s := range []*kmipSession{sa, sb} {
			if got := keyState(t, s, k); got != want {
				t.Errorf("shared key %s is %v, want %v", k, got, want)
			}
		}
	}
	waitInSync(t, 15*time.Second, a)
	waitInSync(t, 15*time.Second, b)
}

// fill creates keys with long names on c until stop says so; it returns the
// acknowledged IDs.
func fill(t *testing.T, c *framework.Client, prefix string, stop func(n int) bool) []string {
	t.Helper()
	var ids []string
	long := strings.Repeat("z", 1500)
	for i := 0; !stop(i); i++ {
		id, err := fxCreate(c, fmt.Sprintf("%s-%d-%s", prefix, i, long))
		if err != nil {
			t.Fatalf("create %d on a: %v", i, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestMirrorPeerStoreFull caps B's store so that it fills with keys created
// on A: A's status must carry B's complaint, B must keep serving reads, and
// once B restarts with room it catches up and the error clears.
func TestMirrorPeerStoreFull(t *testing.T) {
	t.Parallel()
	nodes := startMirrored(t, 2, mirrorOptions{})
	a, b := nodes[0], nodes[1]
	ca := caBundle(t, a)
	sa := openMirrorKMIP(t, a, a.AdminPEM, ca)
	k0 := createAES(sa, "before-full")
	sa.ok(kmip14.OperationActivate, framework.UID(k0))
	before := digestLines(t, "converged", waitConverged(t, 20*time.Second, a, b))

	restartWith(t, b, "HSMKMS_STORE_MAX_SIZE_MB=1")
	waitInSync(t, 20*time.Second, a)

	var st fxPeer
	created := fill(t, sa.c, "fill", func(n int) bool {
		if n == 5000 {
			t.Fatal("b's 1 MiB store took 5000 keys")
		}
		if n%25 != 0 || n == 0 {
			return false
		}
		// Give b a moment to apply and complain before creating more.
		return poll(1500*time.Millisecond, func() bool {
			st = fxPeerStatus(t, a)
			return strings.HasPrefix(st.LastError, "peer reports:")
		})
	})
	t.Logf("b full after %d keys created on a: %+v", len(created), st)
	if st.State != "error" || !strings.Contains(st.LastError, "full") || st.LagEntries == 0 {
		t.Fatalf("a's status of a full peer: %+v, want state error, \"peer reports: ... full\" and entries pending", st)
	}

	// B is full, not down: reads go on.
	sb := openMirrorKMIP(t, b, a.AdminPEM, ca)
	if got := keyState(t, sb, k0); got != kmip14.StateActive {
		t.Fatalf("b while full: %s is %v, want Active", k0, got)
	}
	if n := len(sb.ok(kmip14.OperationLocate).All(kmip14.TagUniqueIdentifier)); n <= len(before) {
		t.Fatalf("b while full locates %d objects, want more than the %d before the fill", n, len(before))
	}
	roundTrip(t, sb, k0)
	t.Logf("b's own status while full: %+v", fxPeerStatus(t, b))
	// And it stays stuck without the room: a later status still says so.
	time.Sleep(2 * time.Second)
	if st := fxPeerStatus(t, a); !strings.Contains(st.LastError, "full") {
		t.Fatalf("a's status 2 s later: %+v, want b's full error still", st)
	}
	sb.c.Close()

	restartWith(t, b, "HSMKMS_STORE_MAX_SIZE_MB=256")
	restarted := time.Now()
	converged := waitConverged(t, 30*time.Second, a, b)
	t.Logf("b caught up %v after the restart with room", time.Since(restarted).Round(time.Millisecond))
	requireAllOnce(t, converged, before, created)
	waitInSync(t, 15*time.Second, a)
	waitInSync(t, 15*time.Second, b)
}

// TestMirrorPeerTokenFails serves B through the PKCS#11 shim and makes its
// token vanish while A creates keys: B cannot unwrap them, A's status carries
// B's error, B keeps answering metadata reads, and once the token is back B
// catches up without a restart.
func TestMirrorPeerTokenFails(t *testing.T) {
	t.Parallel()
	shim := buildShim(t)
	module, err := softhsm.FindModule()
	if err != nil {
		t.Fatal(err)
	}
	control := filepath.Join(t.TempDir(), "token-gone")
	nodes := startMirrored(t, 2, mirrorOptions{})
	a, b := nodes[0], nodes[1]
	restartWith(t, b, "HSMKMS_HSM_MODULE="+shim, "P11SHIM_MODULE="+module, "P11SHIM_CONTROL="+control)
	pid := b.Server.PID()
	waitInSync(t, 20*time.Second, a)
	ca := caBundle(t, a)
	sa := openMirrorKMIP(t, a, a.AdminPEM, ca)
	sb := openMirrorKMIP(t, b, a.AdminPEM, ca)
	k0 := createAES(sa, "before-fault")
	sa.ok(kmip14.OperationActivate, framework.UID(k0))
	before := digestLines(t, "converged", waitConverged(t, 20*time.Second, a, b))

	if err := os.WriteFile(control, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var created []string
	for i := range 20 {
		created = append(created, createAES(sa, fmt.Sprintf("during-fault-%d", i)))
	}
	var st fxPeer
	waitFor(t, 15*time.Second, "a's status to carry b's token error", func() bool {
		st = fxPeerStatus(t, a)
		return strings.HasPrefix(st.LastError, "peer reports:")
	})
	t.Logf("a's status during b's token fault: %+v", st)
	if st.State != "error" || st.LagEntries == 0 || !strings.Contains(st.LastError, "CKR_") {
		t.Errorf("a's status: %+v, want state error, entries pending and the PKCS#11 error", st)
	}
	if got := keyState(t, sb, k0); got != kmip14.StateActive {
		t.Fatalf("b during the token fault: %s is %v, want Active", k0, got)
	}

	if err := os.Remove(control); err != nil {
		t.Fatal(err)
	}
	created = append(created, createAES(sa, "after-fault"))
	cleared := time.Now()
	converged := waitConverged(t, 30*time.Second, a, b)
	t.Logf("b caught up %v after its token returned", time.Since(cleared).Round(time.Millisecond))
	requireAllOnce(t, converged, before, created)
	waitInSync(t, 15*time.Second, a)
	if b.Server.PID() != pid || !b.Server.Running() {
		t.Fatal("b restarted; it must recover in place")
	}
	getSymKey(t, sb, created[0], 256)
}
