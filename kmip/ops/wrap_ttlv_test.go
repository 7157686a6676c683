package ops_test

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// aesUnwrap inverts RFC 3394's W with a software AES and returns the integrity value
// A and the plaintext; the caller checks A for RFC 3394 or RFC 5649.
func aesUnwrap(t *testing.T, kek, blob []byte) (a []byte, plain []byte) {
	t.Helper()
	c, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	if len(blob)%8 != 0 || len(blob) < 24 {
		t.Fatalf("wrapped blob of %d bytes", len(blob))
	}
	a, r := bytes.Clone(blob[:8]), bytes.Clone(blob[8:])
	n := len(r) / 8
	b := make([]byte, 16)
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			binary.BigEndian.PutUint64(b, binary.BigEndian.Uint64(a)^uint64(n*j+i))
			copy(b[8:], r[8*(i-1):8*i])
			c.Decrypt(b, b)
			copy(a, b[:8])
			copy(r[8*(i-1):], b[8:])
		}
	}
	return a, r
}

// decodeKeyValue checks that b is exactly one TTLV Key Value structure and returns it.
func decodeKeyValue(t *testing.T, b []byte) *msg.Node {
	t.Helper()
	kv, err := msg.Decode(b)
	if err != nil || kv.Tag != kmip14.TagKeyValue || kv.Type != msg.TypeStructure || kv.Size() != len(b) {
		t.Fatalf("wrapped bytes are not a TTLV Key Value (%v): %x", err, b)
	}
	return kv
}

// TestKeyWrappingTTLV covers Get with Encoding Option TTLV Encoding: the wrapped bytes
// are the Key Value structure with the named attributes, under AES key wrap (computed
// block by block by the token) or RSA-OAEP; and the refusals around it.
func TestKeyWrappingTTLV(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	kekBytes, keyBytes := make([]byte, 32), make([]byte, 32)
	rand.Read(kekBytes)
	rand.Read(keyBytes)
	aesObj := func(b []byte) *msg.Node {
		return keyObject(kmip14.TagSymmetricKey, kmip14.KeyFormatTypeRaw, msg.Bytes(0, b), kmip14.CryptographicAlgorithmAES)
	}
	kek := register(f, kmip14.ObjectTypeSymmetricKey, aesObj(kekBytes), usage(useWrap|useUnwrap), activeNow())
	target := register(f, kmip14.ObjectTypeSymmetricKey, aesObj(keyBytes), usage(useEnc|useDec), nameAttr("ttlv-target"))
	sensitive := register(f, kmip14.ObjectTypeSymmetricKey, aesObj(keyBytes), usage(useEnc),
		attribute("Sensitive", msg.Bool(0, true)))
	rsaPrv, rsaPub := f.keyPair(kmip14.CryptographicAlgorithmRSA, 2048, useUnwrap|useDec, useWrap)
	ecPrv, _ := f.keyPair(kmip14.CryptographicAlgorithmEC, 256, useSign, useVerify)
	ttlvOpt := msg.Enum(kmip14.TagEncodingOption, uint32(kmip14.EncodingOptionTTLVEncoding))
	names := func(n ...string) []*msg.Node {
		out := []*msg.Node{ttlvOpt}
		for _, s := range n {
			out = append(out, msg.Text(kmip14.TagAttributeName, s))
		}
		return out
	}
	mode := func(m kmip14.BlockCipherMode) *msg.Node {
		return sigParams(msg.Enum(kmip14.TagBlockCipherMode, uint32(m)))
	}
	oaep := sigParams(msg.Enum(kmip14.TagPaddingMethod, uint32(kmip14.PaddingMethodOAEP)),
		msg.Enum(kmip14.TagHashingAlgorithm, uint32(kmip14.HashingAlgorithmSHA_1)))
	kwIV := []byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}

	get := func(t *testing.T, id string, spec *msg.Node, typ kmip14.ObjectType) []byte {
		t.Helper()
		f.t = t
		out := f.must("client", v14, kmip14.OperationGet, uidNode(id), spec)
		block := out.Child(objTag(typ)).Child(kmip14.TagKeyBlock)
		kwd := block.Child(kmip14.TagKeyWrappingData)
		if e := kwd.Child(kmip14.TagEncodingOption); e == nil || kmip14.EncodingOption(e.Int) != kmip14.EncodingOptionTTLVEncoding {
			t.Fatalf("Key Wrapping Data does not say TTLV Encoding: %v", kwd)
		}
		kv := block.Child(kmip14.TagKeyValue)
		if kv.Type != msg.TypeByteString {
			t.Fatalf("wrapped Key Value %v", kv)
		}
		return kv.Bytes
	}

	t.Run("AES key wrap with attributes", func(t *testing.T) {
		blob := get(t, target, kws(kek, mode(kmip14.BlockCipherModeNISTKeyWrap), names("Name", "Cryptographic Usage Mask", "Unknown")...), kmip14.ObjectTypeSymmetricKey)
		a, plain := aesUnwrap(t, kekBytes, blob)
		if !bytes.Equal(a, kwIV) {
			t.Fatalf("RFC 3394 integrity check failed: A = %x", a)
		}
		kv := decodeKeyValue(t, plain)
		if km := kv.Child(kmip14.TagKeyMaterial); km == nil || !bytes.Equal(km.Bytes, keyBytes) {
			t.Fatalf("Key Material is not the key")
		}
		got := map[string]*msg.Node{}
		for _, at := range kv.All(kmip14.TagAttribute) {
			got[at.Child(kmip14.TagAttributeName).Text()] = at.Child(kmip14.TagAttributeValue)
		}
		if len(got) != 2 || got["Name"].Child(kmip14.TagNameValue).Text() != "ttlv-target" ||
			got["Cryptographic Usage Mask"].Int != int64(useEnc|useDec) {
			t.Fatalf("wrapped attributes %v", got)
		}
	})
	t.Run("AES key wrap with padding, no attributes", func(t *testing.T) {
		blob := get(t, target, kws(kek, mode(kmip14.BlockCipherModeAESKeyWrapPadding), ttlvOpt), kmip14.ObjectTypeSymmetricKey)
		a, plain := aesUnwrap(t, kekBytes, blob)
		if !bytes.Equal(a[:4], []byte{0xa6, 0x59, 0x59, 0xa6}) || int(binary.BigEndian.Uint32(a[4:])) != len(plain) {
			t.Fatalf("RFC 5649 integrity check failed: A = %x for %d bytes", a, len(plain))
		}
		kv := decodeKeyValue(t, plain)
		if len(kv.Children) != 1 || !bytes.Equal(kv.Child(kmip14.TagKeyMaterial).Bytes, keyBytes) {
			t.Fatalf("Key Value %v", kv)
		}
	})
	t.Run("EC private key as PKCS#8", func(t *testing.T) {
		blob := get(t, ecPrv, kws(kek, nil, ttlvOpt), kmip14.ObjectTypePrivateKey)
		_, plain := aesUnwrap(t, kekBytes, blob)
		kv := decodeKeyValue(t, plain)
		if _, err := x509.ParsePKCS8PrivateKey(kv.Child(kmip14.TagKeyMaterial).Bytes); err != nil {
			t.Fatalf("Key Material is not PKCS#8: %v", err)
		}
	})
	t.Run("RSA-OAEP", func(t *testing.T) {
		blob := get(t, target, kws(rsaPub, oaep, names("Name")...), kmip14.ObjectTypeSymmetricKey)
		plain := f.must("client", v14, kmip14.OperationDecrypt, uidNode(rsaPrv), oaep, msg.Bytes(kmip14.TagData, blob)).Child(kmip14.TagData).Bytes
		kv := decodeKeyValue(t, plain)
		if !bytes.Equal(kv.Child(kmip14.TagKeyMaterial).Bytes, keyBytes) || len(kv.All(kmip14.TagAttribute)) != 1 {
			t.Fatalf("Key Value %v", kv)
		}
	})
	f.t = t
	if fresh := f.attr(target, "Fresh"); fresh.Int != 0 {
		t.Fatalf("a key served wrapped is still Fresh")
	}
	// A Sensitive key leaves wrapped by the token with No Encoding only.
	f.must("client", v14, kmip14.OperationGet, uidNode(sensitive), kws(kek, nil))

	wrappedBlock := func(enc kmip14.EncodingOption) *msg.Node {
		return msg.Struct(kmip14.TagSymmetricKey, msg.Struct(kmip14.TagKeyBlock,
			msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeRaw)), msg.Bytes(kmip14.TagKeyValue, make([]byte, 56)),
			msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(kmip14.CryptographicAlgorithmAES)),
			msg.Struct(kmip14.TagKeyWrappingData, msg.Enum(kmip14.TagWrappingMethod, uint32(kmip14.WrappingMethodEncrypt)),
				msg.Struct(kmip14.TagEncryptionKeyInformation, uidNode(kek)), msg.Enum(kmip14.TagEncodingOption, uint32(enc)))))
	}
	long := []string{"Name", "Cryptographic Usage Mask", "Cryptographic Algorithm", "Cryptographic Length", "State",
		"Initial Date", "Last Change Date", "Object Type", "Unique Identifier", "Digest"}
	for name, tc := range map[string]struct {
		op   kmip14.Operation
		args []*msg.Node
		want kmip14.ResultReason
	}{
		"Sensitive key":               {kmip14.OperationGet, []*msg.Node{uidNode(sensitive), kws(kek, nil, ttlvOpt)}, kmip14.ResultReasonEncodingOptionError},
		"attributes without TTLV":     {kmip14.OperationGet, []*msg.Node{uidNode(target), kws(kek, nil, msg.Text(kmip14.TagAttributeName, "Name"))}, kmip14.ResultReasonEncodingOptionError},
		"unknown encoding option":     {kmip14.OperationGet, []*msg.Node{uidNode(target), kws(kek, nil, msg.Enum(kmip14.TagEncodingOption, 3))}, kmip14.ResultReasonEncodingOptionError},
		"too long for RSA-OAEP":       {kmip14.OperationGet, []*msg.Node{uidNode(target), kws(rsaPub, oaep, names(long...)...)}, kmip14.ResultReasonInvalidField},
		"Register TTLV-encoded":       {kmip14.OperationRegister, []*msg.Node{msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)), msg.Struct(kmip14.TagTemplateAttribute), wrappedBlock(kmip14.EncodingOptionTTLVEncoding)}, kmip14.ResultReasonEncodingOptionError},
		"Register unknown encoding":   {kmip14.OperationRegister, []*msg.Node{msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)), msg.Struct(kmip14.TagTemplateAttribute), wrappedBlock(7)}, kmip14.ResultReasonEncodingOptionError},
		"Attribute Name not a string": {kmip14.OperationGet, []*msg.Node{uidNode(target), kws(kek, nil, ttlvOpt, msg.Int(kmip14.TagAttributeName, 1))}, kmip14.ResultReasonInvalidField},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.call("client", v14, tc.op, tc.args...)
			wantReason(t, err, tc.want)
		})
	}
}
