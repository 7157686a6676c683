package ops_test

import (
	"bytes"
	"context"
	"path/filepath"
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
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	tok := hsmtest.Token(t)
	st, err := meta.Open(t.Context(), filepath.Join(t.TempDir(), "meta.db"), meta.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	svc := ops.New(ops.Config{Keys: tok, Store: st, RoleOf: func(p *kmip.Peer) ops.Role {
		if p.Identity == "admin" {
			return ops.RoleAdmin
		}
		return ops.RoleClient
	}})
	mux := kmip.NewMux()
	svc.Register(mux)
	return &fixture{t: t, mux: mux, store: st}
}

// call runs one operation as identity in protocol version v.
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

func (f *fixture) now() time.Time { return time.Now() }

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
