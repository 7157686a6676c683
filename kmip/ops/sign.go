package ops

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"hash"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// hashes maps the KMIP hashing algorithms the server computes to Go's.
var hashes = map[kmip14.HashingAlgorithm]crypto.Hash{
	kmip14.HashingAlgorithmSHA_1:   crypto.SHA1,
	kmip14.HashingAlgorithmSHA_224: crypto.SHA224,
	kmip14.HashingAlgorithmSHA_256: crypto.SHA256,
	kmip14.HashingAlgorithmSHA_384: crypto.SHA384,
	kmip14.HashingAlgorithmSHA_512: crypto.SHA512,
}

// hashFuncs names the constructors directly, so the hashes are linked in.
var hashFuncs = map[crypto.Hash]func() hash.Hash{
	crypto.SHA1:   sha1.New,
	crypto.SHA224: sha256.New224,
	crypto.SHA256: sha256.New,
	crypto.SHA384: sha512.New384,
	crypto.SHA512: sha512.New,
}

// signatureAlgs maps KMIP Digital Signature Algorithms to a scheme and hash.
var signatureAlgs = map[kmip14.DigitalSignatureAlgorithm]struct {
	scheme hsm.SignScheme
	hash   crypto.Hash
}{
	kmip14.DigitalSignatureAlgorithmSHA_1WithRSAEncryption:   {hsm.SignPKCS1v15, crypto.SHA1},
	kmip14.DigitalSignatureAlgorithmSHA_224WithRSAEncryption: {hsm.SignPKCS1v15, crypto.SHA224},
	kmip14.DigitalSignatureAlgorithmSHA_256WithRSAEncryption: {hsm.SignPKCS1v15, crypto.SHA256},
	kmip14.DigitalSignatureAlgorithmSHA_384WithRSAEncryption: {hsm.SignPKCS1v15, crypto.SHA384},
	kmip14.DigitalSignatureAlgorithmSHA_512WithRSAEncryption: {hsm.SignPKCS1v15, crypto.SHA512},
	kmip14.DigitalSignatureAlgorithmRSASSA_PSS:               {hsm.SignPSS, 0},
	kmip14.DigitalSignatureAlgorithmECDSAWithSHA_1:           {hsm.SignECDSA, crypto.SHA1},
	kmip14.DigitalSignatureAlgorithmECDSAWithSHA224:          {hsm.SignECDSA, crypto.SHA224},
	kmip14.DigitalSignatureAlgorithmECDSAWithSHA256:          {hsm.SignECDSA, crypto.SHA256},
	kmip14.DigitalSignatureAlgorithmECDSAWithSHA384:          {hsm.SignECDSA, crypto.SHA384},
	kmip14.DigitalSignatureAlgorithmECDSAWithSHA512:          {hsm.SignECDSA, crypto.SHA512},
}

// hashParam reads a Hashing Algorithm child of p, def when absent.
func hashParam(p *msg.Node, tag ttlv.Tag, def crypto.Hash) (crypto.Hash, error) {
	n := p.Child(tag)
	if n == nil {
		return def, nil
	}
	h, ok := hashes[kmip14.HashingAlgorithm(n.Int)]
	if !ok {
		return 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "hashing algorithm %v is not supported; use SHA-1 or SHA-2", kmip14.HashingAlgorithm(n.Int))
	}
	return h, nil
}

// sigParams reads the signature scheme and hash from Cryptographic Parameters.
// Without them, RSA keys sign PKCS#1 v1.5 and EC keys ECDSA, both with SHA-256.
func sigParams(p *msg.Node, ec bool) (hsm.SignScheme, crypto.Hash, error) {
	scheme := hsm.SignPKCS1v15
	if ec {
		scheme = hsm.SignECDSA
	}
	h, err := hashParam(p, kmip14.TagHashingAlgorithm, crypto.SHA256)
	if err != nil {
		return 0, 0, err
	}
	if pm := p.Child(kmip14.TagPaddingMethod); pm != nil && !ec {
		switch kmip14.PaddingMethod(pm.Int) {
		case kmip14.PaddingMethodPSS:
			scheme = hsm.SignPSS
		case kmip14.PaddingMethodPKCS1V1_5:
			scheme = hsm.SignPKCS1v15
		default:
			return 0, 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "padding method %v cannot sign; use PSS or PKCS1 v1.5", kmip14.PaddingMethod(pm.Int))
		}
	}
	if d := p.Child(kmip14.TagDigitalSignatureAlgorithm); d != nil {
		a, ok := signatureAlgs[kmip14.DigitalSignatureAlgorithm(d.Int)]
		if !ok {
			return 0, 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "digital signature algorithm %v is not supported", kmip14.DigitalSignatureAlgorithm(d.Int))
		}
		scheme = a.scheme
		if a.hash != 0 {
			h = a.hash
		}
	}
	if (scheme == hsm.SignECDSA) != ec {
		return 0, 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "the signature algorithm does not match the key's algorithm")
	}
	return scheme, h, nil
}

// sigDigest returns the hash to sign or verify: Digested Data as sent, or Data hashed.
func sigDigest(it *kmip.Item, h crypto.Hash) ([]byte, error) {
	if d := it.Payload.Child(kmip14.TagDigestedData); d != nil && d.Type == msg.TypeByteString {
		if len(d.Bytes) != h.Size() {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Digested Data of %d bytes is not a %v digest", len(d.Bytes), h)
		}
		return d.Bytes, nil
	}
	data := it.Payload.Child(kmip14.TagData)
	if data == nil || data.Type != msg.TypeByteString {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "the request needs Data or Digested Data")
	}
	hh := hashFuncs[h]()
	hh.Write(data.Bytes)
	return hh.Sum(nil), nil
}

// keyFor loads the key that Sign, Signature Verify, RSA Encrypt/Decrypt or key wrapping
// names and checks its type, state and usage mask.
func (s *Service) keyFor(ctx context.Context, it *kmip.Item, usage kmip14.CryptographicUsageMask, types ...kmip14.ObjectType) (*meta.Object, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	o, err := s.view(ctx, id)
	if err != nil {
		return nil, err
	}
	ok := false
	for _, t := range types {
		ok = ok || kmip14.ObjectType(o.Type) == t
	}
	st := kmip14.State(o.State)
	// Protecting needs an Active key; processing (verify, decrypt, unwrap) also accepts
	// a Deactivated or Compromised one.
	protects := usage == kmip14.CryptographicUsageMaskSign || usage == kmip14.CryptographicUsageMaskEncrypt ||
		usage == kmip14.CryptographicUsageMaskWrapKey
	switch {
	case !ok:
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "object %q is a %v, which cannot %v", id, kmip14.ObjectType(o.Type), usage)
	case destroyed(o) || o.Wrapped == nil:
		return nil, kmip.Errorf(kmip14.ResultReasonItemNotFound, "object %q has been destroyed", id)
	case protects && st != kmip14.StateActive:
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is %v; only an Active key may %v", id, st, usage)
	case !protects && st != kmip14.StateActive && st != kmip14.StateDeactivated && st != kmip14.StateCompromised:
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is %v and cannot %v", id, st, usage)
	case o.UsageMask&int32(usage) == 0:
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "the usage mask of object %q does not allow %v", id, usage)
	}
	return o, nil
}

// sign signs Data (or Digested Data) with an Active private key inside the token
// (KMIP Sign).
func (s *Service) sign(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	if it.Payload.Child(kmip14.TagInitIndicator) != nil || it.Payload.Child(kmip14.TagCorrelationValue) != nil {
		return nil, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "streaming Sign is not supported; send the whole Data")
	}
	o, err := s.keyFor(ctx, it, kmip14.CryptographicUsageMaskSign, kmip14.ObjectTypePrivateKey)
	if err != nil {
		return nil, err
	}
	scheme, h, err := sigParams(it.Payload.Child(kmip14.TagCryptographicParameters), isEC(o.Algorithm))
	if err != nil {
		return nil, err
	}
	digest, err := sigDigest(it, h)
	if err != nil {
		return nil, err
	}
	sig, err := s.keys.Sign(ctx, hsm.SignRequest{Key: privKeyOf(o), Scheme: scheme, Hash: h, Digest: digest})
	if err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Text(kmip14.TagUniqueIdentifier, o.ID),
		msg.Bytes(kmip14.TagSignatureData, sig)), nil
}

// publicKeyOf parses the public key of a Public Key or Certificate object.
func publicKeyOf(o *meta.Object) (crypto.PublicKey, error) {
	if kmip14.ObjectType(o.Type) == kmip14.ObjectTypeCertificate {
		c, err := x509.ParseCertificate(o.Wrapped)
		if err != nil {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "certificate %q cannot be parsed", o.ID)
		}
		return c.PublicKey, nil
	}
	pub, err := x509.ParsePKIXPublicKey(o.Wrapped)
	if err != nil {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "public key %q cannot be parsed", o.ID)
	}
	return pub, nil
}

// signatureVerify checks a signature with a public key (KMIP Signature Verify). Public
// keys are not secret, so Go's crypto verifies; the token is kept for private keys.
func (s *Service) signatureVerify(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	if it.Payload.Child(kmip14.TagInitIndicator) != nil || it.Payload.Child(kmip14.TagCorrelationValue) != nil {
		return nil, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "streaming Signature Verify is not supported; send the whole Data")
	}
	o, err := s.keyFor(ctx, it, kmip14.CryptographicUsageMaskVerify, kmip14.ObjectTypePublicKey, kmip14.ObjectTypeCertificate)
	if err != nil {
		return nil, err
	}
	pub, err := publicKeyOf(o)
	if err != nil {
		return nil, err
	}
	_, isECKey := pub.(*ecdsa.PublicKey)
	scheme, h, err := sigParams(it.Payload.Child(kmip14.TagCryptographicParameters), isECKey)
	if err != nil {
		return nil, err
	}
	digest, err := sigDigest(it, h)
	if err != nil {
		return nil, err
	}
	sig := it.Payload.Child(kmip14.TagSignatureData)
	if sig == nil || sig.Type != msg.TypeByteString {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Signature Verify needs Signature Data")
	}
	valid := false
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if scheme == hsm.SignPSS {
			// Any salt length verifies, as the PSS parameters travel outside KMIP.
			valid = rsa.VerifyPSS(k, h, digest, sig.Bytes, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil
		} else {
			valid = rsa.VerifyPKCS1v15(k, h, digest, sig.Bytes) == nil
		}
	case *ecdsa.PublicKey:
		valid = ecdsa.VerifyASN1(k, digest, sig.Bytes)
	default:
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "object %q holds a %T key, which cannot verify", o.ID, pub)
	}
	vi := kmip14.ValidityIndicatorInvalid
	if valid {
		vi = kmip14.ValidityIndicatorValid
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Text(kmip14.TagUniqueIdentifier, o.ID),
		msg.Enum(kmip14.TagValidityIndicator, uint32(vi))), nil
}
