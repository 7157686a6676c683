package ops_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm/hsmtest"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/kmip/ops"
	"github.com/hsmkms/hsmkms/meta"
)

// fixture is a Service on the real test token and a real SQLite file, reached through
// a kmip.Mux as the server reaches it.
type fixture struct {
	t     *testing.T
	mux   *kmip.Mux
	store *meta.Store
	skew  atomic.Int64 // added to the wall clock the Service sees (advance)
}

func newFixture(t *testing.T) *fixture { return newPolicyFixture(t, testPolicy()) }

// newPolicyFixture is newFixture with an authorisation policy.
func newPolicyFixture(t *testing.T, pol *ops.Policy) *fixture {
	t.Helper()
	tok := hsmtest.Token(t)
	st, err := meta.Open(t.Context(), filepath.Join(t.TempDir(), "meta.db"), meta.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, mux: kmip.NewMux(), store: st}
	svc := ops.New(ops.Config{Keys: tok, Store: st, Policy: pol, Now: f.now})
	svc.Register(f.mux)
	return f
}

// call runs one operation as identity in protocol version v.
// testPolicy gives the peer named "admin" the built-in admin role and everyone else
// the client role.
func testPolicy() *ops.Policy {
	p, err := ops.NewPolicy(nil, func(p *kmip.Peer) string {
		if p.Identity == "admin" {
			return ops.RoleAdmin
		}
		return ops.RoleClient
	})
	if err != nil {
		panic(err)
	}
	return p
}

func (f *fixture) call(identity string, v msg.Version, op kmip14.Operation, children ...*msg.Node) (*msg.Node, error) {
	ctx := kmip.WithPeer(context.Background(), &kmip.Peer{Identity: identity})
	it := &kmip.Item{Version: v, Operation: uint32(op), Payload: msg.Struct(kmip14.TagRequestPayload, children...)}
	return f.mux.ServeItem(ctx, it)
}

func (f *fixture) must(identity string, v msg.Version, op kmip14.Operation, children ...*msg.Node) *msg.Node {
	f.t.Helper()
	out, err := f.call(identity, v, op, children...)
	if err != nil {
		f.t.Fatalf("%v: %v", op, err)
	}
	return out
}

func wantReason(t *testing.T, err error, want kmip14.ResultReason) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %v", want)
	}
	got, _, _ := kmip.ReasonFor(err)
	if got != want {
		t.Fatalf("got reason %v (%v), want %v", got, err, want)
	}
}

var (
	v10 = msg.Version{Major: 1, Minor: 0}
	v12 = msg.Version{Major: 1, Minor: 2}
	v14 = msg.Version{Major: 1, Minor: 4}
)

func attribute(name string, value *msg.Node) *msg.Node {
	value.Tag = kmip14.TagAttributeValue
	return msg.Struct(kmip14.TagAttribute, msg.Text(kmip14.TagAttributeName, name), value)
}

func nameAttr(name string) *msg.Node {
	return attribute("Name", msg.Struct(0, msg.Text(kmip14.TagNameValue, name),
		msg.Enum(kmip14.TagNameType, uint32(kmip14.NameTypeUninterpretedTextString))))
}

func uidNode(id string) *msg.Node { return msg.Text(kmip14.TagUniqueIdentifier, id) }

func aesTemplate(bits int32, extra ...*msg.Node) *msg.Node {
	t := msg.Struct(kmip14.TagTemplateAttribute,
		attribute("Cryptographic Algorithm", msg.Enum(0, uint32(kmip14.CryptographicAlgorithmAES))),
		attribute("Cryptographic Length", msg.Int(0, bits)),
		attribute("Cryptographic Usage Mask", msg.Int(0, int32(kmip14.CryptographicUsageMaskEncrypt|kmip14.CryptographicUsageMaskDecrypt))))
	t.Children = append(t.Children, extra...)
	return t
}

func (f *fixture) create(identity string, extra ...*msg.Node) string {
	f.t.Helper()
	out := f.must(identity, v12, kmip14.OperationCreate,
		msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)), aesTemplate(256, extra...))
	return out.Child(kmip14.TagUniqueIdentifier).Text()
}

func (f *fixture) state(identity, id string) kmip14.State {
	f.t.Helper()
	out := f.must(identity, v10, kmip14.OperationGetAttributes, uidNode(id), msg.Text(kmip14.TagAttributeName, "State"))
	attrs := out.All(kmip14.TagAttribute)
	if len(attrs) != 1 {
		f.t.Fatalf("Get Attributes(State) returned %d attributes", len(attrs))
	}
	return kmip14.State(attrs[0].Child(kmip14.TagAttributeValue).Int)
}

func keyMaterial(t *testing.T, get *msg.Node) []byte {
	t.Helper()
	obj := get.Child(kmip14.TagSymmetricKey)
	if obj == nil {
		obj = get.Child(kmip14.TagSecretData)
	}
	km := obj.Child(kmip14.TagKeyBlock).Child(kmip14.TagKeyValue).Child(kmip14.TagKeyMaterial)
	if km == nil {
		t.Fatalf("no key material in %v", get)
	}
	if km.Type == msg.TypeStructure {
		return km.Child(kmip14.TagKey).Bytes
	}
	return km.Bytes
}

func TestMongodFirstStart(t *testing.T) {
	f := newFixture(t)
	id := f.create("mongod")
	get := f.must("mongod", v12, kmip14.OperationGet, uidNode(id))
	block := get.Child(kmip14.TagSymmetricKey).Child(kmip14.TagKeyBlock)
	var tags []string
	for _, c := range block.Children {
		tags = append(tags, c.Tag.String())
	}
	want := []string{"KeyFormatType", "KeyValue", "CryptographicAlgorithm", "CryptographicLength"}
	if len(tags) != len(want) {
		t.Fatalf("key block tags %v, want %v", tags, want)
	}
	for i := range want {
		if tags[i] != want[i] {
			t.Fatalf("key block tags %v, want %v", tags, want)
		}
	}
	if kv := block.Child(kmip14.TagKeyValue); len(kv.Children) != 1 || len(kv.Children[0].Bytes) != 32 {
		t.Fatalf("key value must hold only 32 bytes of key material: %+v", kv)
	}
	if st := f.state("mongod", id); st != kmip14.StatePreActive {
		t.Fatalf("state after create %v", st)
	}
	f.must("mongod", v12, kmip14.OperationActivate, uidNode(id))
	if st := f.state("mongod", id); st != kmip14.StateActive {
		t.Fatalf("state after activate %v", st)
	}
	_, err := f.call("mongod", v12, kmip14.OperationActivate, uidNode(id))
	wantReason(t, err, kmip14.ResultReasonPermissionDenied)
}

func TestRegisterGetRoundTrip(t *testing.T) {
	f := newFixture(t)
	aes := bytes.Repeat([]byte{0xA5, 0x5A}, 16)
	seed := bytes.Repeat([]byte{7, 8, 9}, 32)
	tests := []struct {
		name     string
		object   *msg.Node
		typ      kmip14.ObjectType
		material []byte
		format   kmip14.KeyFormatType
	}{
		{"symmetric raw", msg.Struct(kmip14.TagSymmetricKey, msg.Struct(kmip14.TagKeyBlock,
			msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeRaw)),
			msg.Struct(kmip14.TagKeyValue, msg.Bytes(kmip14.TagKeyMaterial, aes)),
			msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(kmip14.CryptographicAlgorithmAES)),
			msg.Int(kmip14.TagCryptographicLength, 256))), kmip14.ObjectTypeSymmetricKey, aes, kmip14.KeyFormatTypeRaw},
		{"symmetric transparent", msg.Struct(kmip14.TagSymmetricKey, msg.Struct(kmip14.TagKeyBlock,
			msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeTransparentSymmetricKey)),
			msg.Struct(kmip14.TagKeyValue, msg.Struct(kmip14.TagKeyMaterial, msg.Bytes(kmip14.TagKey, aes[:16]))),
			msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(kmip14.CryptographicAlgorithmAES)),
			msg.Int(kmip14.TagCryptographicLength, 128))), kmip14.ObjectTypeSymmetricKey, aes[:16], kmip14.KeyFormatTypeTransparentSymmetricKey},
		{"secret data opaque", msg.Struct(kmip14.TagSecretData,
			msg.Enum(kmip14.TagSecretDataType, uint32(kmip14.SecretDataTypeSeed)),
			msg.Struct(kmip14.TagKeyBlock,
				msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeOpaque)),
				msg.Struct(kmip14.TagKeyValue, msg.Bytes(kmip14.TagKeyMaterial, seed)))), kmip14.ObjectTypeSecretData, seed, kmip14.KeyFormatTypeOpaque},
		{"percona base64 text key", msg.Struct(kmip14.TagSymmetricKey, msg.Struct(kmip14.TagKeyBlock,
			msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeRaw)),
			msg.Struct(kmip14.TagKeyValue, msg.Bytes(kmip14.TagKeyMaterial, []byte("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="))),
			msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(kmip14.CryptographicAlgorithmAES)),
			msg.Int(kmip14.TagCryptographicLength, 256))), kmip14.ObjectTypeSymmetricKey, []byte("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="), kmip14.KeyFormatTypeRaw},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// libmongocrypt 1.7 sends an empty Template-Attribute (CLIENTS.md W12).
			reg := f.must("client", v10, kmip14.OperationRegister, msg.Enum(kmip14.TagObjectType, uint32(tc.typ)),
				msg.Struct(kmip14.TagTemplateAttribute), tc.object)
			id := reg.Child(kmip14.TagUniqueIdentifier).Text()
			get := f.must("client", v10, kmip14.OperationGet, uidNode(id))
			if got := keyMaterial(t, get); !bytes.Equal(got, tc.material) {
				t.Fatalf("Get returned %x, registered %x", got, tc.material)
			}
			obj := get.Children[2]
			if ft := obj.Child(kmip14.TagKeyBlock).Child(kmip14.TagKeyFormatType); kmip14.KeyFormatType(ft.Int) != tc.format {
				t.Fatalf("format %v, want %v", kmip14.KeyFormatType(ft.Int), tc.format)
			}
		})
	}
}

func TestEncryptDecrypt(t *testing.T) {
	f := newFixture(t)
	id := f.create("app")
	f.must("app", v12, kmip14.OperationActivate, uidNode(id))
	plain := []byte("sixty-four bytes of audit log that mongod encrypts with its key!")
	params := func(mode kmip14.BlockCipherMode, pad kmip14.PaddingMethod) *msg.Node {
		return msg.Struct(kmip14.TagCryptographicParameters,
			msg.Enum(kmip14.TagBlockCipherMode, uint32(mode)),
			msg.Enum(kmip14.TagPaddingMethod, uint32(pad)),
			msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(kmip14.CryptographicAlgorithmAES)))
	}
	tests := []struct {
		name   string
		params *msg.Node
		ivLen  int
	}{
		{"default parameters are CBC PKCS5 with a server IV", nil, 16},
		{"explicit CBC PKCS5", params(kmip14.BlockCipherModeCBC, kmip14.PaddingMethodPKCS5), 16},
		{"ECB no padding", params(kmip14.BlockCipherModeECB, kmip14.PaddingMethodNone), 0},
		{"CTR", params(kmip14.BlockCipherModeCTR, kmip14.PaddingMethodNone), 16},
		{"GCM", params(kmip14.BlockCipherModeGCM, kmip14.PaddingMethodNone), 12},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc := msg.Struct(0, uidNode(id), tc.params, msg.Bytes(kmip14.TagData, plain))
			out := f.must("app", v14, kmip14.OperationEncrypt, enc.Children...)
			ct := out.Child(kmip14.TagData).Bytes
			if bytes.Equal(ct, plain) || len(ct) < len(plain) {
				t.Fatalf("ciphertext %x", ct)
			}
			iv := out.Child(kmip14.TagIVCounterNonce)
			if tc.ivLen == 0 && iv != nil || tc.ivLen > 0 && (iv == nil || len(iv.Bytes) != tc.ivLen) {
				t.Fatalf("IV %v, want %d bytes", iv, tc.ivLen)
			}
			dec := msg.Struct(0, uidNode(id), tc.params, msg.Bytes(kmip14.TagData, ct))
			if iv != nil {
				dec.Children = append(dec.Children, msg.Bytes(kmip14.TagIVCounterNonce, iv.Bytes))
			}
			if tag := out.Child(kmip14.TagAuthenticatedEncryptionTag); tag != nil {
				dec.Children = append(dec.Children, msg.Bytes(kmip14.TagAuthenticatedEncryptionTag, tag.Bytes))
			}
			got := f.must("app", v14, kmip14.OperationDecrypt, dec.Children...).Child(kmip14.TagData).Bytes
			if !bytes.Equal(got, plain) {
				t.Fatalf("decrypt %q, want %q", got, plain)
			}
		})
	}
	t.Run("tampered CBC ciphertext", func(t *testing.T) {
		out := f.must("app", v12, kmip14.OperationEncrypt, uidNode(id), msg.Bytes(kmip14.TagData, plain))
		ct := out.Child(kmip14.TagData).Bytes
		ct[len(ct)-1] ^= 0xff
		_, err := f.call("app", v12, kmip14.OperationDecrypt, uidNode(id), msg.Bytes(kmip14.TagData, ct), out.Child(kmip14.TagIVCounterNonce))
		wantReason(t, err, kmip14.ResultReasonCryptographicFailure)
	})
	t.Run("pre-active key does not encrypt", func(t *testing.T) {
		pre := f.create("app")
		_, err := f.call("app", v12, kmip14.OperationEncrypt, uidNode(pre), msg.Bytes(kmip14.TagData, plain))
		wantReason(t, err, kmip14.ResultReasonPermissionDenied)
	})
}

func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	id := f.create("app")
	f.must("app", v12, kmip14.OperationActivate, uidNode(id))
	_, err := f.call("app", v12, kmip14.OperationDestroy, uidNode(id))
	wantReason(t, err, kmip14.ResultReasonPermissionDenied)
	_, err = f.call("app", v14, kmip14.OperationModifyAttribute, uidNode(id), attribute("Activation Date", msg.Date(0, f.now())))
	wantReason(t, err, kmip14.ResultReasonPermissionDenied)
	f.must("app", v12, kmip14.OperationRevoke, uidNode(id), msg.Struct(kmip14.TagRevocationReason,
		msg.Enum(kmip14.TagRevocationReasonCode, uint32(kmip14.RevocationReasonCodeCessationOfOperation))))
	if st := f.state("app", id); st != kmip14.StateDeactivated {
		t.Fatalf("state after revoke %v", st)
	}
	f.must("app", v12, kmip14.OperationDestroy, uidNode(id))
	_, err = f.call("app", v12, kmip14.OperationGet, uidNode(id))
	wantReason(t, err, kmip14.ResultReasonItemNotFound)
	if st := f.state("app", id); st != kmip14.StateDestroyed {
		t.Fatalf("state after destroy %v", st)
	}
	all := f.must("app", v14, kmip14.OperationGetAttributes, uidNode(id))
	var names []string
	for _, a := range all.All(kmip14.TagAttribute) {
		names = append(names, a.Child(kmip14.TagAttributeName).Text())
	}
	for _, want := range []string{"Digest", "Destroy Date", "Deactivation Date", "Revocation Reason"} {
		if !contains(names, want) {
			t.Errorf("attributes after destroy %v lack %q", names, want)
		}
	}
	t.Run("compromise", func(t *testing.T) {
		id := f.create("app")
		f.must("app", v12, kmip14.OperationRevoke, uidNode(id),
			msg.Struct(kmip14.TagRevocationReason, msg.Enum(kmip14.TagRevocationReasonCode, uint32(kmip14.RevocationReasonCodeKeyCompromise))),
			msg.Date(kmip14.TagCompromiseOccurrenceDate, f.now()))
		if st := f.state("app", id); st != kmip14.StateCompromised {
			t.Fatalf("state %v", st)
		}
		f.must("app", v12, kmip14.OperationDestroy, uidNode(id))
		if st := f.state("app", id); st != kmip14.StateDestroyedCompromised {
			t.Fatalf("state %v", st)
		}
	})
}

func TestOwnership(t *testing.T) {
	f := newFixture(t)
	id := f.create("alice")
	for _, op := range []kmip14.Operation{kmip14.OperationGet, kmip14.OperationGetAttributes, kmip14.OperationActivate, kmip14.OperationDestroy} {
		_, err := f.call("mallory", v12, op, uidNode(id))
		wantReason(t, err, kmip14.ResultReasonPermissionDenied)
	}
	_, err := f.call("mallory", v12, kmip14.OperationGet, uidNode("no-such-key"))
	wantReason(t, err, kmip14.ResultReasonItemNotFound)
	f.must("admin", v12, kmip14.OperationGet, uidNode(id))
	if err := f.store.Update(t.Context(), func(tx *meta.Tx) error { return tx.Grant(id, "bob") }); err != nil {
		t.Fatal(err)
	}
	f.must("bob", v12, kmip14.OperationGet, uidNode(id))
	loc := f.must("mallory", v12, kmip14.OperationLocate)
	if n := len(loc.All(kmip14.TagUniqueIdentifier)); n != 0 {
		t.Fatalf("mallory locates %d objects of others", n)
	}
}

func TestLocate(t *testing.T) {
	f := newFixture(t)
	a := f.create("ops", nameAttr("alpha"))
	b := f.create("ops", nameAttr("beta"))
	f.must("ops", v12, kmip14.OperationActivate, uidNode(b))
	tests := []struct {
		name    string
		v       msg.Version
		query   []*msg.Node
		want    []string
		located int64 // Located Items expected in the reply; -1: absent
	}{
		{"by name", v12, []*msg.Node{nameAttr("alpha")}, []string{a}, -1},
		{"by state", v12, []*msg.Node{attribute("State", msg.Enum(0, uint32(kmip14.StateActive)))}, []string{b}, -1},
		{"by type newest first", v12, []*msg.Node{attribute("Object Type", msg.Enum(0, uint32(kmip14.ObjectTypeSymmetricKey)))}, []string{b, a}, -1},
		{"maximum items", v12, []*msg.Node{msg.Int(kmip14.TagMaximumItems, 1)}, []string{b}, -1},
		{"by algorithm and length", v12, []*msg.Node{
			attribute("Cryptographic Algorithm", msg.Enum(0, uint32(kmip14.CryptographicAlgorithmAES))),
			attribute("Cryptographic Length", msg.Int(0, 128))}, nil, -1},
		{"1.4 without paging omits located items", v14, []*msg.Node{nameAttr("beta")}, []string{b}, -1},
		{"1.4 paging counts every match", v14, []*msg.Node{msg.Int(kmip14.TagMaximumItems, 1), msg.Int(kmip14.TagOffsetItems, 1)}, []string{a}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := f.must("ops", tc.v, kmip14.OperationLocate, tc.query...)
			var got []string
			for _, n := range out.All(kmip14.TagUniqueIdentifier) {
				got = append(got, n.Text())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
			li := out.Child(kmip14.TagLocatedItems)
			if (tc.located < 0) != (li == nil) || li != nil && li.Int != tc.located {
				t.Fatalf("Located Items %v, want %d", li, tc.located)
			}
		})
	}
}

func TestAttributesFollowVersion(t *testing.T) {
	f := newFixture(t)
	id := f.must("app", v14, kmip14.OperationCreate, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)),
		aesTemplate(256, attribute("Sensitive", msg.Bool(0, true)))).Child(kmip14.TagUniqueIdentifier).Text()
	names := func(v msg.Version) []string {
		var out []string
		for _, a := range f.must("app", v, kmip14.OperationGetAttributes, uidNode(id)).All(kmip14.TagAttribute) {
			out = append(out, a.Child(kmip14.TagAttributeName).Text())
		}
		return out
	}
	if n := names(v10); contains(n, "Sensitive") || contains(n, "Always Sensitive") {
		t.Fatalf("1.0 reply carries 1.4 attributes: %v", n)
	}
	if n := names(v14); !contains(n, "Sensitive") || !contains(n, "Digest") {
		t.Fatalf("1.4 reply lacks attributes: %v", n)
	}
	_, err := f.call("app", v14, kmip14.OperationGet, uidNode(id))
	wantReason(t, err, kmip14.ResultReasonPermissionDenied)
	_, err = f.call("app", v10, kmip14.OperationCreate, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)),
		aesTemplate(256, attribute("Sensitive", msg.Bool(0, true))))
	wantReason(t, err, kmip14.ResultReasonInvalidField)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// now is the Service's clock: the wall clock moved by advance.
func (f *fixture) now() time.Time { return time.Now().Add(time.Duration(f.skew.Load())) }

// advance moves the Service's clock forward by d.
func (f *fixture) advance(d time.Duration) { f.skew.Add(int64(d)) }

// TestReadsSeeWrites polls state (as mongod does) while another client moves the key
// through its lifecycle: every poll sees a state at least as new as the last write
// acknowledged before it started.
func TestReadsSeeWrites(t *testing.T) {
	f := newFixture(t)
	for range 20 {
		id := f.create("app")
		if st := f.state("app", id); st != kmip14.StatePreActive {
			t.Fatalf("state %v", st)
		}
		f.must("app", v12, kmip14.OperationActivate, uidNode(id))
		if st := f.state("app", id); st != kmip14.StateActive {
			t.Fatalf("state after activate %v", st)
		}
		f.must("app", v12, kmip14.OperationRevoke, uidNode(id), msg.Struct(kmip14.TagRevocationReason,
			msg.Enum(kmip14.TagRevocationReasonCode, uint32(kmip14.RevocationReasonCodeSuperseded))))
		if st := f.state("app", id); st != kmip14.StateDeactivated {
			t.Fatalf("state after revoke %v", st)
		}
	}
}

// attrNames lists the attribute names (with index) of a Get Attributes reply.
func attrNames(out *msg.Node) map[string]*msg.Node {
	m := map[string]*msg.Node{}
	for _, a := range out.All(kmip14.TagAttribute) {
		name := a.Child(kmip14.TagAttributeName).Text()
		if i := a.Child(kmip14.TagAttributeIndex); i != nil && i.Int > 0 {
			name = fmt.Sprintf("%s[%d]", name, i.Int)
		}
		m[name] = a.Child(kmip14.TagAttributeValue)
	}
	return m
}

// TestAttributeOperations runs Add, Modify and Delete Attribute, in order, on one key.
func TestAttributeOperations(t *testing.T) {
	f := newFixture(t)
	id := f.create("app", nameAttr("first"))
	text := func(s string) *msg.Node { return msg.Text(0, s) }
	idx := func(a *msg.Node, i int32) *msg.Node {
		a.Children = append(a.Children[:1], append([]*msg.Node{msg.Int(kmip14.TagAttributeIndex, i)}, a.Children[1:]...)...)
		return a
	}
	del := func(name string, i int32) []*msg.Node {
		out := []*msg.Node{uidNode(id), msg.Text(kmip14.TagAttributeName, name)}
		if i >= 0 {
			out = append(out, msg.Int(kmip14.TagAttributeIndex, i))
		}
		return out
	}
	tests := []struct {
		name      string
		op        kmip14.Operation
		payload   []*msg.Node
		wantErr   kmip14.ResultReason // 0: success
		wantIndex int64
	}{
		{"add custom", kmip14.OperationAddAttribute, []*msg.Node{uidNode(id), attribute("x-tag", text("a"))}, 0, 0},
		{"add custom again gets index 1", kmip14.OperationAddAttribute, []*msg.Node{uidNode(id), attribute("x-tag", text("b"))}, 0, 1},
		{"add a second Name", kmip14.OperationAddAttribute, []*msg.Node{uidNode(id), nameAttr("second")}, 0, 1},
		{"add single-valued Contact", kmip14.OperationAddAttribute, []*msg.Node{uidNode(id), attribute("Contact Information", text("joe"))}, 0, 0},
		{"add Contact twice", kmip14.OperationAddAttribute, []*msg.Node{uidNode(id), attribute("Contact Information", text("ann"))}, kmip14.ResultReasonIllegalOperation, 0},
		{"add server-set State", kmip14.OperationAddAttribute, []*msg.Node{uidNode(id), attribute("State", msg.Enum(0, 2))}, kmip14.ResultReasonPermissionDenied, 0},
		{"add with an index", kmip14.OperationAddAttribute, []*msg.Node{uidNode(id), idx(attribute("x-other", text("c")), 3)}, kmip14.ResultReasonInvalidField, 0},
		{"add unknown", kmip14.OperationAddAttribute, []*msg.Node{uidNode(id), attribute("Colour", text("red"))}, kmip14.ResultReasonInvalidField, 0},
		{"add wrong type", kmip14.OperationAddAttribute, []*msg.Node{uidNode(id), attribute("Contact Information", msg.Int(0, 1))}, kmip14.ResultReasonInvalidField, 0},
		{"add usage mask after creation", kmip14.OperationAddAttribute, []*msg.Node{uidNode(id), attribute("Cryptographic Usage Mask", msg.Int(0, 4))}, kmip14.ResultReasonIllegalOperation, 0},
		{"add activation date", kmip14.OperationAddAttribute, []*msg.Node{uidNode(id), attribute("Activation Date", msg.Date(0, f.now().Add(time.Hour)))}, 0, 0},
		{"modify index 1", kmip14.OperationModifyAttribute, []*msg.Node{uidNode(id), idx(attribute("x-tag", text("B")), 1)}, 0, 1},
		{"modify missing index", kmip14.OperationModifyAttribute, []*msg.Node{uidNode(id), idx(attribute("x-tag", text("Z")), 7)}, kmip14.ResultReasonItemNotFound, 0},
		{"modify read-only", kmip14.OperationModifyAttribute, []*msg.Node{uidNode(id), attribute("Cryptographic Length", msg.Int(0, 128))}, kmip14.ResultReasonPermissionDenied, 0},
		{"delete index 0 by default", kmip14.OperationDeleteAttribute, del("x-tag", -1), 0, 0},
		{"delete Name index 1", kmip14.OperationDeleteAttribute, del("Name", 1), 0, 1},
		{"delete missing", kmip14.OperationDeleteAttribute, del("x-tag", 0), kmip14.ResultReasonItemNotFound, 0},
		{"delete non-deletable", kmip14.OperationDeleteAttribute, del("Cryptographic Algorithm", -1), kmip14.ResultReasonPermissionDenied, 0},
	}
	for _, tc := range tests {
		out, err := f.call("app", v14, tc.op, tc.payload...)
		if tc.wantErr != 0 {
			if err == nil {
				t.Errorf("%s: succeeded, want %v", tc.name, tc.wantErr)
				continue
			}
			if got, _, _ := kmip.ReasonFor(err); got != tc.wantErr {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		a := out.Child(kmip14.TagAttribute)
		var gotIndex int64
		if i := a.Child(kmip14.TagAttributeIndex); i != nil {
			gotIndex = i.Int
		}
		if gotIndex != tc.wantIndex {
			t.Errorf("%s: index %d, want %d", tc.name, gotIndex, tc.wantIndex)
		}
	}
	got := attrNames(f.must("app", v14, kmip14.OperationGetAttributes, uidNode(id)))
	for name, want := range map[string]string{"x-tag[1]": "B", "Name": "", "Contact Information": "joe"} {
		v, ok := got[name]
		if !ok || (want != "" && v.Text() != want) {
			t.Errorf("after the edits %s = %v, want %q", name, v, want)
		}
	}
	for _, gone := range []string{"x-tag", "Name[1]"} {
		if _, ok := got[gone]; ok {
			t.Errorf("%s still there after Delete Attribute", gone)
		}
	}
	if _, ok := got["Activation Date"]; !ok {
		t.Error("Add Attribute of Activation Date did not set it")
	}
}

// TestDatesTakeEffect checks that Activation, Deactivation, Process Start and Protect
// Stop Dates set in the future take effect when their time comes, for Get Attributes,
// Locate by State and Encrypt/Decrypt.
func TestDatesTakeEffect(t *testing.T) {
	f := newFixture(t)
	now := f.now()
	id := f.create("app",
		attribute("Activation Date", msg.Date(0, now.Add(time.Hour))),
		attribute("Process Start Date", msg.Date(0, now.Add(2*time.Hour))),
		attribute("Protect Stop Date", msg.Date(0, now.Add(3*time.Hour))),
		attribute("Deactivation Date", msg.Date(0, now.Add(4*time.Hour))))
	byState := func(st kmip14.State) bool {
		out := f.must("app", v12, kmip14.OperationLocate, attribute("State", msg.Enum(0, uint32(st))))
		for _, n := range out.All(kmip14.TagUniqueIdentifier) {
			if n.Text() == id {
				return true
			}
		}
		return false
	}
	enc := func() error {
		_, err := f.call("app", v12, kmip14.OperationEncrypt, uidNode(id), msg.Bytes(kmip14.TagData, make([]byte, 16)))
		return err
	}
	dec := func() error {
		_, err := f.call("app", v12, kmip14.OperationDecrypt, uidNode(id), msg.Bytes(kmip14.TagData, make([]byte, 16)),
			msg.Bytes(kmip14.TagIVCounterNonce, make([]byte, 16)))
		return err
	}
	steps := []struct {
		at           time.Duration
		state        kmip14.State
		encrypt, dec kmip14.ResultReason // 0 success; dec may fail on padding (CryptographicFailure) once allowed
	}{
		{0, kmip14.StatePreActive, kmip14.ResultReasonPermissionDenied, kmip14.ResultReasonPermissionDenied},
		{90 * time.Minute, kmip14.StateActive, 0, kmip14.ResultReasonPermissionDenied},
		{150 * time.Minute, kmip14.StateActive, 0, kmip14.ResultReasonCryptographicFailure},
		{210 * time.Minute, kmip14.StateActive, kmip14.ResultReasonPermissionDenied, kmip14.ResultReasonCryptographicFailure},
		{270 * time.Minute, kmip14.StateDeactivated, kmip14.ResultReasonPermissionDenied, kmip14.ResultReasonCryptographicFailure},
	}
	var elapsed time.Duration
	for _, s := range steps {
		f.advance(s.at - elapsed)
		elapsed = s.at
		if st := f.state("app", id); st != s.state {
			t.Fatalf("at +%v state %v, want %v", s.at, st, s.state)
		}
		if !byState(s.state) {
			t.Errorf("at +%v Locate by State %v misses the key", s.at, s.state)
		}
		for _, c := range []struct {
			name string
			err  error
			want kmip14.ResultReason
		}{{"encrypt", enc(), s.encrypt}, {"decrypt", dec(), s.dec}} {
			got, _, _ := kmip.ReasonFor(c.err)
			if c.err == nil {
				got = 0
			}
			if got != c.want {
				t.Errorf("at +%v %s: %v, want %v", s.at, c.name, c.err, c.want)
			}
		}
	}
}

// TestLocateSkipsDestroyed: a destroyed key is found only by asking for its State.
func TestLocateSkipsDestroyed(t *testing.T) {
	f := newFixture(t)
	id := f.create("app", nameAttr("gone"))
	f.must("app", v12, kmip14.OperationDestroy, uidNode(id))
	if out := f.must("app", v12, kmip14.OperationLocate, nameAttr("gone")); len(out.All(kmip14.TagUniqueIdentifier)) != 0 {
		t.Fatal("Locate by Name found a destroyed key")
	}
	out := f.must("app", v12, kmip14.OperationLocate, nameAttr("gone"), attribute("State", msg.Enum(0, uint32(kmip14.StateDestroyed))))
	if n := out.All(kmip14.TagUniqueIdentifier); len(n) != 1 || n[0].Text() != id {
		t.Fatalf("Locate by State Destroyed: %v", out)
	}
}

func TestCheckLeaseAllocation(t *testing.T) {
	f := newFixture(t)
	id := f.create("app", attribute("Usage Limits", msg.Struct(0,
		msg.Long(kmip14.TagUsageLimitsTotal, 100), msg.Enum(kmip14.TagUsageLimitsUnit, uint32(kmip14.UsageLimitsUnitObject)))))
	pre := f.create("app")
	f.must("app", v12, kmip14.OperationActivate, uidNode(id))
	tests := []struct {
		name    string
		op      kmip14.Operation
		payload []*msg.Node
		wantErr kmip14.ResultReason
	}{
		{"check usage mask allowed", kmip14.OperationCheck, []*msg.Node{uidNode(id), msg.Int(kmip14.TagCryptographicUsageMask, int32(kmip14.CryptographicUsageMaskEncrypt))}, 0},
		{"check usage mask denied", kmip14.OperationCheck, []*msg.Node{uidNode(id), msg.Int(kmip14.TagCryptographicUsageMask, int32(kmip14.CryptographicUsageMaskSign))}, kmip14.ResultReasonPermissionDenied},
		{"check lease too long", kmip14.OperationCheck, []*msg.Node{uidNode(id), msg.Interval(kmip14.TagLeaseTime, 86400)}, kmip14.ResultReasonPermissionDenied},
		{"check usage count", kmip14.OperationCheck, []*msg.Node{uidNode(id), msg.Long(kmip14.TagUsageLimitsCount, 100)}, 0},
		{"allocate 60", kmip14.OperationGetUsageAllocation, []*msg.Node{uidNode(id), msg.Long(kmip14.TagUsageLimitsCount, 60)}, 0},
		{"check count beyond what is left", kmip14.OperationCheck, []*msg.Node{uidNode(id), msg.Long(kmip14.TagUsageLimitsCount, 50)}, kmip14.ResultReasonPermissionDenied},
		{"allocate beyond what is left", kmip14.OperationGetUsageAllocation, []*msg.Node{uidNode(id), msg.Long(kmip14.TagUsageLimitsCount, 41)}, kmip14.ResultReasonPermissionDenied},
		{"allocate on a key without limits", kmip14.OperationGetUsageAllocation, []*msg.Node{uidNode(pre), msg.Long(kmip14.TagUsageLimitsCount, 1)}, kmip14.ResultReasonPermissionDenied},
		{"lease on an active key", kmip14.OperationObtainLease, []*msg.Node{uidNode(id)}, 0},
		{"lease on a pre-active key", kmip14.OperationObtainLease, []*msg.Node{uidNode(pre)}, kmip14.ResultReasonPermissionDenied},
	}
	for _, tc := range tests {
		out, err := f.call("app", v12, tc.op, tc.payload...)
		switch {
		case tc.wantErr == 0 && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != 0 && err == nil:
			t.Errorf("%s: succeeded, want %v", tc.name, tc.wantErr)
		case tc.wantErr != 0:
			if got, _, _ := kmip.ReasonFor(err); got != tc.wantErr {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
			}
		case tc.op == kmip14.OperationObtainLease && out.Child(kmip14.TagLeaseTime) == nil:
			t.Errorf("%s: no Lease Time in %v", tc.name, out)
		}
	}
	// A failed check carries the field that failed it in its payload.
	_, err := f.call("app", v12, kmip14.OperationCheck, uidNode(id), msg.Int(kmip14.TagCryptographicUsageMask, int32(kmip14.CryptographicUsageMaskSign)))
	if ke, ok := err.(*kmip.Error); !ok || ke.Payload.Child(kmip14.TagCryptographicUsageMask) == nil || ke.Payload.Child(kmip14.TagUniqueIdentifier).Text() != id {
		t.Errorf("failed Check: %#v, want a payload naming the usage mask", err)
	}
	ul := attrNames(f.must("app", v14, kmip14.OperationGetAttributes, uidNode(id), msg.Text(kmip14.TagAttributeName, "Usage Limits")))["Usage Limits"]
	if c := ul.Child(kmip14.TagUsageLimitsCount); c == nil || c.Int != 40 {
		t.Fatalf("Usage Limits after allocating 60 of 100: %v", ul)
	}
}

func TestUsageLimitsBytes(t *testing.T) {
	f := newFixture(t)
	id := f.create("app", attribute("Usage Limits", msg.Struct(0,
		msg.Long(kmip14.TagUsageLimitsTotal, 32), msg.Enum(kmip14.TagUsageLimitsUnit, uint32(kmip14.UsageLimitsUnitByte)))))
	f.must("app", v12, kmip14.OperationActivate, uidNode(id))
	for i, want := range []kmip14.ResultReason{0, 0, kmip14.ResultReasonPermissionDenied} {
		_, err := f.call("app", v12, kmip14.OperationEncrypt, uidNode(id), msg.Bytes(kmip14.TagData, make([]byte, 16)))
		if got, _, _ := kmip.ReasonFor(err); (err == nil) != (want == 0) || (err != nil && got != want) {
			t.Fatalf("encrypt %d: %v, want %v", i+1, err, want)
		}
	}
}

func TestReKey(t *testing.T) {
	f := newFixture(t)
	now := f.now()
	old := f.create("app", nameAttr("rotating"),
		attribute("Activation Date", msg.Date(0, now.Add(-time.Hour))),
		attribute("Deactivation Date", msg.Date(0, now.Add(24*time.Hour))),
		attribute("Protect Stop Date", msg.Date(0, now.Add(12*time.Hour))))
	tests := []struct {
		name           string
		offset         *msg.Node
		wantActivation time.Time
		wantDeact      time.Time
		wantState      kmip14.State
	}{
		{"no offset copies the dates", nil, now.Add(-time.Hour), now.Add(24 * time.Hour), kmip14.StateActive},
		{"offset moves the dates", msg.Interval(kmip14.TagOffset, 7200), now.Add(2 * time.Hour), now.Add(27 * time.Hour), kmip14.StatePreActive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := f.create("app", nameAttr("k-"+tc.name),
				attribute("Activation Date", msg.Date(0, now.Add(-time.Hour))),
				attribute("Deactivation Date", msg.Date(0, now.Add(24*time.Hour))))
			p := []*msg.Node{uidNode(src)}
			if tc.offset != nil {
				p = append(p, tc.offset)
			}
			nu := f.must("app", v12, kmip14.OperationReKey, p...).Child(kmip14.TagUniqueIdentifier).Text()
			na := attrNames(f.must("app", v14, kmip14.OperationGetAttributes, uidNode(nu)))
			if d := na["Activation Date"].Time().Sub(tc.wantActivation); d < -5*time.Second || d > 5*time.Second {
				t.Errorf("Activation Date %v, want %v", na["Activation Date"].Time(), tc.wantActivation)
			}
			if d := na["Deactivation Date"].Time().Sub(tc.wantDeact); d < -5*time.Second || d > 5*time.Second {
				t.Errorf("Deactivation Date %v, want %v", na["Deactivation Date"].Time(), tc.wantDeact)
			}
			if st := kmip14.State(na["State"].Int); st != tc.wantState {
				t.Errorf("new key state %v, want %v", st, tc.wantState)
			}
			if l := na["Link"]; l == nil || kmip14.LinkType(l.Child(kmip14.TagLinkType).Int) != kmip14.LinkTypeReplacedObjectLink ||
				l.Child(kmip14.TagLinkedObjectIdentifier).Text() != src {
				t.Errorf("new key Link %v, want Replaced Object Link to %s", l, src)
			}
			if nv := na["Name"].Child(kmip14.TagNameValue).Text(); nv != "k-"+tc.name {
				t.Errorf("new key Name %q", nv)
			}
			oa := attrNames(f.must("app", v14, kmip14.OperationGetAttributes, uidNode(src)))
			if _, ok := oa["Name"]; ok {
				t.Error("the old key kept its Name")
			}
			if l := oa["Link"]; l == nil || kmip14.LinkType(l.Child(kmip14.TagLinkType).Int) != kmip14.LinkTypeReplacementObjectLink ||
				l.Child(kmip14.TagLinkedObjectIdentifier).Text() != nu {
				t.Errorf("old key Link %v, want Replacement Object Link to %s", l, nu)
			}
			if st := kmip14.State(oa["State"].Int); st != kmip14.StateActive {
				t.Errorf("old key state %v, want Active (unchanged)", st)
			}
		})
	}
	// Dates in the request's template replace the copied ones.
	later := now.Add(48 * time.Hour)
	nu := f.must("app", v12, kmip14.OperationReKey, uidNode(old), msg.Struct(kmip14.TagTemplateAttribute,
		attribute("Protect Stop Date", msg.Date(0, later)))).Child(kmip14.TagUniqueIdentifier).Text()
	if d := attrNames(f.must("app", v14, kmip14.OperationGetAttributes, uidNode(nu)))["Protect Stop Date"]; d == nil || !d.Time().Equal(later.Truncate(time.Second)) {
		t.Errorf("Protect Stop Date of the replacement %v, want %v", d, later)
	}
	secret := f.must("app", v12, kmip14.OperationRegister, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSecretData)),
		msg.Struct(kmip14.TagTemplateAttribute), msg.Struct(kmip14.TagSecretData, msg.Enum(kmip14.TagSecretDataType, uint32(kmip14.SecretDataTypePassword)),
			msg.Struct(kmip14.TagKeyBlock, msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeOpaque)),
				msg.Struct(kmip14.TagKeyValue, msg.Bytes(kmip14.TagKeyMaterial, []byte("pw")))))).Child(kmip14.TagUniqueIdentifier).Text()
	_, err := f.call("app", v12, kmip14.OperationReKey, uidNode(secret))
	wantReason(t, err, kmip14.ResultReasonInvalidField)
}

func TestMAC(t *testing.T) {
	f := newFixture(t)
	hkey := bytes.Repeat([]byte{7}, 32)
	data := []byte("message to authenticate")
	reg := func(alg kmip14.CryptographicAlgorithm, key []byte) string {
		return f.must("app", v12, kmip14.OperationRegister, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)),
			msg.Struct(kmip14.TagTemplateAttribute,
				attribute("Cryptographic Usage Mask", msg.Int(0, int32(kmip14.CryptographicUsageMaskMACGenerate|kmip14.CryptographicUsageMaskMACVerify))),
				attribute("Activation Date", msg.Date(0, f.now().Add(-time.Minute)))),
			msg.Struct(kmip14.TagSymmetricKey, msg.Struct(kmip14.TagKeyBlock, msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeRaw)),
				msg.Struct(kmip14.TagKeyValue, msg.Bytes(kmip14.TagKeyMaterial, key)),
				msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(alg)), msg.Int(kmip14.TagCryptographicLength, int32(len(key)*8))))).
			Child(kmip14.TagUniqueIdentifier).Text()
	}
	hmacKey := reg(kmip14.CryptographicAlgorithmHMAC_SHA256, hkey)
	aesKey := reg(kmip14.CryptographicAlgorithmAES, bytes.Repeat([]byte{9}, 16))
	created := f.must("app", v12, kmip14.OperationCreate, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)),
		msg.Struct(kmip14.TagTemplateAttribute,
			attribute("Cryptographic Algorithm", msg.Enum(0, uint32(kmip14.CryptographicAlgorithmHMAC_SHA512))),
			attribute("Cryptographic Usage Mask", msg.Int(0, int32(kmip14.CryptographicUsageMaskMACGenerate))),
			attribute("Activation Date", msg.Date(0, f.now().Add(-time.Minute))))).Child(kmip14.TagUniqueIdentifier).Text()
	want := hmac.New(sha256.New, hkey)
	want.Write(data)
	params := func(alg kmip14.CryptographicAlgorithm) *msg.Node {
		return msg.Struct(kmip14.TagCryptographicParameters, msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(alg)))
	}
	tests := []struct {
		name    string
		id      string
		params  *msg.Node
		wantLen int
		want    []byte
		wantErr kmip14.ResultReason
	}{
		{"HMAC-SHA256 from the key's algorithm", hmacKey, nil, 32, want.Sum(nil), 0},
		{"HMAC-SHA256 named", hmacKey, params(kmip14.CryptographicAlgorithmHMAC_SHA256), 32, want.Sum(nil), 0},
		{"AES-CMAC", aesKey, nil, 16, nil, 0},
		{"created HMAC-SHA512 key", created, nil, 64, nil, 0},
		{"HMAC with an AES key", aesKey, params(kmip14.CryptographicAlgorithmHMAC_SHA1), 0, nil, kmip14.ResultReasonInvalidField},
		{"unsupported HMAC-MD5", hmacKey, params(kmip14.CryptographicAlgorithmHMAC_MD5), 0, nil, kmip14.ResultReasonInvalidField},
	}
	for _, tc := range tests {
		p := []*msg.Node{uidNode(tc.id), msg.Bytes(kmip14.TagData, data)}
		if tc.params != nil {
			p = append(p, tc.params)
		}
		out, err := f.call("app", v12, kmip14.OperationMAC, p...)
		if tc.wantErr != 0 {
			if got, _, _ := kmip.ReasonFor(err); err == nil || got != tc.wantErr {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		mac := out.Child(kmip14.TagMACData).Bytes
		if len(mac) != tc.wantLen || (tc.want != nil && !bytes.Equal(mac, tc.want)) {
			t.Errorf("%s: MAC %x", tc.name, mac)
		}
		if tc.id == created {
			continue // no MAC Verify in its usage mask
		}
		for _, v := range []struct {
			mac  []byte
			want kmip14.ValidityIndicator
		}{{mac, kmip14.ValidityIndicatorValid}, {append([]byte{mac[0] ^ 0x80}, mac[1:]...), kmip14.ValidityIndicatorInvalid}} {
			out := f.must("app", v12, kmip14.OperationMACVerify, append(p, msg.Bytes(kmip14.TagMACData, v.mac))...)
			if got := kmip14.ValidityIndicator(out.Child(kmip14.TagValidityIndicator).Int); got != v.want {
				t.Errorf("%s: MAC Verify %v, want %v", tc.name, got, v.want)
			}
		}
	}
	_, err := f.call("app", v12, kmip14.OperationMACVerify, uidNode(created), msg.Bytes(kmip14.TagData, data), msg.Bytes(kmip14.TagMACData, make([]byte, 64)))
	wantReason(t, err, kmip14.ResultReasonPermissionDenied)
}

func TestRNGRetrieve(t *testing.T) {
	f := newFixture(t)
	a := f.must("app", v14, kmip14.OperationRNGRetrieve, msg.Int(kmip14.TagDataLength, 32)).Child(kmip14.TagData).Bytes
	b := f.must("app", v14, kmip14.OperationRNGRetrieve, msg.Int(kmip14.TagDataLength, 32)).Child(kmip14.TagData).Bytes
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Fatalf("random bytes %x, %x", a, b)
	}
	_, err := f.call("app", v14, kmip14.OperationRNGRetrieve, msg.Int(kmip14.TagDataLength, 0))
	wantReason(t, err, kmip14.ResultReasonInvalidField)
	_, err = f.call("app", v14, kmip14.OperationRNGSeed, msg.Bytes(kmip14.TagData, []byte("seed")))
	wantReason(t, err, kmip14.ResultReasonOperationNotSupported)
}

func TestCreateAlgorithms(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		alg     kmip14.CryptographicAlgorithm
		bits    int32
		wantLen int
		wantErr bool
	}{
		{kmip14.CryptographicAlgorithmAES, 128, 16, false},
		{kmip14.CryptographicAlgorithmDES3, 168, 24, false},
		{kmip14.CryptographicAlgorithmHMAC_SHA256, 256, 32, false},
		{kmip14.CryptographicAlgorithmHMAC_SHA1, 0, 24, false},
		{kmip14.CryptographicAlgorithmAES, 100, 0, true},
		{kmip14.CryptographicAlgorithmDES, 56, 0, true},
		{kmip14.CryptographicAlgorithmHMAC_SHA256, 260, 0, true},
	}
	for _, tc := range tests {
		tmpl := msg.Struct(kmip14.TagTemplateAttribute,
			attribute("Cryptographic Algorithm", msg.Enum(0, uint32(tc.alg))),
			attribute("Cryptographic Usage Mask", msg.Int(0, int32(kmip14.CryptographicUsageMaskMACGenerate))))
		if tc.bits != 0 {
			tmpl.Children = append(tmpl.Children, attribute("Cryptographic Length", msg.Int(0, tc.bits)))
		}
		out, err := f.call("app", v12, kmip14.OperationCreate, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)), tmpl)
		if tc.wantErr {
			wantReason(t, err, kmip14.ResultReasonInvalidField)
			continue
		}
		if err != nil {
			t.Fatalf("%v/%d: %v", tc.alg, tc.bits, err)
		}
		get := f.must("app", v12, kmip14.OperationGet, uidNode(out.Child(kmip14.TagUniqueIdentifier).Text()))
		if km := keyMaterial(t, get); len(km) != tc.wantLen {
			t.Errorf("%v/%d: %d bytes of key material, want %d", tc.alg, tc.bits, len(km), tc.wantLen)
		}
	}
}

// TestTransparentDigest follows TC-181: the Digest of a key registered as a
// Transparent Symmetric Key is over the TTLV Key Material structure.
func TestTransparentDigest(t *testing.T) {
	f := newFixture(t)
	key := bytes.Repeat([]byte{0x11}, 32)
	id := f.must("app", v12, kmip14.OperationRegister, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)),
		msg.Struct(kmip14.TagTemplateAttribute, attribute("Cryptographic Usage Mask", msg.Int(0, 12))),
		msg.Struct(kmip14.TagSymmetricKey, msg.Struct(kmip14.TagKeyBlock,
			msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeTransparentSymmetricKey)),
			msg.Struct(kmip14.TagKeyValue, msg.Struct(kmip14.TagKeyMaterial, msg.Bytes(kmip14.TagKey, key))),
			msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(kmip14.CryptographicAlgorithmAES)), msg.Int(kmip14.TagCryptographicLength, 256)))).
		Child(kmip14.TagUniqueIdentifier).Text()
	d := attrNames(f.must("app", v12, kmip14.OperationGetAttributes, uidNode(id), msg.Text(kmip14.TagAttributeName, "Digest")))["Digest"]
	want := sha256.Sum256(msg.Struct(kmip14.TagKeyMaterial, msg.Bytes(kmip14.TagKey, key)).Append(nil))
	if !bytes.Equal(d.Child(kmip14.TagDigestValue).Bytes, want[:]) ||
		kmip14.KeyFormatType(d.Child(kmip14.TagKeyFormatType).Int) != kmip14.KeyFormatTypeTransparentSymmetricKey {
		t.Fatalf("Digest %v", d)
	}
}

func TestTemplates(t *testing.T) {
	f := newFixture(t)
	tmpl := f.must("app", v10, kmip14.OperationRegister, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeTemplate)),
		msg.Struct(kmip14.TagTemplateAttribute), msg.Struct(kmip14.TagTemplate, nameAttr("tmpl-1"),
			attribute("Contact Information", msg.Text(0, "joe")), attribute("x-purpose", msg.Text(0, "demo")),
			attribute("Cryptographic Algorithm", msg.Enum(0, uint32(kmip14.CryptographicAlgorithmAES))),
			attribute("Cryptographic Length", msg.Int(0, 128)))).Child(kmip14.TagUniqueIdentifier).Text()
	name := msg.Struct(kmip14.TagName, msg.Text(kmip14.TagNameValue, "tmpl-1"), msg.Enum(kmip14.TagNameType, uint32(kmip14.NameTypeUninterpretedTextString)))
	id := f.must("app", v10, kmip14.OperationCreate, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)),
		msg.Struct(kmip14.TagTemplateAttribute, name, attribute("Cryptographic Length", msg.Int(0, 256)),
			attribute("Cryptographic Usage Mask", msg.Int(0, 12)))).Child(kmip14.TagUniqueIdentifier).Text()
	got := attrNames(f.must("app", v10, kmip14.OperationGetAttributes, uidNode(id)))
	if got["Contact Information"].Text() != "joe" || got["x-purpose"].Text() != "demo" || got["Cryptographic Length"].Int != 256 {
		t.Fatalf("attributes from the template: %v", got)
	}
	if _, ok := got["Name"]; ok {
		t.Fatal("the key took the template's Name")
	}
	f.must("app", v10, kmip14.OperationDestroy, uidNode(tmpl))
	_, err := f.call("app", v10, kmip14.OperationCreate, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)),
		msg.Struct(kmip14.TagTemplateAttribute, name))
	wantReason(t, err, kmip14.ResultReasonItemNotFound)
}

// TestStreamedGCM encrypts in two parts and checks the result is the one-shot one.
func TestStreamedGCM(t *testing.T) {
	f := newFixture(t)
	id := f.create("app", attribute("Activation Date", msg.Date(0, f.now().Add(-time.Minute))))
	iv := bytes.Repeat([]byte{1}, 12)
	gcm := msg.Struct(kmip14.TagCryptographicParameters, msg.Enum(kmip14.TagBlockCipherMode, uint32(kmip14.BlockCipherModeGCM)))
	data := bytes.Repeat([]byte("0123456789abcdef"), 3)
	whole := f.must("app", v14, kmip14.OperationEncrypt, uidNode(id), gcm, msg.Bytes(kmip14.TagData, data), msg.Bytes(kmip14.TagIVCounterNonce, iv))
	first := f.must("app", v14, kmip14.OperationEncrypt, uidNode(id), gcm, msg.Bytes(kmip14.TagData, data[:20]),
		msg.Bytes(kmip14.TagIVCounterNonce, iv), msg.Bool(kmip14.TagInitIndicator, true))
	corr := first.Child(kmip14.TagCorrelationValue)
	if corr == nil {
		t.Fatalf("no Correlation Value in %v", first)
	}
	// Another identity cannot continue the stream, nor learn that it exists.
	_, err := f.call("mallory", v14, kmip14.OperationEncrypt, uidNode(id), msg.Bytes(kmip14.TagData, data[20:]), corr)
	wantReason(t, err, kmip14.ResultReasonItemNotFound)
	last := f.must("app", v14, kmip14.OperationEncrypt, uidNode(id), msg.Bytes(kmip14.TagData, data[20:]), corr, msg.Bool(kmip14.TagFinalIndicator, true))
	got := append(append([]byte{}, first.Child(kmip14.TagData).Bytes...), last.Child(kmip14.TagData).Bytes...)
	if !bytes.Equal(got, whole.Child(kmip14.TagData).Bytes) ||
		!bytes.Equal(last.Child(kmip14.TagAuthenticatedEncryptionTag).Bytes, whole.Child(kmip14.TagAuthenticatedEncryptionTag).Bytes) {
		t.Fatalf("streamed %x, one-shot %x", got, whole.Child(kmip14.TagData).Bytes)
	}
	_, err = f.call("app", v14, kmip14.OperationEncrypt, uidNode(id), msg.Bytes(kmip14.TagData, data), corr, msg.Bool(kmip14.TagFinalIndicator, true))
	wantReason(t, err, kmip14.ResultReasonItemNotFound)
	// Decrypt in two parts: the plaintext comes with the Final part.
	d1 := f.must("app", v14, kmip14.OperationDecrypt, uidNode(id), gcm, msg.Bytes(kmip14.TagData, got[:30]),
		msg.Bytes(kmip14.TagIVCounterNonce, iv), msg.Bool(kmip14.TagInitIndicator, true))
	d2 := f.must("app", v14, kmip14.OperationDecrypt, uidNode(id), msg.Bytes(kmip14.TagData, got[30:]), d1.Child(kmip14.TagCorrelationValue),
		msg.Bool(kmip14.TagFinalIndicator, true), whole.Child(kmip14.TagAuthenticatedEncryptionTag))
	if !bytes.Equal(d2.Child(kmip14.TagData).Bytes, data) {
		t.Fatalf("streamed decrypt %x", d2.Child(kmip14.TagData).Bytes)
	}
}

func TestQueryFollowsMux(t *testing.T) {
	f := newFixture(t)
	q := func(v msg.Version, fns ...kmip14.QueryFunction) *msg.Node {
		var p []*msg.Node
		for _, fn := range fns {
			p = append(p, msg.Enum(kmip14.TagQueryFunction, uint32(fn)))
		}
		return f.must("app", v, kmip14.OperationQuery, p...)
	}
	ops14 := map[kmip14.Operation]bool{}
	for _, n := range q(v14, kmip14.QueryFunctionQueryOperations).All(kmip14.TagOperation) {
		ops14[kmip14.Operation(n.Int)] = true
	}
	for _, op := range f.mux.Operations() {
		if !ops14[kmip14.Operation(op)] {
			t.Errorf("1.4 Query lacks registered %v", kmip14.Operation(op))
		}
	}
	if len(ops14) != len(f.mux.Operations()) {
		t.Errorf("1.4 Query reports %d operations, %d registered", len(ops14), len(f.mux.Operations()))
	}
	for _, n := range q(v10, kmip14.QueryFunctionQueryOperations).All(kmip14.TagOperation) {
		switch op := kmip14.Operation(n.Int); op {
		case kmip14.OperationEncrypt, kmip14.OperationMAC, kmip14.OperationRNGRetrieve, kmip14.OperationDiscoverVersions:
			t.Errorf("1.0 Query reports %v", op)
		}
	}
	if ops14[kmip14.OperationRNGSeed] || ops14[kmip14.OperationArchive] || ops14[kmip14.OperationRecover] {
		t.Error("Query reports an operation the server refuses")
	}
	// Archive and Recover are refused as unsupported: objects never leave the store.
	for _, op := range []kmip14.Operation{kmip14.OperationArchive, kmip14.OperationRecover} {
		_, err := f.call("app", v14, op, uidNode("any"))
		wantReason(t, err, kmip14.ResultReasonOperationNotSupported)
	}
	for _, tc := range []struct {
		v    msg.Version
		want bool
	}{{v12, false}, {v14, true}} {
		out := q(tc.v, kmip14.QueryFunctionQueryCapabilities, kmip14.QueryFunctionQueryProfiles)
		if got := out.Child(kmip14.TagCapabilityInformation) != nil && out.Child(kmip14.TagProfileInformation) != nil; got != tc.want {
			t.Errorf("%v: capability and profile information %v, want %v", tc.v, got, tc.want)
		}
	}
	if si := q(v12, kmip14.QueryFunctionQueryServerInformation); si.Child(kmip14.TagVendorIdentification) == nil {
		t.Error("no Vendor Identification")
	}
}

func TestPolicy(t *testing.T) {
	cert := func(cn string, issuer string, ou string, dns ...string) *x509.Certificate {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: []string{"Example"}}, Issuer: pkix.Name{CommonName: issuer}, DNSNames: dns}
		if ou != "" {
			c.Subject.OrganizationalUnit = []string{ou}
		}
		return c
	}
	peers := map[string]*kmip.Peer{
		"alice":   {Identity: "alice", Cert: cert("alice", "hsmkms CA", "")},
		"root":    {Identity: "root", Cert: cert("root", "hsmkms CA", "hsmkms-admin")},
		"aud":     {Identity: "aud", Cert: cert("aud", "hsmkms CA", "")},
		"enc":     {Identity: "enc", Cert: cert("enc", "hsmkms CA", "", "app.example.com")},
		"partner": {Identity: "partner", Cert: cert("partner", "Partner CA", "")},
		"ops-1":   {Identity: "ops-1", Cert: cert("ops-1", "hsmkms CA", "")},
	}
	pol, err := ops.NewPolicy([]ops.RoleSpec{
		{Name: "auditor", Operations: []string{"Get Attributes", "GetAttributeList", "Locate"}, AllObjects: true, Subjects: []string{"CN=aud,O=Example"}},
		{Name: "encryptor", Operations: []string{"Encrypt", "Decrypt"}, SANs: []string{"app.example.com"}},
		{Name: "partner", Operations: []string{"*"}, Issuers: []string{"Partner CA"}},
		{Name: "ops", Operations: []string{"*"}, AllObjects: true, Identities: []string{"ops-1"}},
	}, func(p *kmip.Peer) string {
		if p.Cert != nil && len(p.Cert.Subject.OrganizationalUnit) > 0 && p.Cert.Subject.OrganizationalUnit[0] == "hsmkms-admin" {
			return ops.RoleAdmin
		}
		return ops.RoleClient
	})
	if err != nil {
		t.Fatal(err)
	}
	for who, want := range map[string]string{"alice": "client", "root": "admin", "aud": "auditor", "enc": "encryptor", "partner": "partner", "ops-1": "ops"} {
		if got := pol.RoleOf(peers[who]); got != want {
			t.Errorf("RoleOf(%s) = %q, want %q", who, got, want)
		}
	}
	if got := pol.RoleOf(nil); got != ops.RoleClient {
		t.Errorf("RoleOf(nil) = %q", got)
	}

	f := newPolicyFixture(t, pol)
	call := func(who string, op kmip14.Operation, p ...*msg.Node) (*msg.Node, error) {
		ctx := kmip.WithPeer(context.Background(), peers[who])
		return f.mux.ServeItem(ctx, &kmip.Item{Version: v14, Operation: uint32(op), Payload: msg.Struct(kmip14.TagRequestPayload, p...)})
	}
	out, err := call("alice", kmip14.OperationCreate, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)),
		aesTemplate(128, attribute("Activation Date", msg.Date(0, f.now().Add(-time.Minute)))))
	if err != nil {
		t.Fatal(err)
	}
	key := out.Child(kmip14.TagUniqueIdentifier).Text()
	data := msg.Bytes(kmip14.TagData, make([]byte, 16))
	tests := []struct {
		who     string
		op      kmip14.Operation
		payload []*msg.Node
		grant   bool // grant the key to who first
		want    kmip14.ResultReason
	}{
		{"alice", kmip14.OperationGet, []*msg.Node{uidNode(key)}, false, 0},
		{"root", kmip14.OperationGet, []*msg.Node{uidNode(key)}, false, 0},
		{"aud", kmip14.OperationGetAttributes, []*msg.Node{uidNode(key)}, false, 0},
		{"aud", kmip14.OperationGet, []*msg.Node{uidNode(key)}, false, kmip14.ResultReasonPermissionDenied},
		{"aud", kmip14.OperationDestroy, []*msg.Node{uidNode(key)}, false, kmip14.ResultReasonPermissionDenied},
		{"aud", kmip14.OperationQuery, []*msg.Node{msg.Enum(kmip14.TagQueryFunction, uint32(kmip14.QueryFunctionQueryOperations))}, false, 0},
		{"aud", kmip14.OperationDiscoverVersions, nil, false, 0},
		{"enc", kmip14.OperationEncrypt, []*msg.Node{uidNode(key), data}, false, kmip14.ResultReasonPermissionDenied},
		{"enc", kmip14.OperationEncrypt, []*msg.Node{uidNode(key), data}, true, 0},
		{"enc", kmip14.OperationGet, []*msg.Node{uidNode(key)}, true, kmip14.ResultReasonPermissionDenied},
		{"enc", kmip14.OperationCreate, []*msg.Node{msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)), aesTemplate(128)}, false, kmip14.ResultReasonPermissionDenied},
		{"partner", kmip14.OperationGet, []*msg.Node{uidNode(key)}, false, kmip14.ResultReasonPermissionDenied},
		{"partner", kmip14.OperationCreate, []*msg.Node{msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)), aesTemplate(128)}, false, 0},
		{"partner", kmip14.OperationGet, []*msg.Node{uidNode(key)}, true, 0},
		{"ops-1", kmip14.OperationGet, []*msg.Node{uidNode(key)}, false, 0},
	}
	for _, tc := range tests {
		if tc.grant {
			if err := f.store.Update(t.Context(), func(tx *meta.Tx) error { return tx.Grant(key, tc.who) }); err != nil {
				t.Fatal(err)
			}
		}
		_, err := call(tc.who, tc.op, tc.payload...)
		got, _, _ := kmip.ReasonFor(err)
		if err == nil {
			got = 0
		}
		if got != tc.want {
			t.Errorf("%s %v (granted %v): %v, want %v", tc.who, tc.op, tc.grant, err, tc.want)
		}
	}
	loc, err := call("aud", kmip14.OperationLocate)
	if err != nil || len(loc.All(kmip14.TagUniqueIdentifier)) != 2 {
		t.Errorf("auditor Locate: %v, %v; want every object", loc, err)
	}

	for _, bad := range [][]ops.RoleSpec{
		{{Name: "x", Operations: []string{"Teleport"}}},
		{{Name: "x", Operations: []string{"*"}}, {Name: "x", Operations: []string{"*"}}},
		{{Operations: []string{"*"}}},
	} {
		if _, err := ops.NewPolicy(bad, nil); err == nil {
			t.Errorf("NewPolicy(%+v) accepted", bad)
		}
	}
}
