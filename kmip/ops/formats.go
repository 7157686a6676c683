package ops

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"math/big"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// Key Format Type conversions of Get for asymmetric objects. Public keys are kept as
// SubjectPublicKeyInfo and private keys leave the token as PKCS#8 (hsm.ExportPlain);
// every other format is computed from those. A format with no defined conversion for
// the object is Key Format Type Not Supported.

func isAsym(t uint32) bool {
	switch kmip14.ObjectType(t) {
	case kmip14.ObjectTypePublicKey, kmip14.ObjectTypePrivateKey, kmip14.ObjectTypeCertificate:
		return true
	}
	return false
}

// curveOf returns the KMIP Recommended Curve of a Go curve.
func curveOf(c elliptic.Curve) kmip14.RecommendedCurve {
	for rc, gc := range curves {
		if gc == c {
			return rc
		}
	}
	return 0
}

// privateFormats lists the formats a private key converts to, by isEC.
var privateFormats = map[bool][]kmip14.KeyFormatType{
	false: {kmip14.KeyFormatTypePKCS_8, kmip14.KeyFormatTypePKCS_1, kmip14.KeyFormatTypeTransparentRSAPrivateKey},
	true:  {kmip14.KeyFormatTypePKCS_8, kmip14.KeyFormatTypeECPrivateKey, kmip14.KeyFormatTypeTransparentECPrivateKey},
}

func formatDefined(list []kmip14.KeyFormatType, f kmip14.KeyFormatType) bool {
	for _, x := range list {
		if x == f {
			return true
		}
	}
	return false
}

// publicMaterial encodes a public key as the Key Material of format f.
func publicMaterial(pub crypto.PublicKey, spki []byte, f kmip14.KeyFormatType) (*msg.Node, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch f {
		case kmip14.KeyFormatTypeX_509:
			return msg.Bytes(kmip14.TagKeyMaterial, spki), nil
		case kmip14.KeyFormatTypePKCS_1:
			return msg.Bytes(kmip14.TagKeyMaterial, x509.MarshalPKCS1PublicKey(k)), nil
		case kmip14.KeyFormatTypeTransparentRSAPublicKey:
			return msg.Struct(kmip14.TagKeyMaterial,
				msg.BigInt(kmip14.TagModulus, k.N),
				msg.BigInt(kmip14.TagPublicExponent, big.NewInt(int64(k.E)))), nil
		}
	case *ecdsa.PublicKey:
		switch f {
		case kmip14.KeyFormatTypeX_509:
			return msg.Bytes(kmip14.TagKeyMaterial, spki), nil
		case kmip14.KeyFormatTypeTransparentECPublicKey:
			q, err := k.Bytes()
			if err != nil {
				return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "EC public key cannot be encoded")
			}
			return msg.Struct(kmip14.TagKeyMaterial,
				msg.Enum(kmip14.TagRecommendedCurve, uint32(curveOf(k.Curve))),
				msg.Bytes(kmip14.TagQString, q)), nil
		}
	}
	return nil, kmip.Errorf(kmip14.ResultReasonKeyFormatTypeNotSupported, "a %T cannot be returned in %v format", pub, f)
}

// privateMaterial encodes a private key, given as PKCS#8, as the Key Material of format f.
func privateMaterial(pkcs8 []byte, f kmip14.KeyFormatType) (*msg.Node, error) {
	key, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return nil, kmip.Errorf(kmip14.ResultReasonGeneralFailure, "the token returned a private key that does not parse")
	}
	if f == kmip14.KeyFormatTypePKCS_8 {
		return msg.Bytes(kmip14.TagKeyMaterial, pkcs8), nil
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		switch f {
		case kmip14.KeyFormatTypePKCS_1:
			return msg.Bytes(kmip14.TagKeyMaterial, x509.MarshalPKCS1PrivateKey(k)), nil
		case kmip14.KeyFormatTypeTransparentRSAPrivateKey:
			k.Precompute()
			return msg.Struct(kmip14.TagKeyMaterial,
				msg.BigInt(kmip14.TagModulus, k.N),
				msg.BigInt(kmip14.TagPrivateExponent, k.D),
				msg.BigInt(kmip14.TagPublicExponent, big.NewInt(int64(k.E))),
				msg.BigInt(kmip14.TagP, k.Primes[0]),
				msg.BigInt(kmip14.TagQ, k.Primes[1]),
				msg.BigInt(kmip14.TagPrimeExponentP, k.Precomputed.Dp),
				msg.BigInt(kmip14.TagPrimeExponentQ, k.Precomputed.Dq),
				msg.BigInt(kmip14.TagCRTCoefficient, k.Precomputed.Qinv)), nil
		}
	case *ecdsa.PrivateKey:
		switch f {
		case kmip14.KeyFormatTypeECPrivateKey:
			der, err := x509.MarshalECPrivateKey(k)
			if err != nil {
				return nil, kmip.Errorf(kmip14.ResultReasonGeneralFailure, "EC private key cannot be encoded")
			}
			return msg.Bytes(kmip14.TagKeyMaterial, der), nil
		case kmip14.KeyFormatTypeTransparentECPrivateKey:
			d, err := k.Bytes()
			if err != nil {
				return nil, kmip.Errorf(kmip14.ResultReasonGeneralFailure, "EC private key cannot be encoded")
			}
			return msg.Struct(kmip14.TagKeyMaterial,
				msg.Enum(kmip14.TagRecommendedCurve, uint32(curveOf(k.Curve))),
				msg.BigInt(kmip14.TagD, new(big.Int).SetBytes(d))), nil
		}
	}
	return nil, kmip.Errorf(kmip14.ResultReasonKeyFormatTypeNotSupported, "a %T cannot be returned in %v format", key, f)
}

// keyBlock builds a Key Block around Key Material or a wrapped Key Value (CLIENTS.md
// W6: the Key Value holds only the material; algorithm and length follow it).
func keyBlock(o *meta.Object, f kmip14.KeyFormatType, km *msg.Node, extra ...*msg.Node) *msg.Node {
	block := msg.Struct(kmip14.TagKeyBlock, msg.Enum(kmip14.TagKeyFormatType, uint32(f)))
	if km.Tag == kmip14.TagKeyValue {
		block.Children = append(block.Children, km)
	} else {
		block.Children = append(block.Children, msg.Struct(kmip14.TagKeyValue, km))
	}
	if o.Algorithm != 0 {
		block.Children = append(block.Children, msg.Enum(kmip14.TagCryptographicAlgorithm, o.Algorithm))
	}
	if o.Length != 0 {
		block.Children = append(block.Children, msg.Int(kmip14.TagCryptographicLength, o.Length))
	}
	block.Children = append(block.Children, extra...)
	return block
}

// objectTag is the tag of the managed object structure of an object type.
func objectTag(t uint32) ttlv.Tag {
	switch kmip14.ObjectType(t) {
	case kmip14.ObjectTypePublicKey:
		return kmip14.TagPublicKey
	case kmip14.ObjectTypePrivateKey:
		return kmip14.TagPrivateKey
	case kmip14.ObjectTypeCertificate:
		return kmip14.TagCertificate
	case kmip14.ObjectTypeSecretData:
		return kmip14.TagSecretData
	}
	return kmip14.TagSymmetricKey
}

// getAsym is Get for Public Keys, Private Keys and Certificates; format is the
// requested Key Format Type (the stored one when the request named none).
func (s *Service) getAsym(ctx context.Context, o *meta.Object, format kmip14.KeyFormatType, requested bool) (*msg.Node, error) {
	var obj *msg.Node
	switch kmip14.ObjectType(o.Type) {
	case kmip14.ObjectTypeCertificate:
		if requested && format != kmip14.KeyFormatTypeX_509 {
			return nil, kmip.Errorf(kmip14.ResultReasonKeyFormatTypeNotSupported, "certificates are returned as X.509 only")
		}
		obj = msg.Struct(kmip14.TagCertificate,
			msg.Enum(kmip14.TagCertificateType, uint32(kmip14.CertificateTypeX_509)),
			msg.Bytes(kmip14.TagCertificateValue, o.Wrapped))
	case kmip14.ObjectTypePublicKey:
		pub, err := publicKeyOf(o)
		if err != nil {
			return nil, err
		}
		km, err := publicMaterial(pub, o.Wrapped, format)
		if err != nil {
			return nil, err
		}
		obj = msg.Struct(kmip14.TagPublicKey, keyBlock(o, format, km))
	default:
		if !formatDefined(privateFormats[isEC(o.Algorithm)], format) {
			return nil, kmip.Errorf(kmip14.ResultReasonKeyFormatTypeNotSupported, "private keys cannot be returned in %v format", format)
		}
		pkcs8, err := s.keys.ExportPlain(ctx, privKeyOf(o))
		if err != nil {
			return nil, err
		}
		km, err := privateMaterial(pkcs8, format)
		if err == nil {
			err = s.markServed(ctx, o)
		}
		if err != nil {
			clear(pkcs8)
			return nil, err
		}
		obj = msg.Struct(kmip14.TagPrivateKey, keyBlock(o, format, km))
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Enum(kmip14.TagObjectType, o.Type),
		msg.Text(kmip14.TagUniqueIdentifier, o.ID),
		obj), nil
}
