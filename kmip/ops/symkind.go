package ops

import (
	"crypto/sha256"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// hmacDefaultBits is the key length Create gives an HMAC key that names none: the
// hash's output, rounded up to the 64-bit steps the token stores exactly.
var hmacDefaultBits = map[kmip14.CryptographicAlgorithm]int32{
	kmip14.CryptographicAlgorithmHMAC_SHA1:   192,
	kmip14.CryptographicAlgorithmHMAC_SHA256: 256,
	kmip14.CryptographicAlgorithmHMAC_SHA384: 384,
	kmip14.CryptographicAlgorithmHMAC_SHA512: 512,
}

// secretKind decides which token key kind holds a symmetric key of o's algorithm and
// length: AES (128, 192, 256 bits), 3DES (168 bits, or 192 counting parity) or an
// HMAC key (a multiple of 64 bits up to 4096). An HMAC key without a length gets its
// hash's default.
func secretKind(o *meta.Object) (hsm.KeyKind, error) {
	alg := kmip14.CryptographicAlgorithm(o.Algorithm)
	switch {
	case alg == kmip14.CryptographicAlgorithmAES:
		switch o.Length {
		case 128, 192, 256:
			return hsm.KindAES, nil
		}
		return 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "AES keys are 128, 192 or 256 bits, not %d", o.Length)
	case alg == kmip14.CryptographicAlgorithmDES3:
		if o.Length == 168 || o.Length == 192 {
			return hsm.KindDES3, nil
		}
		return 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "3DES keys are 168 bits, not %d", o.Length)
	case hmacDefaultBits[alg] != 0:
		if o.Length == 0 {
			o.Length = hmacDefaultBits[alg]
		}
		if o.Length%64 == 0 && o.Length >= 64 && o.Length <= 4096 {
			return hsm.KindHMAC, nil
		}
		return 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "HMAC keys are a multiple of 64 bits up to 4096, not %d", o.Length)
	}
	return 0, kmip.Errorf(kmip14.ResultReasonInvalidField,
		"cryptographic algorithm %v is not supported for symmetric keys; use AES, 3DES or HMAC-SHA1/256/384/512", alg)
}

// storedLen is the length in bytes of a symmetric key of kind and o's length: 3DES
// keys carry their parity bits.
func storedLen(kind hsm.KeyKind, o *meta.Object) int {
	if kind == hsm.KindDES3 {
		return 24
	}
	return int(o.Length) / 8
}

// symmetricKind names a stored Symmetric Key's material for the token: its algorithm's
// kind when the blob holds exactly such a key (RFC 5649 wraps n bytes, n a multiple
// of 8, into n+8), else opaque secret data, which Get returns but the token does not
// compute with.
func symmetricKind(o *meta.Object) hsm.KeyKind {
	c := *o
	if kind, err := secretKind(&c); err == nil && len(o.Wrapped) == 8+storedLen(kind, &c) {
		return kind
	}
	return hsm.KindSecret
}

// materialKind decides how registered symmetric key material is imported: as its
// algorithm's token key only when it is what it claims to be; anything else (old
// Percona releases registered base64 text) is kept as an opaque secret that Get
// returns unchanged but the crypto operations refuse.
func materialKind(o *meta.Object, material []byte) hsm.KeyKind {
	if kmip14.ObjectType(o.Type) != kmip14.ObjectTypeSymmetricKey {
		return hsm.KindSecret
	}
	if o.Length == 0 {
		o.Length = int32(len(material) * 8)
	}
	c := *o
	kind, err := secretKind(&c)
	if err != nil || c.Length != o.Length || len(material) != storedLen(kind, o) {
		return hsm.KindSecret
	}
	return kind
}

// materialDigest is the Digest of registered material, over the encoding of the Key
// Format Type it came in (KMIP 1.x Digest; TC-181 tests it): the bytes of a Raw or
// Opaque key, the TTLV Key Material structure of a Transparent Symmetric Key.
func materialDigest(o *meta.Object, material []byte) []byte {
	var sum [32]byte
	if kmip14.KeyFormatType(o.Format) == kmip14.KeyFormatTypeTransparentSymmetricKey {
		enc := msg.Struct(kmip14.TagKeyMaterial, msg.Bytes(kmip14.TagKey, material)).Append(nil)
		sum = sha256.Sum256(enc)
		clear(enc)
	} else {
		sum = sha256.Sum256(material)
	}
	return sum[:]
}
