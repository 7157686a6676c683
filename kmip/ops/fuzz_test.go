package ops_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm/hsmtest"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/kmip/ops"
	"github.com/hsmkms/hsmkms/meta"
	"github.com/hsmkms/hsmkms/test/vectors"
)

// fuzzNow is the clock of the fuzzed Service and the value $NOW had when the seeds were
// made, so that dates in the seeds mean the same thing on every run.
var fuzzNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	// maxFuzzMessages bounds the requests one input may hold: each costs token work
	// and a durable commit.
	maxFuzzMessages = 16
	// fuzzStoreLife is how many inputs share one database before a fresh one replaces
	// it, so that Locate stays fast however long the fuzzer runs.
	fuzzStoreLife = 500
)

// opsFuzzer runs whole conversations against a real Service: the shared SoftHSM test
// token and a real SQLite file.
type opsFuzzer struct {
	keys   ops.Keys
	dir    string
	mux    *kmip.Mux
	st     *meta.Store
	stores int // databases opened so far
	ran    int // inputs run on the current one
}

// newOpsFuzzer takes everything that needs f here: the fuzz function itself may not
// call TempDir or Cleanup.
func newOpsFuzzer(f *testing.F) *opsFuzzer {
	z := &opsFuzzer{keys: hsmtest.Token(f), dir: f.TempDir()}
	if err := z.renew(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { z.st.Close() })
	return z
}

// renew replaces the store and the Service (whose object cache belongs to the store)
// and deletes the old database.
func (z *opsFuzzer) renew() error {
	if z.st != nil {
		if err := z.st.Close(); err != nil {
			return fmt.Errorf("close fuzz store: %w", err)
		}
		old, _ := filepath.Glob(filepath.Join(z.dir, fmt.Sprintf("meta%d.db*", z.stores)))
		for _, p := range old {
			os.Remove(p)
		}
	}
	z.stores++
	st, err := meta.Open(context.Background(), filepath.Join(z.dir, fmt.Sprintf("meta%d.db", z.stores)), meta.Options{})
	if err != nil {
		return fmt.Errorf("open fuzz store: %w", err)
	}
	svc := ops.New(ops.Config{
		Keys:   z.keys,
		Store:  st,
		Now:    func() time.Time { return fuzzNow },
		Policy: testPolicy(),
	})
	z.mux = kmip.NewMux()
	svc.Register(z.mux)
	z.st, z.ran = st, 0
	return nil
}

// splitMessages cuts in into TTLV messages by their length fields; a last fragment
// that does not fit is kept as it is, for the decoder to reject.
func splitMessages(in []byte) [][]byte {
	var out [][]byte
	for len(in) > 0 && len(out) < maxFuzzMessages {
		n := len(in)
		if len(in) >= 8 {
			if l := 8 + int(binary.BigEndian.Uint32(in[4:8])); l <= len(in) {
				n = l
			}
		}
		out = append(out, in[:n])
		in = in[n:]
	}
	return out
}

var seedIDRE = regexp.MustCompile(`^\$([0-9]+)$`)

// bindIDs replaces Text String values "$k" in n with the k-th identifier the
// conversation's replies returned, as the seeds were written (see TestFuzzOpsSeeds).
func bindIDs(n *msg.Node, ids []string) {
	if n == nil {
		return
	}
	if n.Type == msg.TypeTextString {
		if m := seedIDRE.FindSubmatch(n.Bytes); m != nil {
			if k, err := strconv.Atoi(string(m[1])); err == nil && k < len(ids) {
				n.Bytes = []byte(ids[k])
			}
		}
	}
	for _, c := range n.Children {
		bindIDs(c, ids)
	}
}

// collectIDs appends to ids every Unique Identifier in p it does not hold yet.
func collectIDs(p *msg.Node, ids []string) []string {
	if p == nil {
		return ids
	}
	if p.Tag == kmip14.TagUniqueIdentifier && p.Type == msg.TypeTextString {
		id := p.Text()
		for _, have := range ids {
			if have == id {
				return ids
			}
		}
		return append(ids, id)
	}
	for _, c := range p.Children {
		ids = collectIDs(c, ids)
	}
	return ids
}

// FuzzOps feeds whole request messages, decoded and parsed as the server does, to the
// real operations through kmip.Mux. An input is a conversation: one or more TTLV
// request messages back to back, where a Text String "$k" names the k-th identifier
// the earlier replies returned. Panics propagate (the server would recover them, but
// here they are findings), and every failure must be one ReasonFor knows: an unknown
// error is General Failure "internal error" to a client, which bad input must never
// cause. Seeds: one file per shared OASIS vector (TestFuzzOpsSeeds), in
// testdata/fuzz/FuzzOps.
func FuzzOps(f *testing.F) {
	z := newOpsFuzzer(f)
	var mu sync.Mutex // one conversation at a time: they share the store
	f.Fuzz(func(t *testing.T, asClient bool, in []byte) {
		mu.Lock()
		defer mu.Unlock()
		if z.ran++; z.ran > fuzzStoreLife {
			if err := z.renew(); err != nil {
				t.Fatal(err)
			}
		}
		identity := "admin"
		if asClient {
			identity = "client"
		}
		ctx := kmip.WithPeer(t.Context(), &kmip.Peer{Identity: identity})
		var ids []string
		for _, b := range splitMessages(in) {
			root, err := msg.Decode(b)
			if err != nil {
				continue // the framing and codec fuzzers cover bytes that do not decode
			}
			req, err := msg.ParseRequest(root)
			if err != nil {
				continue
			}
			ids = z.serve(t, ctx, req, ids)
		}
	})
}

// serve runs the items of req as the batch executor does (version gate, ID
// placeholder, stop at the first failure unless told to continue) and checks each
// outcome and the reply's encoding. It returns ids with the new identifiers appended.
func (z *opsFuzzer) serve(t *testing.T, ctx context.Context, req *msg.Request, ids []string) []string {
	t.Helper()
	v, supported := req.Header.Version, msg.IsSupported(req.Header.Version)
	if !supported {
		v = msg.Supported[0]
	}
	resp := &msg.Response{Version: v, TimeStamp: fuzzNow}
	placeholder := ""
	for _, ri := range req.Items {
		if !supported && ri.Operation != uint32(kmip14.OperationDiscoverVersions) {
			break
		}
		bindIDs(ri.Payload, ids)
		it := &kmip.Item{Version: v, Operation: ri.Operation, Payload: ri.Payload, Placeholder: placeholder, Header: &req.Header}
		out := msg.ResponseItem{Operation: ri.Operation, ID: ri.ID, Status: kmip14.ResultStatusSuccess}
		p, err := z.mux.ServeItem(ctx, it)
		if err != nil {
			reason, message, known := kmip.ReasonFor(err)
			if !known {
				t.Fatalf("%v: unmapped error (a client would see internal error): %v", kmip14.Operation(ri.Operation), err)
			}
			out.Status, out.Reason, out.Message = kmip14.ResultStatusOperationFailed, reason, message
		} else if p != nil && (p.Tag != kmip14.TagResponsePayload || p.Type != msg.TypeStructure) {
			t.Fatalf("%v returned a %v %v instead of a Response Payload", kmip14.Operation(ri.Operation), p.Type, p.Tag)
		}
		out.Payload = p
		resp.Items = append(resp.Items, out)
		if err != nil {
			if req.Header.ErrorContinuation != uint32(kmip14.BatchErrorContinuationOptionContinue) {
				break
			}
			continue
		}
		if uid := p.Child(kmip14.TagUniqueIdentifier); uid != nil && uid.Type == msg.TypeTextString {
			placeholder = uid.Text()
		}
		ids = collectIDs(p, ids)
	}
	if len(resp.Items) == 0 {
		return ids
	}
	b := resp.Node().Append(nil)
	back, err := msg.Decode(b)
	if err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	if !bytes.Equal(back.Append(nil), b) {
		t.Fatalf("reply does not survive a decode and encode")
	}
	return ids
}

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzOps from the shared KMIP vectors")

// TestFuzzOpsSeeds checks that testdata/fuzz/FuzzOps holds one seed per shared OASIS
// vector file ($HSMKMS_VECTORS, or ../shared/kmip-vectors beside the repository), as
// seedFor writes it; -update-seeds rewrites them. Without the vectors it skips: the
// seeds are committed, so FuzzOps needs no shared directory.
func TestFuzzOpsSeeds(t *testing.T) {
	dir := os.Getenv("HSMKMS_VECTORS")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "kmip-vectors")
	}
	files, err := filepath.Glob(filepath.Join(dir, "v1.*", "*.xml"))
	if err != nil || len(files) == 0 {
		t.Skipf("no KMIP vectors in %s (set HSMKMS_VECTORS): %v", dir, err)
	}
	out := filepath.Join("testdata", "fuzz", "FuzzOps")
	if *updateSeeds {
		if err := os.MkdirAll(out, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, file := range files {
		seed, err := seedFor(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		path := filepath.Join(out, "vector-"+strings.TrimSuffix(filepath.Base(file), ".xml"))
		if *updateSeeds {
			if err := os.WriteFile(path, seed, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		have, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(have, seed) {
			t.Errorf("seed %s is missing or stale (run go test ./kmip/ops -run TestFuzzOpsSeeds -update-seeds): %v", path, err)
		}
	}
}

var vectorIDRE = regexp.MustCompile(`^\$UNIQUE_IDENTIFIER_[0-9]+$`)

// seedFor turns one vector file into a FuzzOps corpus entry: every RequestMessage,
// encoded as TTLV and concatenated. $UNIQUE_IDENTIFIER_n becomes "$k", k being the
// order in which the expected replies first name it (the order in which FuzzOps
// collects identifiers); $NOW±n becomes fuzzNow±n; other placeholders (data a reply
// returned) become empty.
func seedFor(file string) ([]byte, error) {
	conv, err := vectors.Load(file)
	if err != nil {
		return nil, err
	}
	order := map[string]int{}
	var number func(n *vectors.XNode)
	number = func(n *vectors.XNode) {
		if _, seen := order[n.Value]; vectorIDRE.MatchString(n.Value) && !seen {
			order[n.Value] = len(order)
		}
		for _, c := range n.Children {
			number(c)
		}
	}
	var in []byte
	for i, step := range conv.Steps {
		req, err := vectors.Encode(seedBind(step.Request, order))
		if err != nil {
			return nil, fmt.Errorf("request %d: %w", i+1, err)
		}
		in = req.Append(in)
		number(step.Response)
	}
	return fmt.Appendf(nil, "go test fuzz v1\nbool(false)\n[]byte(%q)\n", in), nil
}

var nowRE = regexp.MustCompile(`^\$NOW([+-][0-9]+)?$`)

// seedBind returns a copy of n with its placeholders bound for a seed.
func seedBind(n *vectors.XNode, order map[string]int) *vectors.XNode {
	c := *n
	c.Children = nil
	switch m := nowRE.FindStringSubmatch(n.Value); {
	case m != nil:
		off, _ := strconv.Atoi(m[1])
		c.Value = fuzzNow.Add(time.Duration(off) * time.Second).Format(time.RFC3339)
	case vectorIDRE.MatchString(n.Value):
		k, ok := order[n.Value]
		if !ok {
			k = len(order) // named before any reply did: an identifier that does not exist
		}
		c.Value = "$" + strconv.Itoa(k)
	case strings.HasPrefix(n.Value, "$"):
		c.Value = ""
	}
	for _, ch := range n.Children {
		c.Children = append(c.Children, seedBind(ch, order))
	}
	return &c
}
