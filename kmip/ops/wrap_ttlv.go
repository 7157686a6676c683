package ops

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// Get with Encoding Option TTLV Encoding (KMIP 1.1+ Key Wrapping Specification): the
// wrapped bytes are the TTLV encoding of the Key Value structure, Key Material plus the
// attributes named in the specification. The token can wrap only whole keys, and a
// TTLV encoding is not a key: the encoding is built here from the plaintext key, so
// TTLV Encoding is limited to keys whose policy lets them leave in plaintext anyway
// (Extractable and not Sensitive). A Sensitive key can still leave with No Encoding,
// wrapped by the token.
//
// The wrapping key never leaves the token. For AES Key Wrap the token computes every
// AES block of RFC 3394's wrapping function W (AES-ECB on one 16-byte block at a time)
// and this file chains them, with RFC 3394's IV or RFC 5649's alternative IV; doing it
// block by block keeps to mechanisms every PKCS#11 token has (SoftHSM2 offers
// CKM_AES_KEY_WRAP for C_WrapKey only). For RSA-OAEP the wrapping key is a public key,
// so the encryption needs no secret and runs here.

// kwIV is RFC 3394's default initial value; kwpIV is RFC 5649's alternative initial
// value prefix (followed by the 32-bit message length).
var (
	kwIV  = [8]byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}
	kwpIV = [4]byte{0xa6, 0x59, 0x59, 0xa6}
)

// selectNamed returns the attributes of o named in a Key Wrapping Specification, none
// when it names none.
func selectNamed(o *meta.Object, names []string, v msg.Version) []attr {
	if len(names) == 0 {
		return nil
	}
	return selectAttrs(o, names, v)
}

// wrapTTLV returns the TTLV encoding of o's Key Value, with attrs, wrapped as r says
// (r.Key is o's key; r.KEK or r.Public the wrapping key).
func (s *Service) wrapTTLV(ctx context.Context, o *meta.Object, r hsm.WrapRequest, attrs []attr) ([]byte, error) {
	if genericBool(o, attrSensitive, false) {
		return nil, kmip.Errorf(kmip14.ResultReasonEncodingOptionError,
			"object %q is Sensitive: TTLV Encoding would build its Key Value outside the HSM; use Encoding Option No Encoding", o.ID)
	}
	material, err := s.keys.ExportPlain(ctx, r.Key)
	if err != nil {
		return nil, err
	}
	defer clear(material)
	kv := msg.Struct(kmip14.TagKeyValue, msg.Bytes(kmip14.TagKeyMaterial, material))
	for _, a := range attrs {
		kv.Children = append(kv.Children, a.node())
	}
	enc := kv.Append(nil)
	defer clear(enc)
	if r.Mech == hsm.WrapRSAOAEP {
		return oaepWrap(r, enc)
	}
	block := func(ctx context.Context, in []byte) ([]byte, error) {
		res, err := s.keys.Encrypt(ctx, hsm.CipherRequest{Key: r.KEK, Mode: hsm.ModeECB, Data: in})
		return res.Data, err
	}
	return aesKeyWrap(ctx, block, enc, r.Mech == hsm.WrapAESKWP)
}

// oaepWrap encrypts data with RSA-OAEP under the public key r.Public (DER
// SubjectPublicKeyInfo), MGF1 over r.Hash, no label.
func oaepWrap(r hsm.WrapRequest, data []byte) ([]byte, error) {
	k, err := x509.ParsePKIXPublicKey(r.Public)
	pub, ok := k.(*rsa.PublicKey)
	if err != nil || !ok {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "the wrapping key is not an RSA public key")
	}
	if limit := pub.Size() - 2*r.Hash.Size() - 2; len(data) > limit {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField,
			"the TTLV-encoded Key Value has %d bytes; RSA-OAEP under this key wraps at most %d: name fewer attributes or wrap under an AES key", len(data), limit)
	}
	return rsa.EncryptOAEP(r.Hash.New(), rand.Reader, pub, data, nil)
}

// blockFunc encrypts one 16-byte block with AES under the wrapping key.
type blockFunc func(ctx context.Context, in []byte) ([]byte, error)

// aesKeyWrap wraps data with RFC 3394 (padded false: data is a multiple of 8 bytes, at
// least 16) or RFC 5649 (padded true), each AES block computed by enc. RFC 5649's
// single-block case (8 bytes or fewer) is never needed: a Key Value encoding has at
// least 24 bytes.
func aesKeyWrap(ctx context.Context, enc blockFunc, data []byte, padded bool) ([]byte, error) {
	var a [8]byte
	r := data
	if padded {
		copy(a[:4], kwpIV[:])
		binary.BigEndian.PutUint32(a[4:], uint32(len(data)))
		r = make([]byte, (len(data)+7)/8*8)
		copy(r, data)
		defer clear(r)
	} else {
		a = kwIV
	}
	n := len(r) / 8
	if len(r)%8 != 0 || n < 2 {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "AES key wrap needs at least 16 bytes in 8-byte blocks, got %d", len(r))
	}
	out := make([]byte, 8+len(r))
	copy(out[8:], r)
	in := make([]byte, 16)
	defer clear(in)
	for j := range 6 {
		for i := 1; i <= n; i++ {
			copy(in, a[:])
			copy(in[8:], out[8*i:8*i+8])
			b, err := enc(ctx, in)
			if err != nil {
				return nil, err
			}
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(b[:8])^t)
			copy(out[8*i:], b[8:16])
			clear(b)
		}
	}
	copy(out, a[:])
	return out, nil
}
