package ops

import (
	"context"
	"crypto"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// Key wrapping (KMIP 1.x Key Wrapping Specification and Key Wrapping Data), all inside
// the token: Get wraps an AES or private key under another managed key with C_WrapKey,
// and Register imports a wrapped key with C_UnwrapKey, so neither key appears in the
// clear outside the token. Supported: Wrapping Method Encrypt; AES Key Wrap (RFC 3394,
// Block Cipher Mode NIST Key Wrap) or AES Key Wrap with Padding (RFC 5649) under an
// AES key; RSA-OAEP under an RSA public key (Get) or with its private key (Register).
// Encoding Option TTLV Encoding (Get only, wrap_ttlv.go) wraps the TTLV encoding of
// the Key Value structure, with the attributes the Key Wrapping Specification names.
// KMIP 1.1+ says an absent Encoding Option means TTLV Encoding; clients (PyKMIP among
// them) omit it and mean the bare key, so absent is read as No Encoding here. A
// wrapped Key Value is returned as a Byte String, as KMIP 1.x's Key Block table says
// (PyKMIP 0.10 expects a structure and cannot decode it).

// keyInfo is a parsed Encryption Key Information and the Encoding Option.
type keyInfo struct {
	id       string
	params   *msg.Node
	encoding kmip14.EncodingOption
}

// wrapInfo reads the fields common to Key Wrapping Specification and Key Wrapping Data.
func wrapInfo(n *msg.Node) (keyInfo, error) {
	if m := n.Child(kmip14.TagWrappingMethod); m == nil || kmip14.WrappingMethod(m.Int) != kmip14.WrappingMethodEncrypt {
		return keyInfo{}, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "only Wrapping Method Encrypt is supported")
	}
	if n.Child(kmip14.TagMACSignatureKeyInformation) != nil {
		return keyInfo{}, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "MAC/Signature Key Information is not supported; wrap with Encrypt only")
	}
	encoding := kmip14.EncodingOptionNoEncoding
	if e := n.Child(kmip14.TagEncodingOption); e != nil {
		encoding = kmip14.EncodingOption(e.Int)
		if e.Type != msg.TypeEnumeration || (encoding != kmip14.EncodingOptionNoEncoding && encoding != kmip14.EncodingOptionTTLVEncoding) {
			return keyInfo{}, kmip.Errorf(kmip14.ResultReasonEncodingOptionError, "Encoding Option must be No Encoding or TTLV Encoding")
		}
	}
	eki := n.Child(kmip14.TagEncryptionKeyInformation)
	id := eki.Child(kmip14.TagUniqueIdentifier)
	if id == nil || id.Type != msg.TypeTextString {
		return keyInfo{}, kmip.Errorf(kmip14.ResultReasonInvalidField, "Encryption Key Information needs the wrapping key's Unique Identifier")
	}
	return keyInfo{id: id.Text(), params: eki.Child(kmip14.TagCryptographicParameters), encoding: encoding}, nil
}

// wrapMech decides the mechanism from the wrapping key and the parameters. Without a
// Block Cipher Mode an AES key wraps with RFC 3394 when the key is a multiple of 8
// bytes (AES keys) and RFC 5649 otherwise (PKCS#8); RSA keys use OAEP, SHA-1 by default.
func wrapMech(kek *meta.Object, p *msg.Node, padded bool) (hsm.WrapMech, crypto.Hash, error) {
	if kmip14.ObjectType(kek.Type) == kmip14.ObjectTypeSymmetricKey {
		m := p.Child(kmip14.TagBlockCipherMode)
		switch {
		case m == nil && padded, m != nil && kmip14.BlockCipherMode(m.Int) == kmip14.BlockCipherModeAESKeyWrapPadding:
			return hsm.WrapAESKWP, 0, nil
		case m == nil, kmip14.BlockCipherMode(m.Int) == kmip14.BlockCipherModeNISTKeyWrap:
			return hsm.WrapAESKW, 0, nil
		}
		return 0, 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "block cipher mode %v cannot wrap keys; use NIST Key Wrap or AES Key Wrap Padding", kmip14.BlockCipherMode(m.Int))
	}
	if pm := p.Child(kmip14.TagPaddingMethod); pm != nil && kmip14.PaddingMethod(pm.Int) != kmip14.PaddingMethodOAEP {
		return 0, 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "RSA keys wrap with OAEP padding only")
	}
	h, err := hashParam(p, kmip14.TagHashingAlgorithm, crypto.SHA1)
	if err != nil {
		return 0, 0, err
	}
	if mh, err := hashParam(p, kmip14.TagMaskGeneratorHashingAlgorithm, h); err != nil || mh != h {
		return 0, 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "OAEP needs the same hash for the mask generator")
	}
	return hsm.WrapRSAOAEP, h, nil
}

// wrappingKey loads the managed key named in Encryption Key Information and checks that
// its usage mask allows usage (Wrap Key or Unwrap Key).
func (s *Service) wrappingKey(ctx context.Context, it *kmip.Item, id string, usage kmip14.CryptographicUsageMask, types ...kmip14.ObjectType) (*meta.Object, error) {
	kit := &kmip.Item{Version: it.Version, Operation: it.Operation, Payload: msg.Struct(kmip14.TagRequestPayload, msg.Text(kmip14.TagUniqueIdentifier, id))}
	o, err := s.keyFor(ctx, kit, usage, types...)
	if err != nil {
		return nil, err
	}
	if kmip14.ObjectType(o.Type) == kmip14.ObjectTypeSymmetricKey && !isAES(o) {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "wrapping key %q is not an AES key", id)
	}
	if kmip14.ObjectType(o.Type) != kmip14.ObjectTypeSymmetricKey && kmip14.CryptographicAlgorithm(o.Algorithm) != kmip14.CryptographicAlgorithmRSA {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "wrapping key %q is not an RSA key", id)
	}
	return o, nil
}

// getWrapped is Get with a Key Wrapping Specification: the key leaves wrapped under
// another managed key, computed by the token.
func (s *Service) getWrapped(ctx context.Context, it *kmip.Item, o *meta.Object, kws *msg.Node) (*msg.Node, error) {
	if !genericBool(o, attrExtractable, true) {
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is not Extractable: it can only be used inside the server", o.ID)
	}
	info, err := wrapInfo(kws)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range kws.All(kmip14.TagAttributeName) {
		if n.Type != msg.TypeTextString {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Attribute Name must be a Text String")
		}
		names = append(names, n.Text())
	}
	if len(names) > 0 && info.encoding != kmip14.EncodingOptionTTLVEncoding {
		return nil, kmip.Errorf(kmip14.ResultReasonEncodingOptionError, "attributes can be wrapped only with Encoding Option TTLV Encoding")
	}
	var key hsm.Key
	format := kmip14.KeyFormatTypeRaw
	switch {
	case kmip14.ObjectType(o.Type) == kmip14.ObjectTypeSymmetricKey && isAES(o):
		key = keyOf(o)
	case kmip14.ObjectType(o.Type) == kmip14.ObjectTypePrivateKey:
		key, format = privKeyOf(o), kmip14.KeyFormatTypePKCS_8
	default:
		return nil, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "only AES keys and private keys can be returned wrapped")
	}
	if f := it.Payload.Child(kmip14.TagKeyFormatType); f != nil && kmip14.KeyFormatType(f.Int) != format {
		return nil, kmip.Errorf(kmip14.ResultReasonKeyFormatTypeNotSupported, "a wrapped %v is returned in %v format only", kmip14.ObjectType(o.Type), format)
	}
	kek, err := s.wrappingKey(ctx, it, info.id, kmip14.CryptographicUsageMaskWrapKey, kmip14.ObjectTypeSymmetricKey, kmip14.ObjectTypePublicKey)
	if err != nil {
		return nil, err
	}
	// A TTLV encoding is always a multiple of 8 bytes, so RFC 3394 is the default for it.
	ttlvEncoded := info.encoding == kmip14.EncodingOptionTTLVEncoding
	mech, h, err := wrapMech(kek, info.params, format != kmip14.KeyFormatTypeRaw && !ttlvEncoded)
	if err != nil {
		return nil, err
	}
	req := hsm.WrapRequest{Key: key, Mech: mech, Hash: h}
	if mech == hsm.WrapRSAOAEP {
		req.Public = kek.Wrapped
	} else {
		req.KEK = keyOf(kek)
	}
	var blob []byte
	if ttlvEncoded {
		blob, err = s.wrapTTLV(ctx, o, req, selectNamed(o, names, it.Version)) // wrap_ttlv.go
	} else {
		blob, err = s.keys.WrapKey(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	if err := s.markServed(ctx, o); err != nil {
		return nil, err
	}
	eki := msg.Struct(kmip14.TagEncryptionKeyInformation, msg.Text(kmip14.TagUniqueIdentifier, kek.ID), info.params)
	kwd := msg.Struct(kmip14.TagKeyWrappingData, msg.Enum(kmip14.TagWrappingMethod, uint32(kmip14.WrappingMethodEncrypt)), eki,
		kws.Child(kmip14.TagEncodingOption))
	block := keyBlock(o, format, msg.Bytes(kmip14.TagKeyValue, blob), kwd)
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Enum(kmip14.TagObjectType, o.Type),
		msg.Text(kmip14.TagUniqueIdentifier, o.ID),
		msg.Struct(objectTag(o.Type), block)), nil
}

// registerWrapped is Register of a Symmetric Key (AES) or Private Key whose Key Block
// carries Key Wrapping Data: the token unwraps it with the named managed key and wraps
// it under the master key.
func (s *Service) registerWrapped(ctx context.Context, it *kmip.Item, o *meta.Object, block *msg.Node, in []attr) (*msg.Node, error) {
	info, err := wrapInfo(block.Child(kmip14.TagKeyWrappingData))
	if err != nil {
		return nil, err
	}
	if info.encoding == kmip14.EncodingOptionTTLVEncoding {
		// The token cannot parse TTLV: the unwrapped Key Value structure would be read
		// back into this process, key bytes and all, which the server never does with
		// key material sent wrapped. The client can register it with No Encoding.
		return nil, kmip.Errorf(kmip14.ResultReasonEncodingOptionError, "wrapped key material must use Encoding Option No Encoding: the HSM unwraps the bare key, it cannot parse a TTLV-encoded Key Value")
	}
	// KMIP 1.x makes a wrapped Key Value a Byte String; PyKMIP sends a Key Value
	// structure whose Key Material is the wrapped bytes. Both are accepted.
	kv := block.Child(kmip14.TagKeyValue)
	if kv != nil && kv.Type == msg.TypeStructure && len(kv.Children) == 1 {
		kv = kv.Child(kmip14.TagKeyMaterial)
	}
	if kv == nil || kv.Type != msg.TypeByteString || len(kv.Bytes) == 0 {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "a wrapped Key Value must be a non-empty Byte String")
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
	ft := block.Child(kmip14.TagKeyFormatType)
	var kind hsm.KeyKind
	switch {
	case kmip14.ObjectType(o.Type) == kmip14.ObjectTypeSymmetricKey && kmip14.CryptographicAlgorithm(o.Algorithm) == kmip14.CryptographicAlgorithmAES:
		kind, o.Format = hsm.KindAES, uint32(kmip14.KeyFormatTypeRaw)
	case kmip14.ObjectType(o.Type) == kmip14.ObjectTypePrivateKey && kmip14.CryptographicAlgorithm(o.Algorithm) == kmip14.CryptographicAlgorithmRSA:
		kind, o.Format = hsm.KindRSA, uint32(kmip14.KeyFormatTypePKCS_8)
	case kmip14.ObjectType(o.Type) == kmip14.ObjectTypePrivateKey && isEC(o.Algorithm):
		kind, o.Format = hsm.KindEC, uint32(kmip14.KeyFormatTypePKCS_8)
	default:
		return nil, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "only wrapped AES keys and RSA or EC private keys can be registered")
	}
	if ft == nil || uint32(ft.Int) != o.Format {
		return nil, kmip.Errorf(kmip14.ResultReasonKeyFormatTypeNotSupported, "a wrapped %v must be in %v format", kmip14.ObjectType(o.Type), kmip14.KeyFormatType(o.Format))
	}
	kek, err := s.wrappingKey(ctx, it, info.id, kmip14.CryptographicUsageMaskUnwrapKey, kmip14.ObjectTypeSymmetricKey, kmip14.ObjectTypePrivateKey)
	if err != nil {
		return nil, err
	}
	mech, h, err := wrapMech(kek, info.params, kind != hsm.KindAES)
	if err != nil {
		return nil, err
	}
	kekKey := keyOf(kek)
	if kmip14.ObjectType(kek.Type) == kmip14.ObjectTypePrivateKey {
		kekKey = privKeyOf(kek)
	}
	u, err := s.keys.UnwrapKey(ctx, hsm.UnwrapRequest{Blob: kv.Bytes, Kind: kind, KEK: kekKey, Mech: mech, Hash: h})
	if err != nil {
		return nil, err
	}
	if o.Length != 0 && int(o.Length) != u.Bits {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "the unwrapped key has %d bits, not %d", u.Bits, o.Length)
	}
	o.Length = int32(u.Bits)
	o.Wrapped, o.KEK = u.Wrapped.Blob, u.Wrapped.KEK
	if err := s.finishNew(ctx, o, u.Digest, false, it.Version); err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, o.ID)), nil
}
