//go:build e2e

package test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/test/framework"
)

var (
	ver10 = msg.Version{Major: 1, Minor: 0}
	ver12 = msg.Version{Major: 1, Minor: 2}
	ver14 = msg.Version{Major: 1, Minor: 4}
)

// kmipSession is one client connection that sends single-item requests with a fixed
// header and holds every reply to the rules all clients depend on: header W2, batch
// item W3, the reply size limit W15, and for 1.0 no tag or attribute 1.0 lacks (W1).
type kmipSession struct {
	t      testing.TB
	c      *framework.Client
	h      framework.Header
	itemID []byte // Unique Batch Item ID sent with every request; nil: none
}

func openKMIP(t testing.TB, app *framework.Appliance, bundle string, h framework.Header) *kmipSession {
	t.Helper()
	c, err := framework.Dial(t.Context(), app.Addr, framework.ReadFile(t, bundle), framework.ReadFile(t, app.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &kmipSession{t: t, c: c, h: h}
}

// call sends one operation and checks the reply's envelope; the caller checks the rest.
func (s *kmipSession) call(op kmip14.Operation, payload ...*msg.Node) framework.Reply {
	s.t.Helper()
	req := framework.Request(s.h, framework.Item(op, s.itemID, payload...))
	raw, err := s.c.RoundTripRaw(req.Append(nil))
	if err != nil {
		s.t.Fatalf("%v: %v", op, err)
	}
	if s.h.MaxResponseSize > 0 && len(raw) > int(s.h.MaxResponseSize) {
		s.t.Fatalf("%v: reply of %d bytes exceeds Maximum Response Size %d (W15)", op, len(raw), s.h.MaxResponseSize)
	}
	root, err := msg.Decode(raw)
	if err != nil {
		s.t.Fatalf("%v: reply does not decode: %v", op, err)
	}
	r := framework.Reply{Root: root}
	if err := r.CheckHeader(s.h.Version); err != nil {
		s.t.Fatalf("%v: W2: %v", op, err)
	}
	if err := r.CheckItem(0, op, s.itemID); err != nil {
		s.t.Fatalf("%v: W3: %v", op, err)
	}
	if len(r.Items()) != 1 {
		s.t.Fatalf("%v: %d batch items for one request", op, len(r.Items()))
	}
	if s.h.Version == ver10 {
		if err := check10(root); err != nil {
			s.t.Fatalf("%v: 1.0 reply: %v", op, err)
		}
	}
	return r
}

// ok calls op and requires success; it returns the payload.
func (s *kmipSession) ok(op kmip14.Operation, payload ...*msg.Node) *msg.Node {
	s.t.Helper()
	r := s.call(op, payload...)
	if st, reason := r.Status(0); st != kmip14.ResultStatusSuccess {
		s.t.Fatalf("%v: status %v reason %v message %q", op, st, reason, r.Items()[0].Child(kmip14.TagResultMessage).Text())
	}
	p := r.Payload(0)
	if p == nil {
		s.t.Fatalf("%v: success without a Response Payload", op)
	}
	return p
}

// fail calls op and requires Operation Failed with reason.
func (s *kmipSession) fail(op kmip14.Operation, reason kmip14.ResultReason, payload ...*msg.Node) {
	s.t.Helper()
	r := s.call(op, payload...)
	st, got := r.Status(0)
	if st != kmip14.ResultStatusOperationFailed || got != reason {
		s.t.Fatalf("%v: status %v reason %v, want OperationFailed %v", op, st, got, reason)
	}
}

// tagsAfter10 are tags KMIP 1.0 lacks that this server could plausibly emit; check10
// also rejects every tag above 1.0's last one (Y, 0x4200A0), which covers them, but
// naming them makes a failure readable.
var tagsAfter10 = map[ttlv.Tag]string{
	kmip14.TagLocatedItems:                          "Located Items (1.3)",
	kmip14.TagAuthenticatedEncryptionTag:            "Authenticated Encryption Tag (1.4)",
	kmip14.TagAuthenticatedEncryptionAdditionalData: "Authenticated Encryption Additional Data (1.4)",
	kmip14.TagFresh:                                 "Fresh (1.1)",
	kmip14.TagRandomNumberGenerator:                 "Random Number Generator (1.3)",
	kmip14.TagAlternativeName:                       "Alternative Name (1.2)",
	kmip14.TagKeyValuePresent:                       "Key Value Present (1.2)",
	kmip14.TagSensitive:                             "Sensitive (1.4)",
	kmip14.TagExtractable:                           "Extractable (1.4)",
	kmip14.TagCorrelationValue:                      "Correlation Value (1.3)",
	kmip14.TagServerInformation:                     "Server Information (1.1)",
}

// attrs10 are the attribute names KMIP 1.0 defines.
var attrs10 = []string{
	"Unique Identifier", "Name", "Object Type", "Cryptographic Algorithm", "Cryptographic Length",
	"Cryptographic Parameters", "Cryptographic Domain Parameters", "Certificate Type",
	"Certificate Identifier", "Certificate Subject", "Certificate Issuer", "Digest",
	"Operation Policy Name", "Cryptographic Usage Mask", "Lease Time", "Usage Limits", "State",
	"Initial Date", "Activation Date", "Process Start Date", "Protect Stop Date",
	"Deactivation Date", "Destroy Date", "Compromise Occurrence Date", "Compromise Date",
	"Revocation Reason", "Archive Date", "Object Group", "Link", "Application Specific Information",
	"Contact Information", "Last Change Date",
}

// check10 fails on any tag or attribute name a KMIP 1.0 client cannot know, and on a
// Digest carrying the Key Format Type that 1.1 added.
func check10(root *msg.Node) error {
	var err error
	framework.Walk(root, func(n *msg.Node) {
		if err != nil {
			return
		}
		if name, ok := tagsAfter10[n.Tag]; ok {
			err = fmt.Errorf("tag %s is not KMIP 1.0", name)
			return
		}
		if n.Tag < 0x420001 || n.Tag > kmip14.TagY {
			err = fmt.Errorf("tag %v (%06x) is not KMIP 1.0", n.Tag, uint32(n.Tag))
			return
		}
		if n.Tag == kmip14.TagAttributeName && n.Type == msg.TypeTextString {
			a := n.Text()
			if !slices.Contains(attrs10, a) && !strings.HasPrefix(a, "x-") && !strings.HasPrefix(a, "y-") {
				err = fmt.Errorf("attribute %q is not KMIP 1.0", a)
			}
		}
		if an := n.Child(kmip14.TagAttributeName); n.Tag == kmip14.TagAttribute && an != nil && an.Text() == "Digest" &&
			n.Child(kmip14.TagAttributeValue).Child(kmip14.TagKeyFormatType) != nil {
			err = fmt.Errorf("Digest carries Key Format Type, added in 1.1")
		}
	})
	return err
}

// requireTags fails unless n's children are exactly want, in order (W5, W6).
func requireTags(t testing.TB, what string, n *msg.Node, want ...ttlv.Tag) {
	t.Helper()
	if n == nil {
		t.Fatalf("%s: missing", what)
	}
	if got := framework.Tags(n); !slices.Equal(got, want) {
		t.Fatalf("%s: fields %v, want exactly %v", what, got, want)
	}
}

// enumAttr and friends build attribute values whose tag Attr replaces.
func enumAttr(name string, v uint32) *msg.Node { return framework.Attr(name, msg.Enum(0, v)) }
func intAttr(name string, v int32) *msg.Node   { return framework.Attr(name, msg.Int(0, v)) }

func nameAttr(name string) *msg.Node {
	return framework.Attr("Name", msg.Struct(0,
		msg.Text(kmip14.TagNameValue, name),
		msg.Enum(kmip14.TagNameType, uint32(kmip14.NameTypeUninterpretedTextString))))
}

func objType(t kmip14.ObjectType) *msg.Node { return msg.Enum(kmip14.TagObjectType, uint32(t)) }

// symmetricKey is the object of a Register or a Get: Key Block{Raw, Key Value{Key
// Material}, algorithm, length}.
func symmetricKey(material []byte, alg kmip14.CryptographicAlgorithm, bits int32) *msg.Node {
	return msg.Struct(kmip14.TagSymmetricKey, msg.Struct(kmip14.TagKeyBlock,
		msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeRaw)),
		msg.Struct(kmip14.TagKeyValue, msg.Bytes(kmip14.TagKeyMaterial, material)),
		msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(alg)),
		msg.Int(kmip14.TagCryptographicLength, bits)))
}

// getKey runs Get and checks W5/W6 exactly; it returns the key bytes.
func getSymKey(t testing.TB, s *kmipSession, uid string, bits int32) []byte {
	t.Helper()
	p := s.ok(kmip14.OperationGet, framework.UID(uid))
	requireTags(t, "Get payload", p, kmip14.TagObjectType, kmip14.TagUniqueIdentifier, kmip14.TagSymmetricKey)
	if p.Children[0].Int != int64(kmip14.ObjectTypeSymmetricKey) {
		t.Fatalf("Get: object type %v", kmip14.ObjectType(p.Children[0].Int))
	}
	if got := p.Children[1].Bytes; string(got) != uid {
		t.Fatalf("Get: UID %q, want %q byte for byte (W11)", got, uid)
	}
	sk := p.Children[2]
	requireTags(t, "Symmetric Key", sk, kmip14.TagKeyBlock)
	kb := sk.Children[0]
	requireTags(t, "Key Block", kb, kmip14.TagKeyFormatType, kmip14.TagKeyValue, kmip14.TagCryptographicAlgorithm, kmip14.TagCryptographicLength)
	if kb.Children[0].Int != int64(kmip14.KeyFormatTypeRaw) {
		t.Fatalf("Key Format Type %v, want Raw", kmip14.KeyFormatType(kb.Children[0].Int))
	}
	kv := kb.Children[1]
	requireTags(t, "Key Value", kv, kmip14.TagKeyMaterial)
	if kv.Children[0].Type != msg.TypeByteString {
		t.Fatalf("Key Material type %v, want Byte String", kv.Children[0].Type)
	}
	if kb.Children[2].Int != int64(kmip14.CryptographicAlgorithmAES) || kb.Children[3].Int != int64(bits) {
		t.Fatalf("Key Block algorithm %v length %d, want AES %d", kmip14.CryptographicAlgorithm(kb.Children[2].Int), kb.Children[3].Int, bits)
	}
	return kv.Children[0].Bytes
}

// state runs GetAttributes(UID, "State") and checks W10: the same UID byte for byte and
// exactly one Attribute{"State", enum}.
func keyState(t testing.TB, s *kmipSession, uid string) kmip14.State {
	t.Helper()
	p := s.ok(kmip14.OperationGetAttributes, framework.UID(uid), msg.Text(kmip14.TagAttributeName, "State"))
	requireTags(t, "Get Attributes payload", p, kmip14.TagUniqueIdentifier, kmip14.TagAttribute)
	if got := p.Children[0].Bytes; string(got) != uid {
		t.Fatalf("Get Attributes: UID %q, want %q (W10, W11)", got, uid)
	}
	a := p.Children[1]
	requireTags(t, "State attribute", a, kmip14.TagAttributeName, kmip14.TagAttributeValue)
	if a.Children[0].Text() != "State" || a.Children[1].Type != msg.TypeEnumeration {
		t.Fatalf("attribute %q of type %v, want State enumeration", a.Children[0].Text(), a.Children[1].Type)
	}
	return kmip14.State(a.Children[1].Int)
}

// uidOf checks a payload that is exactly one Unique Identifier and returns it.
func uidOf(t testing.TB, what string, p *msg.Node) string {
	t.Helper()
	requireTags(t, what, p, kmip14.TagUniqueIdentifier)
	if p.Children[0].Type != msg.TypeTextString || len(p.Children[0].Bytes) == 0 {
		t.Fatalf("%s: bad Unique Identifier %v", what, p.Children[0])
	}
	return p.Children[0].Text()
}
