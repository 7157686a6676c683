package vectors

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// vectorDir is ../shared/kmip-vectors from the repository root, or HSMKMS_VECTORS.
func vectorDir(t *testing.T) string {
	if d := os.Getenv("HSMKMS_VECTORS"); d != "" {
		return d
	}
	d, err := filepath.Abs("../../../shared/kmip-vectors")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d); err != nil {
		t.Fatalf("vector directory: %v (set HSMKMS_VECTORS)", err)
	}
	return d
}

// TestEveryVectorEncodes parses every published file and encodes every request and
// response with placeholders bound, so that a runner failure is never a parsing one.
func TestEveryVectorEncodes(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(vectorDir(t), "v*", "*.xml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vector files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range c.Steps {
				for _, x := range []*XNode{s.Request, s.Response} {
					b, err := bind(x, nil, time.Now(), false)
					if err != nil {
						t.Fatal(err)
					}
					n, err := Encode(b)
					if err != nil {
						t.Fatalf("line %d: %v", s.Line, err)
					}
					if !strings.HasSuffix(n.Tag.String(), "Message") {
						t.Fatalf("line %d: root %v", s.Line, n.Tag)
					}
				}
			}
		})
	}
}

func TestParseEnumsAndMasks(t *testing.T) {
	c, err := Parse([]byte(`<KMIP># comment
<RequestMessage><RequestHeader><ProtocolVersion><ProtocolVersionMajor type="Integer" value="1"/><ProtocolVersionMinor type="Integer" value="0"/></ProtocolVersion><BatchCount type="Integer" value="1"/></RequestHeader>
<BatchItem><Operation type="Enumeration" value="Create"/><RequestPayload><ObjectType type="Enumeration" value="SymmetricKey"/>
<TemplateAttribute><Attribute><AttributeName type="TextString" value="Cryptographic Usage Mask"/><AttributeValue type="Integer" value="Encrypt Decrypt"/></Attribute>
<Attribute><AttributeName type="TextString" value="Activation Date"/><AttributeValue type="DateTime" value="$NOW-3600"/></Attribute></TemplateAttribute></RequestPayload></BatchItem></RequestMessage>
<ResponseMessage><ResponseHeader/></ResponseMessage></KMIP>`))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	b, err := bind(c.Steps[0].Request, nil, now, true)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	p := n.Child(kmip14.TagBatchItem).Child(kmip14.TagRequestPayload)
	if got := p.Child(kmip14.TagObjectType); got.Int != int64(kmip14.ObjectTypeSymmetricKey) {
		t.Errorf("object type %d", got.Int)
	}
	attrs := p.Child(kmip14.TagTemplateAttribute).All(kmip14.TagAttribute)
	if got := attrs[0].Child(kmip14.TagAttributeValue); got.Int != int64(kmip14.CryptographicUsageMaskEncrypt|kmip14.CryptographicUsageMaskDecrypt) {
		t.Errorf("mask %d", got.Int)
	}
	if got := attrs[1].Child(kmip14.TagAttributeValue).Time(); !got.Equal(now.Add(-time.Hour)) {
		t.Errorf("$NOW-3600 bound to %v", got)
	}
	if _, err := bind(mustParseReq(t, `<UniqueIdentifier type="TextString" value="$UNIQUE_IDENTIFIER_3"/>`), nil, now, true); err == nil {
		t.Error("unbound placeholder in a request accepted")
	}
}

func mustParseReq(t *testing.T, payload string) *XNode {
	t.Helper()
	c, err := Parse([]byte(`<KMIP><RequestMessage><BatchItem><RequestPayload>` + payload +
		`</RequestPayload></BatchItem></RequestMessage><ResponseMessage/></KMIP>`))
	if err != nil {
		t.Fatal(err)
	}
	return c.Steps[0].Request
}

// reply builds a Get Attributes exchange: the request names attrs (none: all), the
// reply carries the given attributes.
func reply(uid string, attrs ...*msg.Node) *msg.Node {
	p := msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, uid))
	p.Children = append(p.Children, attrs...)
	return msg.Struct(kmip14.TagResponseMessage, msg.Struct(kmip14.TagBatchItem,
		msg.Enum(kmip14.TagOperation, uint32(kmip14.OperationGetAttributes)),
		msg.Enum(kmip14.TagResultStatus, uint32(kmip14.ResultStatusSuccess)), p))
}

func attr(name string, v *msg.Node) *msg.Node {
	v.Tag = kmip14.TagAttributeValue
	return msg.Struct(kmip14.TagAttribute, msg.Text(kmip14.TagAttributeName, name), v)
}

// xml renders an expected reply the way a vector file would, for Compare's raw side.
func rawOf(n *msg.Node, raws map[string]string) *XNode {
	x := &XNode{}
	if n.Type == msg.TypeStructure {
		for _, c := range n.Children {
			x.Children = append(x.Children, rawOf(c, raws))
		}
		return x
	}
	if n.Type == msg.TypeTextString {
		x.Raw = n.Text()
	}
	if r, ok := raws[n.Tag.String()]; ok {
		x.Raw = r
	}
	return x
}

func TestCompare(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	state := func(created bool) *State {
		st := NewState()
		st.Now = func() time.Time { return now }
		st.Vars["UNIQUE_IDENTIFIER_0"] = msg.Text(kmip14.TagUniqueIdentifier, "id-1")
		if created {
			st.Created["id-1"] = true
		}
		return st
	}
	state0 := msg.Enum(0, uint32(kmip14.StateActive))
	digest := func(b byte) *msg.Node {
		return msg.Struct(0, msg.Enum(kmip14.TagHashingAlgorithm, uint32(kmip14.HashingAlgorithmSHA_256)),
			msg.Bytes(kmip14.TagDigestValue, []byte{b, b, b, b}))
	}
	namedReq := msg.Struct(kmip14.TagRequestMessage, msg.Struct(kmip14.TagBatchItem,
		msg.Struct(kmip14.TagRequestPayload, msg.Text(kmip14.TagAttributeName, "State"))))
	allReq := msg.Struct(kmip14.TagRequestMessage, msg.Struct(kmip14.TagBatchItem, msg.Struct(kmip14.TagRequestPayload)))
	tests := []struct {
		name     string
		req      *msg.Node
		exp, act *msg.Node
		raws     map[string]string
		created  bool
		wantPath string // "" means equal
	}{
		{"identical", namedReq, reply("$UNIQUE_IDENTIFIER_0", attr("State", msg.Enum(0, 2))),
			reply("id-1", attr("State", msg.Enum(0, 2))), nil, false, ""},
		{"wrong enum", namedReq, reply("$UNIQUE_IDENTIFIER_0", attr("State", msg.Enum(0, 2))),
			reply("id-1", attr("State", msg.Enum(0, 1))), nil, false, "ResponseMessage/BatchItem/ResponsePayload/Attribute(State)/AttributeValue"},
		{"uid differs from captured", namedReq, reply("$UNIQUE_IDENTIFIER_0"), reply("id-2"), nil, false, "ResponseMessage/BatchItem/ResponsePayload/UniqueIdentifier"},
		{"new uid captured", namedReq, reply("$UNIQUE_IDENTIFIER_1"), reply("id-2"), nil, false, ""},
		{"new uid equal to another", namedReq, reply("$UNIQUE_IDENTIFIER_1"), reply("id-1"), nil, false, "ResponseMessage/BatchItem/ResponsePayload/UniqueIdentifier"},
		{"extra attribute", namedReq, reply("$UNIQUE_IDENTIFIER_0", attr("State", state0)),
			reply("id-1", attr("State", msg.Enum(0, uint32(kmip14.StateActive))), attr("Name", msg.Text(0, "x"))), nil, false, "ResponseMessage/BatchItem/ResponsePayload"},
		{"order matters when named", namedReq,
			reply("$UNIQUE_IDENTIFIER_0", attr("State", msg.Enum(0, 2)), attr("Cryptographic Length", msg.Int(0, 256))),
			reply("id-1", attr("Cryptographic Length", msg.Int(0, 256)), attr("State", msg.Enum(0, 2))), nil, false,
			"ResponseMessage/BatchItem/ResponsePayload/Attribute(State)/AttributeName"},
		{"set when none named", allReq,
			reply("$UNIQUE_IDENTIFIER_0", attr("State", msg.Enum(0, 2)), attr("Cryptographic Length", msg.Int(0, 256))),
			reply("id-1", attr("Cryptographic Length", msg.Int(0, 256)), attr("State", msg.Enum(0, 2))), nil, false, ""},
		{"set still checks values", allReq,
			reply("$UNIQUE_IDENTIFIER_0", attr("State", msg.Enum(0, 2)), attr("Cryptographic Length", msg.Int(0, 256))),
			reply("id-1", attr("Cryptographic Length", msg.Int(0, 128)), attr("State", msg.Enum(0, 2))), nil, false,
			"ResponseMessage/BatchItem/ResponsePayload/Attribute(Cryptographic Length)/AttributeValue"},
		{"$NOW within tolerance", namedReq, reply("$UNIQUE_IDENTIFIER_0", attr("Initial Date", msg.Date(0, now))),
			reply("id-1", attr("Initial Date", msg.Date(0, now.Add(3*time.Minute)))), map[string]string{"AttributeValue": "$NOW"}, false, ""},
		{"$NOW beyond tolerance", namedReq, reply("$UNIQUE_IDENTIFIER_0", attr("Initial Date", msg.Date(0, now))),
			reply("id-1", attr("Initial Date", msg.Date(0, now.Add(time.Hour)))), map[string]string{"AttributeValue": "$NOW"}, false,
			"ResponseMessage/BatchItem/ResponsePayload/Attribute(Initial Date)/AttributeValue"},
		{"server time stamp from an old file", namedReq, reply("$UNIQUE_IDENTIFIER_0", attr("Initial Date", msg.Date(0, time.Unix(1357860801, 0)))),
			reply("id-1", attr("Initial Date", msg.Date(0, now))), nil, false, ""},
		{"digest of a created key ignored", namedReq, reply("$UNIQUE_IDENTIFIER_0", attr("Digest", digest(1))),
			reply("id-1", attr("Digest", digest(2))), nil, true, ""},
		{"digest of a registered key compared", namedReq, reply("$UNIQUE_IDENTIFIER_0", attr("Digest", digest(1))),
			reply("id-1", attr("Digest", digest(2))), nil, false, "ResponseMessage/BatchItem/ResponsePayload/Attribute(Digest)/AttributeValue/DigestValue"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := state(tc.created)
			d := Compare(st, tc.req, tc.exp, rawOf(tc.exp, tc.raws), tc.act)
			switch {
			case tc.wantPath == "" && d != nil:
				t.Fatalf("unexpected difference %v", d)
			case tc.wantPath != "" && d == nil:
				t.Fatalf("no difference, want one at %s", tc.wantPath)
			case d != nil && d.Path != tc.wantPath:
				t.Fatalf("difference %v, want path %s", d, tc.wantPath)
			}
		})
	}
}

func TestFailureMessageIgnored(t *testing.T) {
	item := func(msgText string) *msg.Node {
		return msg.Struct(kmip14.TagResponseMessage, msg.Struct(kmip14.TagBatchItem,
			msg.Enum(kmip14.TagOperation, uint32(kmip14.OperationDestroy)),
			msg.Enum(kmip14.TagResultStatus, uint32(kmip14.ResultStatusOperationFailed)),
			msg.Enum(kmip14.TagResultReason, uint32(kmip14.ResultReasonPermissionDenied)),
			msg.Text(kmip14.TagResultMessage, msgText)))
	}
	req := msg.Struct(kmip14.TagRequestMessage)
	exp := item("DENIED")
	if d := Compare(NewState(), req, exp, rawOf(exp, nil), item("object is active")); d != nil {
		t.Fatalf("result message compared: %v", d)
	}
	act := item("x")
	act.Children[0].Children = append(act.Children[0].Children, msg.Struct(kmip14.TagResponsePayload))
	if d := Compare(NewState(), req, exp, rawOf(exp, nil), act); d == nil {
		t.Fatal("payload on a failure not reported")
	}
}

// exchange builds a one-item request and reply for op.
func exchange(op kmip14.Operation, header []*msg.Node, req []*msg.Node, resp ...*msg.Node) (*msg.Node, *msg.Node) {
	h := msg.Struct(kmip14.TagRequestHeader, msg.Struct(kmip14.TagProtocolVersion,
		msg.Int(kmip14.TagProtocolVersionMajor, 1), msg.Int(kmip14.TagProtocolVersionMinor, 2)))
	h.Children = append(h.Children, header...)
	rq := msg.Struct(kmip14.TagRequestMessage, h, msg.Struct(kmip14.TagBatchItem,
		msg.Enum(kmip14.TagOperation, uint32(op)), msg.Struct(kmip14.TagRequestPayload, req...)))
	rp := msg.Struct(kmip14.TagResponseMessage, msg.Struct(kmip14.TagBatchItem,
		msg.Enum(kmip14.TagOperation, uint32(op)),
		msg.Enum(kmip14.TagResultStatus, uint32(kmip14.ResultStatusSuccess)),
		msg.Struct(kmip14.TagResponsePayload, resp...)))
	return rq, rp
}

func version(minor int32) *msg.Node {
	return msg.Struct(kmip14.TagProtocolVersion, msg.Int(kmip14.TagProtocolVersionMajor, 1), msg.Int(kmip14.TagProtocolVersionMinor, minor))
}

// TestCompareServerFacts covers the rules for values that describe the server or that
// it chose: random ciphertexts and their capture, Discover Versions of a newer server,
// Query's sets, and attributes the file's own Get Attribute List listed.
func TestCompareServerFacts(t *testing.T) {
	uid := msg.Text(kmip14.TagUniqueIdentifier, "k")
	data := func(b byte) *msg.Node { return msg.Bytes(kmip14.TagData, []byte{b, b, b, b}) }
	iv := func(b byte) *msg.Node { return msg.Bytes(kmip14.TagIVCounterNonce, []byte{b, b}) }
	op := func(o kmip14.Operation) *msg.Node { return msg.Enum(kmip14.TagOperation, uint32(o)) }
	ot := func(o kmip14.ObjectType) *msg.Node { return msg.Enum(kmip14.TagObjectType, uint32(o)) }
	type side struct {
		req  []*msg.Node
		exp  []*msg.Node
		act  []*msg.Node
		op   kmip14.Operation
		hdr  []*msg.Node
		prep func(*State)
	}
	tests := []struct {
		name     string
		s        side
		wantDiff bool
		check    func(*testing.T, *State)
	}{
		{"ciphertext under a server IV is random and captured", side{op: kmip14.OperationEncrypt, req: []*msg.Node{uid, data(1)},
			exp: []*msg.Node{uid, data(2), iv(3)}, act: []*msg.Node{uid, data(9), iv(8)}}, false,
			func(t *testing.T, st *State) {
				if v := st.Vars["DATA_0"]; v == nil || v.Bytes[0] != 9 {
					t.Errorf("$DATA_0 = %v", v)
				}
				if v := st.Vars["IV_COUNTER_NONCE"]; v == nil || v.Bytes[0] != 8 {
					t.Errorf("$IV_COUNTER_NONCE = %v", v)
				}
			}},
		{"ciphertext under the client's IV is compared", side{op: kmip14.OperationEncrypt, req: []*msg.Node{uid, data(1), iv(3)},
			exp: []*msg.Node{uid, data(2)}, act: []*msg.Node{uid, data(9)}}, true, nil},
		{"random ciphertext still has the right length", side{op: kmip14.OperationEncrypt, req: []*msg.Node{uid, data(1)},
			exp: []*msg.Node{uid, data(2)}, act: []*msg.Node{uid, msg.Bytes(kmip14.TagData, []byte{1})}}, true, nil},
		{"decrypt under a created key is random", side{op: kmip14.OperationDecrypt, req: []*msg.Node{uid, data(1), iv(3)},
			exp: []*msg.Node{uid, data(2)}, act: []*msg.Node{uid, data(9)}, prep: func(st *State) { st.Created["k"] = true }}, false, nil},
		{"decrypt under a registered key is compared", side{op: kmip14.OperationDecrypt, req: []*msg.Node{uid, data(1), iv(3)},
			exp: []*msg.Node{uid, data(2)}, act: []*msg.Node{uid, data(9)}}, true, nil},
		{"rng data is random", side{op: kmip14.OperationRNGRetrieve, req: []*msg.Node{msg.Int(kmip14.TagDataLength, 4)},
			exp: []*msg.Node{data(2)}, act: []*msg.Node{data(9)}}, false, nil},
		{"newer server lists newer versions first", side{op: kmip14.OperationDiscoverVersions,
			exp: []*msg.Node{version(2), version(1)}, act: []*msg.Node{version(4), version(3), version(2), version(1)}}, false, nil},
		{"an asked-for list is compared exactly", side{op: kmip14.OperationDiscoverVersions, req: []*msg.Node{version(2)},
			exp: []*msg.Node{version(2)}, act: []*msg.Node{version(4), version(2)}}, true, nil},
		{"query may report more", side{op: kmip14.OperationQuery,
			exp: []*msg.Node{op(kmip14.OperationGet), ot(kmip14.ObjectTypeSymmetricKey), msg.Text(kmip14.TagVendorIdentification, "ref")},
			act: []*msg.Node{op(kmip14.OperationCreate), op(kmip14.OperationGet), ot(kmip14.ObjectTypeSecretData), ot(kmip14.ObjectTypeSymmetricKey),
				msg.Text(kmip14.TagVendorIdentification, "hsmkms")}}, false, nil},
		{"query must report every listed operation", side{op: kmip14.OperationQuery,
			exp: []*msg.Node{op(kmip14.OperationCheck)}, act: []*msg.Node{op(kmip14.OperationGet)}}, true, nil},
		{"an attribute the file listed may be added", side{op: kmip14.OperationGetAttributes, req: []*msg.Node{uid},
			exp: []*msg.Node{uid}, act: []*msg.Node{uid, attr("Sensitive", msg.Bool(0, false))},
			prep: func(st *State) { st.Listed["k"] = map[string]bool{"Sensitive": true} }}, false, nil},
		{"an attribute the file never listed may not", side{op: kmip14.OperationGetAttributes, req: []*msg.Node{uid},
			exp: []*msg.Node{uid}, act: []*msg.Node{uid, attr("Sensitive", msg.Bool(0, false))}}, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := NewState()
			if tc.s.prep != nil {
				tc.s.prep(st)
			}
			req, exp := exchange(tc.s.op, tc.s.hdr, tc.s.req, tc.s.exp...)
			_, act := exchange(tc.s.op, nil, nil, tc.s.act...)
			d := Compare(st, req, exp, rawOf(exp, nil), act)
			if (d != nil) != tc.wantDiff {
				t.Fatalf("difference %v, want one: %v", d, tc.wantDiff)
			}
			if tc.check != nil {
				tc.check(t, st)
			}
		})
	}
	if got := snake("IVCounterNonce"); got != "IV_COUNTER_NONCE" {
		t.Errorf("snake = %q", got)
	}
}
