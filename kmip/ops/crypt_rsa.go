package ops

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

// oaepParams reads RSA-OAEP parameters: OAEP is the only padding, SHA-1 the default
// hash (KMIP's), and the mask generator must use the same hash.
func oaepParams(p *msg.Node) (crypto.Hash, error) {
	if a := p.Child(kmip14.TagCryptographicAlgorithm); a != nil && kmip14.CryptographicAlgorithm(a.Int) != kmip14.CryptographicAlgorithmRSA {
		return 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "an RSA key cannot compute %v", kmip14.CryptographicAlgorithm(a.Int))
	}
	if pm := p.Child(kmip14.TagPaddingMethod); pm != nil && kmip14.PaddingMethod(pm.Int) != kmip14.PaddingMethodOAEP {
		return 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "RSA encryption uses OAEP padding only, not %v", kmip14.PaddingMethod(pm.Int))
	}
	h, err := hashParam(p, kmip14.TagHashingAlgorithm, crypto.SHA1)
	if err != nil {
		return 0, err
	}
	if mh, err := hashParam(p, kmip14.TagMaskGeneratorHashingAlgorithm, h); err != nil || mh != h {
		return 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "OAEP needs the same hash for the mask generator")
	}
	return h, nil
}

// cryptRSA is Encrypt (enc) or Decrypt with an RSA key: RSA-OAEP, encrypting with the
// public key in Go (nothing secret is involved) and decrypting with the private key
// inside the token. ok is false when the request names no Public or Private Key, and
// crypt.go goes on with AES.
func (s *Service) cryptRSA(ctx context.Context, it *kmip.Item, enc bool) (out *msg.Node, ok bool, err error) {
	id, err := uid(it)
	if err != nil {
		return nil, false, nil
	}
	o, err := s.view(ctx, id)
	if err != nil || (kmip14.ObjectType(o.Type) != kmip14.ObjectTypePublicKey && kmip14.ObjectType(o.Type) != kmip14.ObjectTypePrivateKey) {
		return nil, false, nil // the AES path reports the same error
	}
	if it.Payload.Child(kmip14.TagInitIndicator) != nil || it.Payload.Child(kmip14.TagCorrelationValue) != nil {
		return nil, true, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "streaming RSA encryption is not supported")
	}
	h, err := oaepParams(it.Payload.Child(kmip14.TagCryptographicParameters))
	if err != nil {
		return nil, true, err
	}
	data := it.Payload.Child(kmip14.TagData)
	if data == nil || data.Type != msg.TypeByteString {
		return nil, true, kmip.Errorf(kmip14.ResultReasonInvalidField, "the request needs Data")
	}
	var res []byte
	if enc {
		if o, err = s.keyFor(ctx, it, kmip14.CryptographicUsageMaskEncrypt, kmip14.ObjectTypePublicKey); err != nil {
			return nil, true, err
		}
		pub, err := publicKeyOf(o)
		if err != nil {
			return nil, true, err
		}
		rk, isRSA := pub.(*rsa.PublicKey)
		if !isRSA {
			return nil, true, kmip.Errorf(kmip14.ResultReasonInvalidField, "object %q is not an RSA key", o.ID)
		}
		if res, err = rsa.EncryptOAEP(hashFuncs[h](), rand.Reader, rk, data.Bytes, nil); err != nil {
			return nil, true, kmip.Errorf(kmip14.ResultReasonInvalidField, "Data of %d bytes is too long for RSA-OAEP with this key", len(data.Bytes))
		}
	} else {
		if o, err = s.keyFor(ctx, it, kmip14.CryptographicUsageMaskDecrypt, kmip14.ObjectTypePrivateKey); err != nil {
			return nil, true, err
		}
		if kmip14.CryptographicAlgorithm(o.Algorithm) != kmip14.CryptographicAlgorithmRSA {
			return nil, true, kmip.Errorf(kmip14.ResultReasonInvalidField, "object %q is not an RSA key", o.ID)
		}
		if res, err = s.keys.DecryptOAEP(ctx, hsm.OAEPRequest{Key: privKeyOf(o), Hash: h, Data: data.Bytes}); err != nil {
			return nil, true, err
		}
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Text(kmip14.TagUniqueIdentifier, o.ID),
		msg.Bytes(kmip14.TagData, res)), true, nil
}
