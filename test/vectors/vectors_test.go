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
