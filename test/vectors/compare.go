package vectors

import (
	"bytes"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// DefaultTolerance is how far a time stamp may be from the expected one.
const DefaultTolerance = 10 * time.Minute

// State is what a conversation has learnt so far; it carries captures from one step to
// the next.
type State struct {
	Vars      map[string]*msg.Node // captured placeholder values, by name without "$"
	Created   map[string]bool      // identifiers of objects the server generated
	SentTimes map[int64]bool       // Date-Time values the client sent in requests
	// Listed holds, per object identifier, the attribute names the file's expected
	// Get Attribute List replies gave for it.
	Listed    map[string]map[string]bool
	Now       func() time.Time // nil: time.Now
	Tolerance time.Duration    // zero: DefaultTolerance
}

// NewState returns an empty state.
func NewState() *State {
	return &State{Vars: map[string]*msg.Node{}, Created: map[string]bool{}, SentTimes: map[int64]bool{}, Listed: map[string]map[string]bool{}}
}

func (s *State) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *State) tolerance() time.Duration {
	if s.Tolerance != 0 {
		return s.Tolerance
	}
	return DefaultTolerance
}

// Diff is the first difference found, at Path (tag names from the message root).
type Diff struct {
	Path string
	Msg  string
}

func (d *Diff) Error() string { return d.Path + ": " + d.Msg }

// cmp is one comparison of a reply; vars is the working copy of captures, committed
// by Compare only when the whole reply matched.
type cmp struct {
	st      *State
	vars    map[string]*msg.Node
	request *msg.Node // the whole request message
	item    int       // batch items of the reply seen so far
	req     *msg.Node // the request payload answered by the item being compared
	op      uint32
	obj     string // Unique Identifier of the reply payload being compared
	attr    string // Attribute Name of the attribute being compared
}

// serverFacts are attributes whose value describes the server that answered, not the
// conversation: the generator a key came from (the reference server's ANSI X9.31 is no
// more right than an HSM's DRBG). Their structure is compared, their values are not.
var serverFacts = map[string]ttlv.Tag{
	"Random Number Generator": kmip14.TagRNGAlgorithm,
}

// Compare checks the actual reply against the expected one (exp decoded from raw, the
// bound XML element that still knows which values were placeholders). req is the
// request that was sent. Identifiers the reply shows the server created are recorded in
// st; captures only when the whole reply matched.
func Compare(st *State, req, exp *msg.Node, raw *XNode, act *msg.Node) *Diff {
	// Objects the server generated in this very reply (a batch may Create and Get)
	// count as created before the comparison.
	for _, it := range act.All(kmip14.TagBatchItem) {
		op := it.Child(kmip14.TagOperation)
		p := it.Child(kmip14.TagResponsePayload)
		if op == nil || p == nil {
			continue
		}
		switch kmip14.Operation(op.Int) {
		case kmip14.OperationCreate, kmip14.OperationCreateKeyPair, kmip14.OperationReKey, kmip14.OperationReKeyKeyPair, kmip14.OperationDeriveKey:
			for _, t := range []ttlv.Tag{kmip14.TagUniqueIdentifier, kmip14.TagPrivateKeyUniqueIdentifier, kmip14.TagPublicKeyUniqueIdentifier} {
				if id := p.Child(t); id != nil {
					st.Created[id.Text()] = true
				}
			}
		}
	}
	c := &cmp{st: st, vars: maps.Clone(st.Vars), request: req}
	if d := c.node(tagName(exp.Tag), exp, raw, act); d != nil {
		return d
	}
	st.Vars = c.vars
	return nil
}

// RecordSent notes the Date-Time values of a request, so that a reply echoing one is
// compared exactly rather than as a server time stamp.
func (s *State) RecordSent(req *msg.Node) {
	if req.Type == msg.TypeDateTime {
		s.SentTimes[req.Int] = true
	}
	for _, c := range req.Children {
		s.RecordSent(c)
	}
}

func tagName(t ttlv.Tag) string { return t.String() }

func (c *cmp) node(path string, e *msg.Node, raw *XNode, a *msg.Node) *Diff {
	if a == nil {
		return &Diff{path, "missing"}
	}
	if e.Tag != a.Tag {
		return &Diff{path, fmt.Sprintf("tag %v, want %v", a.Tag, e.Tag)}
	}
	if e.Type != a.Type {
		return &Diff{path, fmt.Sprintf("type %v, want %v", a.Type, e.Type)}
	}
	if e.Type == msg.TypeStructure {
		return c.structure(path, e, raw, a)
	}
	if name, off, ok := placeholder(raw.Raw); ok {
		if name == "NOW" {
			return c.near(path, a, c.st.now().Add(off))
		}
		if v := c.vars[name]; v != nil {
			if !sameValue(v, a) {
				return &Diff{path, fmt.Sprintf("$%s is %s, earlier %s", name, show(a), show(v))}
			}
			return nil
		}
		if strings.HasPrefix(name, "UNIQUE_IDENTIFIER_") {
			for other, v := range c.vars {
				if strings.HasPrefix(other, "UNIQUE_IDENTIFIER_") && sameValue(v, a) {
					return &Diff{path, fmt.Sprintf("$%s got %s, already $%s", name, show(a), other)}
				}
			}
		}
		c.vars[name] = a.Clone()
		return nil
	}
	switch {
	case e.Tag == kmip14.TagResultMessage, e.Tag == kmip14.TagVendorIdentification:
		return nil
	case e.Type == msg.TypeDateTime && !c.st.SentTimes[e.Int]:
		return c.near(path, a, c.st.now())
	case e.Tag == kmip14.TagIVCounterNonce && c.req.Child(kmip14.TagIVCounterNonce) == nil:
		c.capture(a)
		return nil
	case c.random(e.Tag):
		if len(e.Bytes) != len(a.Bytes) {
			return &Diff{path, fmt.Sprintf("length %d, want %d", len(a.Bytes), len(e.Bytes))}
		}
		c.capture(a)
		return nil
	}
	if !sameValue(e, a) {
		return &Diff{path, fmt.Sprintf("%s, want %s", show(a), show(e))}
	}
	return nil
}

// random reports whether a value with tag in the reply being compared is one the
// server chose at random, so that only its length can be compared: key material and
// digests of keys the server generated, what such a key encrypts, decrypts or MACs,
// a ciphertext (and tag) under an IV the server chose, and random bytes.
func (c *cmp) random(tag ttlv.Tag) bool {
	op := kmip14.Operation(c.op)
	switch tag {
	case kmip14.TagKeyMaterial, kmip14.TagDigestValue:
		return c.st.Created[c.obj]
	case kmip14.TagData, kmip14.TagAuthenticatedEncryptionTag, kmip14.TagMACData:
		switch op {
		case kmip14.OperationRNGRetrieve:
			return tag == kmip14.TagData
		case kmip14.OperationEncrypt:
			return c.st.Created[c.obj] || c.req.Child(kmip14.TagIVCounterNonce) == nil
		case kmip14.OperationDecrypt, kmip14.OperationMAC:
			return c.st.Created[c.obj]
		}
	}
	return false
}

// capture keeps a value the server chose under the placeholder names the OASIS files
// use for it when their expected reply shows an example value instead of a
// placeholder: the tag in upper snake case ($IV_COUNTER_NONCE, the latest) and with
// the number of earlier captures of that tag ($DATA_0, $DATA_1, ...).
func (c *cmp) capture(a *msg.Node) {
	name := snake(a.Tag.String())
	n := 0
	for c.vars[fmt.Sprintf("%s_%d", name, n)] != nil {
		n++
	}
	c.vars[fmt.Sprintf("%s_%d", name, n)] = a.Clone()
	c.vars[name] = a.Clone()
}

// snake turns a tag name into a placeholder name: IVCounterNonce → IV_COUNTER_NONCE.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		upper := r >= 'A' && r <= 'Z'
		if i > 0 && upper {
			prevLower := s[i-1] >= 'a' && s[i-1] <= 'z'
			nextLower := i+1 < len(s) && s[i+1] >= 'a' && s[i+1] <= 'z'
			if prevLower || nextLower {
				b.WriteByte('_')
			}
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func (c *cmp) near(path string, a *msg.Node, want time.Time) *Diff {
	if d := a.Time().Sub(want); d > c.st.tolerance() || d < -c.st.tolerance() {
		return &Diff{path, fmt.Sprintf("time %s, want %s ±%s", a.Time().Format(time.RFC3339), want.UTC().Format(time.RFC3339), c.st.tolerance())}
	}
	return nil
}

func (c *cmp) structure(path string, e *msg.Node, raw *XNode, a *msg.Node) *Diff {
	switch e.Tag {
	case kmip14.TagAttribute:
		c.attr = ""
		if n := e.Child(kmip14.TagAttributeName); n != nil {
			c.attr = n.Text()
		}
	case kmip14.TagAttributeValue:
		if must, ok := serverFacts[c.attr]; ok {
			if a.Child(must) == nil {
				return &Diff{path, fmt.Sprintf("%s has no %v", c.attr, must)}
			}
			return nil
		}
	case kmip14.TagBatchItem:
		// Each reply item is compared in the context of its request item.
		c.op, c.req = 0, nil
		if op := e.Child(kmip14.TagOperation); op != nil {
			c.op = uint32(op.Int)
		}
		if items := c.request.All(kmip14.TagBatchItem); c.item < len(items) {
			c.req = items[c.item].Child(kmip14.TagRequestPayload)
		}
		c.item++
	case kmip14.TagServerInformation:
		// Its contents are vendor-defined: only its presence is compared.
		return nil
	case kmip14.TagResponsePayload:
		c.obj = ""
		if id := a.Child(kmip14.TagUniqueIdentifier); id != nil {
			c.obj = id.Text()
		}
		switch kmip14.Operation(c.op) {
		case kmip14.OperationDiscoverVersions:
			a = c.olderVersions(a)
		case kmip14.OperationQuery:
			return c.query(path, e, raw, a)
		}
		if c.op == uint32(kmip14.OperationGetAttributeList) {
			listed := map[string]bool{}
			for _, n := range e.All(kmip14.TagAttributeName) {
				listed[n.Text()] = true
			}
			c.st.Listed[c.obj] = listed
			return c.unordered(path, e, raw, a, kmip14.TagAttributeName)
		}
		if c.op == uint32(kmip14.OperationGetAttributes) && c.req.Child(kmip14.TagAttributeName) == nil {
			return c.unordered(path, e, raw, a, kmip14.TagAttribute)
		}
	}
	return c.ordered(path, e.Children, raw.Children, a.Children)
}

func (c *cmp) ordered(path string, e []*msg.Node, raw []*XNode, a []*msg.Node) *Diff {
	names := childNames(path, e)
	for i := range e {
		if i >= len(a) {
			return &Diff{names[i], "missing"}
		}
		if d := c.node(names[i], e[i], raw[i], a[i]); d != nil {
			return d
		}
	}
	if len(a) > len(e) {
		return &Diff{path, fmt.Sprintf("unexpected %s%s", tagName(a[len(e)].Tag), attrLabel(a[len(e)]))}
	}
	return nil
}

// unordered compares the children with tag set as a multiset (each expected one must
// match a distinct actual one) and the others in order.
func (c *cmp) unordered(path string, e *msg.Node, raw *XNode, a *msg.Node, set ttlv.Tag) *Diff {
	var eo, ao, es, as []*msg.Node
	var ro, rs []*XNode
	for i, ch := range e.Children {
		if ch.Tag == set {
			es, rs = append(es, ch), append(rs, raw.Children[i])
		} else {
			eo, ro = append(eo, ch), append(ro, raw.Children[i])
		}
	}
	for _, ch := range a.Children {
		if ch.Tag == set {
			as = append(as, ch)
		} else {
			ao = append(ao, ch)
		}
	}
	if d := c.ordered(path, eo, ro, ao); d != nil {
		return d
	}
	used := make([]bool, len(as))
	var missing []string
	var firstDiff *Diff
	for i, want := range es {
		p := path + "/" + tagName(set) + attrLabel(want)
		found := false
		for j, got := range as {
			if used[j] {
				continue
			}
			trial := *c
			trial.vars = maps.Clone(c.vars)
			d := trial.node(p, want, rs[i], got)
			if d == nil {
				used[j], found, c.vars = true, true, trial.vars
				break
			}
			if firstDiff == nil && sameName(want, got) {
				firstDiff = d
			}
		}
		if !found {
			missing = append(missing, attrLabel(want))
		}
	}
	var unexpected []string
	for j, got := range as {
		if !used[j] && !c.listed(got) {
			unexpected = append(unexpected, attrLabel(got))
		}
	}
	if len(missing) == 0 && len(unexpected) == 0 {
		return nil
	}
	// A value difference in an attribute both sides have is the most precise report;
	// otherwise name what is missing and what is extra.
	if firstDiff != nil && len(missing) == 1 && len(unexpected) == 1 && missing[0] == unexpected[0] {
		return firstDiff
	}
	return &Diff{path, fmt.Sprintf("%s set differs: missing %v, unexpected %v (first value difference: %v)",
		tagName(set), missing, unexpected, firstDiff)}
}

// olderVersions drops, from a Discover Versions reply to a request that listed no
// versions, the leading versions newer than the request's: the files were recorded
// against servers of their own protocol version, and a newer server rightly lists
// its newer versions first.
func (c *cmp) olderVersions(a *msg.Node) *msg.Node {
	if c.req.Child(kmip14.TagProtocolVersion) != nil {
		return a
	}
	pv := c.request.Child(kmip14.TagRequestHeader).Child(kmip14.TagProtocolVersion)
	major, minor := pv.Child(kmip14.TagProtocolVersionMajor), pv.Child(kmip14.TagProtocolVersionMinor)
	if major == nil || minor == nil {
		return a
	}
	out := *a
	out.Children = nil
	newer := true
	for _, ch := range a.Children {
		v := msg.Version{Major: int32(ch.Child(kmip14.TagProtocolVersionMajor).Int), Minor: int32(ch.Child(kmip14.TagProtocolVersionMinor).Int)}
		if newer && ch.Tag == kmip14.TagProtocolVersion && v != (msg.Version{Major: int32(major.Int), Minor: int32(minor.Int)}) &&
			v.AtLeast(int32(major.Int), int32(minor.Int)) {
			continue
		}
		newer = false
		out.Children = append(out.Children, ch)
	}
	return &out
}

// query compares a Query reply: the operations and object types the file lists must
// all be reported (a server that supports more reports more), in any order; the other
// children are compared in order.
func (c *cmp) query(path string, e *msg.Node, raw *XNode, a *msg.Node) *Diff {
	var eo, ao []*msg.Node
	var ro []*XNode
	for i, ch := range e.Children {
		if ch.Tag == kmip14.TagOperation || ch.Tag == kmip14.TagObjectType {
			if !hasValue(a, ch) {
				return &Diff{path, fmt.Sprintf("%s %s not reported", tagName(ch.Tag), show(ch))}
			}
			continue
		}
		eo, ro = append(eo, ch), append(ro, raw.Children[i])
	}
	for _, ch := range a.Children {
		if ch.Tag != kmip14.TagOperation && ch.Tag != kmip14.TagObjectType {
			ao = append(ao, ch)
		}
	}
	return c.ordered(path, eo, ro, ao)
}

func hasValue(parent, want *msg.Node) bool {
	for _, ch := range parent.All(want.Tag) {
		if sameValue(ch, want) {
			return true
		}
	}
	return false
}

// listed reports whether an attribute the expected reply to a Get Attributes of every
// attribute lacks is one the file's own Get Attribute List reply listed for the same
// object: the reference server of TL-M-3 left some out of one reply and listed them
// in the other, so the file itself says the object has them.
func (c *cmp) listed(got *msg.Node) bool {
	if c.op != uint32(kmip14.OperationGetAttributes) || got.Tag != kmip14.TagAttribute {
		return false
	}
	name := got.Child(kmip14.TagAttributeName)
	return name != nil && c.st.Listed[c.obj][name.Text()]
}

func sameName(x, y *msg.Node) bool { return attrLabel(x) == attrLabel(y) }

// attrLabel names an Attribute by its Attribute Name ("(State)"), or an Attribute Name
// by its value, to make paths readable.
func attrLabel(n *msg.Node) string {
	switch n.Tag {
	case kmip14.TagAttribute:
		if an := n.Child(kmip14.TagAttributeName); an != nil {
			return "(" + an.Text() + ")"
		}
	case kmip14.TagAttributeName:
		return "(" + n.Text() + ")"
	}
	return ""
}

// childNames gives each child a path: its tag, with the attribute name for attributes
// and an index when the tag repeats.
func childNames(path string, ch []*msg.Node) []string {
	count := map[ttlv.Tag]int{}
	for _, c := range ch {
		count[c.Tag]++
	}
	seen := map[ttlv.Tag]int{}
	out := make([]string, len(ch))
	for i, c := range ch {
		s := path + "/" + tagName(c.Tag)
		if l := attrLabel(c); l != "" && c.Tag == kmip14.TagAttribute {
			s += l
		} else if count[c.Tag] > 1 {
			s += fmt.Sprintf("[%d]", seen[c.Tag])
		}
		seen[c.Tag]++
		out[i] = s
	}
	return out
}

func sameValue(x, y *msg.Node) bool {
	return x.Type == y.Type && x.Int == y.Int && bytes.Equal(x.Bytes, y.Bytes)
}

// show renders a value for a difference report: enumerations by name.
func show(n *msg.Node) string {
	switch n.Type {
	case msg.TypeEnumeration:
		return fmt.Sprintf("%s (%#x)", ttlv.DefaultRegistry.FormatEnum(n.Tag, uint32(n.Int)), n.Int)
	case msg.TypeTextString:
		return fmt.Sprintf("%q", n.Bytes)
	case msg.TypeByteString, msg.TypeBigInteger:
		return fmt.Sprintf("%x", n.Bytes)
	case msg.TypeDateTime:
		return n.Time().Format(time.RFC3339)
	}
	return fmt.Sprint(n.Int)
}
