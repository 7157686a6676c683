package ops

import (
	"context"
	"crypto/elliptic"
	"crypto/sha256"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// Asymmetric objects at rest: a Private Key's Wrapped is its blob under the master key
// (the token wraps PKCS#8), like a symmetric key's. A Public Key's Wrapped is its DER
// SubjectPublicKeyInfo and a Certificate's its DER X.509 encoding, both with KEK "":
// they are not secret, so nothing wraps them, and an empty KEK says so.

// curves maps KMIP Recommended Curves to the curves the token generates.
var curves = map[kmip14.RecommendedCurve]elliptic.Curve{
	kmip14.RecommendedCurveP_256: elliptic.P256(),
	kmip14.RecommendedCurveP_384: elliptic.P384(),
	kmip14.RecommendedCurveP_521: elliptic.P521(),
}

// isEC reports whether a KMIP algorithm names an elliptic curve key.
func isEC(alg uint32) bool {
	a := kmip14.CryptographicAlgorithm(alg)
	return a == kmip14.CryptographicAlgorithmEC || a == kmip14.CryptographicAlgorithmECDSA
}

// privKeyOf names a Private Key object's material for the token.
func privKeyOf(o *meta.Object) hsm.Key {
	kind := hsm.KindRSA
	if isEC(o.Algorithm) {
		kind = hsm.KindEC
	}
	return hsm.Key{ID: o.ID, Kind: kind, Wrapped: hsm.Wrapped{Blob: o.Wrapped, KEK: o.KEK}}
}

// mergeTemplates applies KMIP's rule for Create Key Pair: an attribute in the private
// or public template replaces the same single-valued attribute of the common one.
func mergeTemplates(common, specific []attr) []attr {
	given := map[string]bool{}
	for _, a := range specific {
		given[a.name] = true
	}
	var out []attr
	for _, a := range common {
		if !given[a.name] || specs[a.name].multi {
			out = append(out, a)
		}
	}
	return append(out, specific...)
}

// curveParam reads the Recommended Curve of a Cryptographic Domain Parameters attribute.
func curveParam(o *meta.Object) (kmip14.RecommendedCurve, bool) {
	for _, a := range o.Attrs {
		if a.Name != "Cryptographic Domain Parameters" {
			continue
		}
		if n, err := msg.Decode(a.Value); err == nil {
			if c := n.Child(kmip14.TagRecommendedCurve); c != nil {
				return kmip14.RecommendedCurve(c.Int), true
			}
		}
	}
	return 0, false
}

// pairRequest decides what to generate from the private key's attributes.
func pairRequest(o *meta.Object) (hsm.KeyPairRequest, error) {
	switch {
	case kmip14.CryptographicAlgorithm(o.Algorithm) == kmip14.CryptographicAlgorithmRSA:
		switch o.Length {
		case 2048, 3072, 4096:
			return hsm.KeyPairRequest{Kind: hsm.KindRSA, Bits: int(o.Length)}, nil
		}
		return hsm.KeyPairRequest{}, kmip.Errorf(kmip14.ResultReasonInvalidField, "RSA keys are 2048, 3072 or 4096 bits, not %d", o.Length)
	case isEC(o.Algorithm):
		rc, ok := curveParam(o)
		if !ok {
			// No domain parameters: the length names the NIST curve.
			rc = map[int32]kmip14.RecommendedCurve{256: kmip14.RecommendedCurveP_256,
				384: kmip14.RecommendedCurveP_384, 521: kmip14.RecommendedCurveP_521}[o.Length]
		}
		c, ok := curves[rc]
		if !ok {
			return hsm.KeyPairRequest{}, kmip.Errorf(kmip14.ResultReasonInvalidField, "EC keys are on P-256, P-384 or P-521")
		}
		return hsm.KeyPairRequest{Kind: hsm.KindEC, Curve: c}, nil
	}
	return hsm.KeyPairRequest{}, kmip.Errorf(kmip14.ResultReasonInvalidField,
		"cryptographic algorithm %v is not supported for Create Key Pair; use RSA or EC", kmip14.CryptographicAlgorithm(o.Algorithm))
}

// linkVal is the value of a Link attribute.
func linkVal(t kmip14.LinkType, id string) *msg.Node {
	return structVal(msg.Enum(kmip14.TagLinkType, uint32(t)), msg.Text(kmip14.TagLinkedObjectIdentifier, id))
}

// createKeyPair generates an RSA or EC key pair inside the token (KMIP Create Key
// Pair). The private key is stored wrapped under the master key; each object links to
// the other.
func (s *Service) createKeyPair(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	var tmpl [3][]attr
	for i, tag := range []ttlv.Tag{kmip14.TagCommonTemplateAttribute, kmip14.TagPrivateKeyTemplateAttribute, kmip14.TagPublicKeyTemplateAttribute} {
		in, err := templateAttrs(it.Payload.Child(tag))
		if err != nil {
			return nil, err
		}
		tmpl[i] = in
	}
	prv := &meta.Object{Type: uint32(kmip14.ObjectTypePrivateKey), Format: uint32(kmip14.KeyFormatTypePKCS_8)}
	if err := applyAttrs(prv, mergeTemplates(tmpl[0], tmpl[1]), it.Version); err != nil {
		return nil, err
	}
	pub := &meta.Object{Type: uint32(kmip14.ObjectTypePublicKey), Format: uint32(kmip14.KeyFormatTypeX_509)}
	if err := applyAttrs(pub, mergeTemplates(tmpl[0], tmpl[2]), it.Version); err != nil {
		return nil, err
	}
	if prv.Algorithm == 0 {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Create Key Pair needs a Cryptographic Algorithm")
	}
	if pub.Algorithm != prv.Algorithm || pub.Length != prv.Length {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "the public and private templates disagree on the algorithm or length")
	}
	req, err := pairRequest(prv)
	if err != nil {
		return nil, err
	}
	if req.Kind == hsm.KindEC {
		prv.Length = int32(req.Curve.Params().BitSize)
		pub.Length = prv.Length
	}
	kp, err := s.keys.GenerateKeyPair(ctx, req)
	if err != nil {
		return nil, err
	}
	prv.Wrapped, prv.KEK = kp.Private.Blob, kp.Private.KEK
	pub.Wrapped = kp.Public
	pubDigest := sha256.Sum256(kp.Public)
	if err := s.prepareNew(ctx, pub, pubDigest[:], true); err != nil {
		return nil, err
	}
	if err := s.prepareNew(ctx, prv, kp.Digest, true); err != nil {
		return nil, err
	}
	// Each names the other, and both are stored in one transaction.
	setGeneric(prv, "Link", nextIndex(prv, "Link"), linkVal(kmip14.LinkTypePublicKeyLink, pub.ID))
	setGeneric(pub, "Link", nextIndex(pub, "Link"), linkVal(kmip14.LinkTypePrivateKeyLink, prv.ID))
	if err := s.storeNew(ctx, it.Version, prv, pub); err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Text(kmip14.TagPrivateKeyUniqueIdentifier, prv.ID),
		msg.Text(kmip14.TagPublicKeyUniqueIdentifier, pub.ID)), nil
}
