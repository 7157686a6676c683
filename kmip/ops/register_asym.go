package ops

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"math/big"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// Certificate attributes (KMIP 1.0 names, deprecated in 1.1, and their 1.1 X.509
// successors); the server sets them from the certificate.
const (
	attrCertType         = "Certificate Type"
	attrCertLength       = "Certificate Length"
	attrCertIdentifier   = "Certificate Identifier"
	attrCertSubject      = "Certificate Subject"
	attrCertIssuer       = "Certificate Issuer"
	attrX509Identifier   = "X.509 Certificate Identifier"
	attrX509Subject      = "X.509 Certificate Subject"
	attrX509Issuer       = "X.509 Certificate Issuer"
	attrDigitalSignature = "Digital Signature Algorithm"
)

// registerAsym imports a Public Key, Private Key or Certificate (KMIP Register). Key
// material is parsed here, as the client sent it in the clear anyway; a private key
// then goes into the token (hsm.ImportPrivate) and only its wrapped form is stored.
func (s *Service) registerAsym(ctx context.Context, it *kmip.Item, o *meta.Object, in []attr) (*msg.Node, error) {
	if kmip14.ObjectType(o.Type) == kmip14.ObjectTypeCertificate {
		return s.registerCertificate(ctx, it, o, in)
	}
	block := it.Payload.Child(objectTag(o.Type)).Child(kmip14.TagKeyBlock)
	if block == nil {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "the object has no Key Block")
	}
	if block.Child(kmip14.TagKeyWrappingData) != nil {
		if kmip14.ObjectType(o.Type) == kmip14.ObjectTypePublicKey {
			return nil, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "public keys are not secret; register them unwrapped")
		}
		return s.registerWrapped(ctx, it, o, block, in)
	}
	ft := block.Child(kmip14.TagKeyFormatType)
	km := block.Child(kmip14.TagKeyValue).Child(kmip14.TagKeyMaterial)
	if ft == nil || ft.Type != msg.TypeEnumeration || km == nil {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Key Block needs a Key Format Type and Key Material")
	}
	for _, a := range block.Child(kmip14.TagKeyValue).All(kmip14.TagAttribute) {
		pa, err := parseAttribute(a)
		if err != nil {
			return nil, err
		}
		in = append(in, pa)
	}
	if alg := block.Child(kmip14.TagCryptographicAlgorithm); alg != nil && alg.Type == msg.TypeEnumeration {
		o.Algorithm = uint32(alg.Int)
	}
	if l := block.Child(kmip14.TagCryptographicLength); l != nil && l.Type == msg.TypeInteger {
		o.Length = int32(l.Int)
	}
	if err := applyAttrs(o, in, it.Version); err != nil {
		return nil, err
	}
	format := kmip14.KeyFormatType(ft.Int)
	var digest [32]byte
	if kmip14.ObjectType(o.Type) == kmip14.ObjectTypePublicKey {
		pub, err := parsePublic(format, km)
		if err != nil {
			return nil, err
		}
		if err := describeKey(o, pub); err != nil {
			return nil, err
		}
		if o.Wrapped, err = x509.MarshalPKIXPublicKey(pub); err != nil {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "the public key cannot be encoded")
		}
		digest = formatDigest(o, format, km, o.Wrapped, kmip14.KeyFormatTypeX_509)
	} else {
		key, err := parsePrivate(format, km)
		if err != nil {
			return nil, err
		}
		if err := describeKey(o, key.(interface{ Public() crypto.PublicKey }).Public()); err != nil {
			return nil, err
		}
		pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "the private key cannot be encoded")
		}
		digest = formatDigest(o, format, km, pkcs8, kmip14.KeyFormatTypePKCS_8)
		clear(pkcs8)
		w, err := s.keys.ImportPrivate(ctx, key)
		if err != nil {
			return nil, err
		}
		o.Wrapped, o.KEK = w.Blob, w.KEK
	}
	if err := s.finishNew(ctx, o, digest[:], false, it.Version); err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, o.ID)), nil
}

// formatDigest returns the Digest of registered key material: SHA-256 of the DER the
// client sent, in its format; Transparent material is stored, and digested, in the
// canonical DER format instead.
func formatDigest(o *meta.Object, format kmip14.KeyFormatType, km *msg.Node, canonical []byte, canonicalFormat kmip14.KeyFormatType) [32]byte {
	if km.Type == msg.TypeByteString {
		o.Format = uint32(format)
		return sha256.Sum256(km.Bytes)
	}
	o.Format = uint32(canonicalFormat)
	return sha256.Sum256(canonical)
}

// describeKey sets or checks the algorithm and length of o from its public key.
func describeKey(o *meta.Object, pub crypto.PublicKey) error {
	var (
		ok   bool
		bits int32
		alg  = kmip14.CryptographicAlgorithmRSA
	)
	switch k := pub.(type) {
	case *rsa.PublicKey:
		bits = int32(k.N.BitLen())
		ok = o.Algorithm == 0 || kmip14.CryptographicAlgorithm(o.Algorithm) == alg
	case *ecdsa.PublicKey:
		bits, alg = int32(k.Curve.Params().BitSize), kmip14.CryptographicAlgorithmEC
		ok = o.Algorithm == 0 || isEC(o.Algorithm)
		if curveOf(k.Curve) == 0 {
			return kmip.Errorf(kmip14.ResultReasonInvalidField, "EC keys must be on P-256, P-384 or P-521")
		}
	}
	if !ok || (o.Length != 0 && o.Length != bits) {
		return kmip.Errorf(kmip14.ResultReasonInvalidField, "the key material is not a %v-%d key as the attributes say", kmip14.CryptographicAlgorithm(o.Algorithm), o.Length)
	}
	if o.Algorithm == 0 {
		o.Algorithm = uint32(alg)
	}
	o.Length = bits
	return nil
}

// bigChild returns the Big Integer child tag of n, or nil.
func bigChild(n *msg.Node, tag ttlv.Tag) *big.Int {
	c := n.Child(tag)
	if c == nil || c.Type != msg.TypeBigInteger {
		return nil
	}
	return c.Big()
}

// parsePublic reads public Key Material of format f.
func parsePublic(f kmip14.KeyFormatType, km *msg.Node) (crypto.PublicKey, error) {
	bad := kmip.Errorf(kmip14.ResultReasonInvalidField, "Key Material is not a valid public key in %v format", f)
	var (
		pub any
		err error
	)
	switch f {
	case kmip14.KeyFormatTypeX_509:
		if km.Type != msg.TypeByteString {
			return nil, bad
		}
		pub, err = x509.ParsePKIXPublicKey(km.Bytes)
	case kmip14.KeyFormatTypePKCS_1:
		if km.Type != msg.TypeByteString {
			return nil, bad
		}
		pub, err = x509.ParsePKCS1PublicKey(km.Bytes)
	case kmip14.KeyFormatTypeTransparentRSAPublicKey:
		n, e := bigChild(km, kmip14.TagModulus), bigChild(km, kmip14.TagPublicExponent)
		if n == nil || e == nil || n.Sign() <= 0 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
			return nil, bad
		}
		pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
	case kmip14.KeyFormatTypeTransparentECPublicKey:
		c, q := km.Child(kmip14.TagRecommendedCurve), km.Child(kmip14.TagQString)
		if c == nil || q == nil || curves[kmip14.RecommendedCurve(c.Int)] == nil {
			return nil, bad
		}
		pub, err = ecdsa.ParseUncompressedPublicKey(curves[kmip14.RecommendedCurve(c.Int)], q.Bytes)
	default:
		return nil, kmip.Errorf(kmip14.ResultReasonKeyFormatTypeNotSupported, "public keys cannot be registered in %v format", f)
	}
	if err != nil {
		return nil, bad
	}
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
		return pub, nil
	}
	return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "only RSA and EC public keys are supported")
}

// parsePrivate reads private Key Material of format f.
func parsePrivate(f kmip14.KeyFormatType, km *msg.Node) (crypto.PrivateKey, error) {
	bad := kmip.Errorf(kmip14.ResultReasonInvalidField, "Key Material is not a valid private key in %v format", f)
	var (
		key any
		err error
	)
	der := f == kmip14.KeyFormatTypePKCS_1 || f == kmip14.KeyFormatTypePKCS_8 || f == kmip14.KeyFormatTypeECPrivateKey
	if der && km.Type != msg.TypeByteString {
		return nil, bad
	}
	switch f {
	case kmip14.KeyFormatTypePKCS_1:
		key, err = x509.ParsePKCS1PrivateKey(km.Bytes)
	case kmip14.KeyFormatTypePKCS_8:
		key, err = x509.ParsePKCS8PrivateKey(km.Bytes)
	case kmip14.KeyFormatTypeECPrivateKey:
		key, err = x509.ParseECPrivateKey(km.Bytes)
	case kmip14.KeyFormatTypeTransparentRSAPrivateKey:
		n, e, d := bigChild(km, kmip14.TagModulus), bigChild(km, kmip14.TagPublicExponent), bigChild(km, kmip14.TagPrivateExponent)
		p, q := bigChild(km, kmip14.TagP), bigChild(km, kmip14.TagQ)
		if n == nil || e == nil || d == nil || p == nil || q == nil || !e.IsInt64() || e.Int64() > 1<<31-1 {
			return nil, bad
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: int(e.Int64())}, D: d, Primes: []*big.Int{p, q}}
		if k.Validate() != nil {
			return nil, bad
		}
		key = k
	case kmip14.KeyFormatTypeTransparentECPrivateKey:
		c, d := km.Child(kmip14.TagRecommendedCurve), bigChild(km, kmip14.TagD)
		if c == nil || d == nil || curves[kmip14.RecommendedCurve(c.Int)] == nil || d.Sign() <= 0 {
			return nil, bad
		}
		curve := curves[kmip14.RecommendedCurve(c.Int)]
		key, err = ecdsa.ParseRawPrivateKey(curve, d.FillBytes(make([]byte, (curve.Params().BitSize+7)/8)))
	default:
		return nil, kmip.Errorf(kmip14.ResultReasonKeyFormatTypeNotSupported, "private keys cannot be registered in %v format", f)
	}
	if err != nil {
		return nil, bad
	}
	switch key.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey:
		return key, nil
	}
	return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "only RSA and EC private keys are supported")
}

// registerCertificate stores an X.509 certificate as sent, with the attributes KMIP
// derives from it.
func (s *Service) registerCertificate(ctx context.Context, it *kmip.Item, o *meta.Object, in []attr) (*msg.Node, error) {
	c := it.Payload.Child(kmip14.TagCertificate)
	ct, cv := c.Child(kmip14.TagCertificateType), c.Child(kmip14.TagCertificateValue)
	if ct == nil || cv == nil || cv.Type != msg.TypeByteString {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Certificate needs a Certificate Type and a Certificate Value")
	}
	if kmip14.CertificateType(ct.Int) != kmip14.CertificateTypeX_509 {
		return nil, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "only X.509 certificates are supported")
	}
	cert, err := x509.ParseCertificate(cv.Bytes)
	if err != nil {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Certificate Value is not a DER X.509 certificate")
	}
	if err := applyAttrs(o, in, it.Version); err != nil {
		return nil, err
	}
	if err := describeKey(o, cert.PublicKey); err != nil {
		return nil, err
	}
	o.Format = uint32(kmip14.KeyFormatTypeX_509)
	o.Wrapped = append([]byte(nil), cv.Bytes...)
	serial := cert.SerialNumber.Bytes()
	for _, a := range []attr{
		{name: attrCertType, value: enumVal(uint32(kmip14.CertificateTypeX_509))},
		{name: attrCertLength, value: intVal(int32(len(o.Wrapped)))},
		{name: attrCertIdentifier, value: structVal(
			msg.Text(kmip14.TagIssuer, cert.Issuer.String()),
			msg.Text(kmip14.TagSerialNumber, cert.SerialNumber.String()))},
		{name: attrCertSubject, value: structVal(msg.Text(kmip14.TagCertificateSubjectDistinguishedName, cert.Subject.String()))},
		{name: attrCertIssuer, value: structVal(msg.Text(kmip14.TagCertificateIssuerDistinguishedName, cert.Issuer.String()))},
		{name: attrX509Identifier, value: structVal(
			msg.Bytes(kmip14.TagIssuerDistinguishedName, cert.RawIssuer),
			msg.Bytes(kmip14.TagCertificateSerialNumber, serial))},
		{name: attrX509Subject, value: structVal(msg.Bytes(kmip14.TagSubjectDistinguishedName, cert.RawSubject))},
		{name: attrX509Issuer, value: structVal(msg.Bytes(kmip14.TagIssuerDistinguishedName, cert.RawIssuer))},
	} {
		setGeneric(o, a.name, 0, a.value)
	}
	if dsa, ok := certSignatureAlgs[cert.SignatureAlgorithm]; ok {
		setGeneric(o, attrDigitalSignature, 0, enumVal(uint32(dsa)))
	}
	digest := sha256.Sum256(o.Wrapped)
	if err := s.finishNew(ctx, o, digest[:], false, it.Version); err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, o.ID)), nil
}

// certSignatureAlgs maps Go's certificate signature algorithms to KMIP's.
var certSignatureAlgs = map[x509.SignatureAlgorithm]kmip14.DigitalSignatureAlgorithm{
	x509.SHA1WithRSA:      kmip14.DigitalSignatureAlgorithmSHA_1WithRSAEncryption,
	x509.SHA256WithRSA:    kmip14.DigitalSignatureAlgorithmSHA_256WithRSAEncryption,
	x509.SHA384WithRSA:    kmip14.DigitalSignatureAlgorithmSHA_384WithRSAEncryption,
	x509.SHA512WithRSA:    kmip14.DigitalSignatureAlgorithmSHA_512WithRSAEncryption,
	x509.SHA256WithRSAPSS: kmip14.DigitalSignatureAlgorithmRSASSA_PSS,
	x509.SHA384WithRSAPSS: kmip14.DigitalSignatureAlgorithmRSASSA_PSS,
	x509.SHA512WithRSAPSS: kmip14.DigitalSignatureAlgorithmRSASSA_PSS,
	x509.ECDSAWithSHA1:    kmip14.DigitalSignatureAlgorithmECDSAWithSHA_1,
	x509.ECDSAWithSHA256:  kmip14.DigitalSignatureAlgorithmECDSAWithSHA256,
	x509.ECDSAWithSHA384:  kmip14.DigitalSignatureAlgorithmECDSAWithSHA384,
	x509.ECDSAWithSHA512:  kmip14.DigitalSignatureAlgorithmECDSAWithSHA512,
}
