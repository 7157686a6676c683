package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// hmacAlgorithms maps the KMIP HMAC algorithms the token computes.
var hmacAlgorithms = map[kmip14.CryptographicAlgorithm]hsm.MACAlgorithm{
	kmip14.CryptographicAlgorithmHMAC_SHA1:   hsm.HMACSHA1,
	kmip14.CryptographicAlgorithmHMAC_SHA256: hsm.HMACSHA256,
	kmip14.CryptographicAlgorithmHMAC_SHA384: hsm.HMACSHA384,
	kmip14.CryptographicAlgorithmHMAC_SHA512: hsm.HMACSHA512,
}

// macRequest loads the key of a MAC or MAC Verify, checks it may be used for usage,
// and picks the algorithm: the Cryptographic Algorithm of the request's (or else the
// key's) Cryptographic Parameters, else the key's own algorithm. An HMAC key computes
// its HMAC; an AES key computes AES-CMAC (Block Cipher Mode CMAC, or none).
func (s *Service) macRequest(ctx context.Context, it *kmip.Item, usage kmip14.CryptographicUsageMask) (hsm.MACRequest, *meta.Object, error) {
	var r hsm.MACRequest
	id, err := uid(it)
	if err != nil {
		return r, nil, err
	}
	data := it.Payload.Child(kmip14.TagData)
	if data == nil || data.Type != msg.TypeByteString {
		return r, nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "%v needs Data", kmip14.Operation(it.Operation))
	}
	o, err := s.view(ctx, id)
	if err != nil {
		return r, nil, err
	}
	if err := usable(o, usage, s.now()); err != nil {
		return r, nil, err
	}
	alg := kmip14.CryptographicAlgorithm(o.Algorithm)
	p := paramsFor(it, o)
	if a := p.Child(kmip14.TagCryptographicAlgorithm); a != nil {
		alg = kmip14.CryptographicAlgorithm(a.Int)
	}
	key := keyOf(o)
	switch m, isHMAC := hmacAlgorithms[alg]; {
	case isHMAC && key.Kind == hsm.KindHMAC:
		r.Algorithm = m
	case alg == kmip14.CryptographicAlgorithmAES && key.Kind == hsm.KindAES:
		if m := p.Child(kmip14.TagBlockCipherMode); m != nil && kmip14.BlockCipherMode(m.Int) != kmip14.BlockCipherModeCMAC {
			return r, nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "an AES key MACs with CMAC, not %v", kmip14.BlockCipherMode(m.Int))
		}
		r.Algorithm = hsm.AESCMAC
	default:
		return r, nil, kmip.Errorf(kmip14.ResultReasonInvalidField,
			"object %q (%v) cannot compute a %v MAC; use an HMAC-SHA1/256/384/512 key or an AES key (CMAC)", id, kmip14.CryptographicAlgorithm(o.Algorithm), alg)
	}
	if err := s.consume(ctx, o, int64(len(data.Bytes))); err != nil {
		return r, nil, err
	}
	r.Key, r.Data = key, data.Bytes
	return r, o, nil
}

// mac computes a MAC inside the token (KMIP MAC).
func (s *Service) mac(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	r, o, err := s.macRequest(ctx, it, kmip14.CryptographicUsageMaskMACGenerate)
	if err != nil {
		return nil, err
	}
	out, err := s.keys.MAC(ctx, r)
	if err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Text(kmip14.TagUniqueIdentifier, o.ID),
		msg.Bytes(kmip14.TagMACData, out)), nil
}

// macVerify checks a MAC inside the token (KMIP MAC Verify).
func (s *Service) macVerify(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	md := it.Payload.Child(kmip14.TagMACData)
	if md == nil || md.Type != msg.TypeByteString {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "MAC Verify needs MAC Data")
	}
	r, o, err := s.macRequest(ctx, it, kmip14.CryptographicUsageMaskMACVerify)
	if err != nil {
		return nil, err
	}
	ok, err := s.keys.VerifyMAC(ctx, r, md.Bytes)
	if err != nil {
		return nil, err
	}
	v := kmip14.ValidityIndicatorInvalid
	if ok {
		v = kmip14.ValidityIndicatorValid
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Text(kmip14.TagUniqueIdentifier, o.ID),
		msg.Enum(kmip14.TagValidityIndicator, uint32(v))), nil
}
