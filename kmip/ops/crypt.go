package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// cipherParams is what Encrypt and Decrypt read from Cryptographic Parameters.
type cipherParams struct {
	mode     hsm.Mode
	pad      bool
	randomIV bool
	tagLen   int
}

// parseParams applies CLIENTS.md W9: no Cryptographic Parameters at all means AES-CBC
// with PKCS5 padding and a server-generated IV, which is what mongod's audit-log
// encryption relies on. Parameters that are present but name no Padding Method mean no
// padding, as the KMIP profiles' test cases expect.
func parseParams(p *msg.Node) (cipherParams, error) {
	if p == nil {
		return cipherParams{mode: hsm.ModeCBC, pad: true}, nil
	}
	cp := cipherParams{mode: hsm.ModeCBC}
	if a := p.Child(kmip14.TagCryptographicAlgorithm); a != nil && kmip14.CryptographicAlgorithm(a.Int) != kmip14.CryptographicAlgorithmAES {
		return cp, kmip.Errorf(kmip14.ResultReasonInvalidField, "cryptographic algorithm %v is not supported; use AES", kmip14.CryptographicAlgorithm(a.Int))
	}
	if m := p.Child(kmip14.TagBlockCipherMode); m != nil {
		switch kmip14.BlockCipherMode(m.Int) {
		case kmip14.BlockCipherModeCBC:
			cp.mode = hsm.ModeCBC
		case kmip14.BlockCipherModeECB:
			cp.mode = hsm.ModeECB
		case kmip14.BlockCipherModeCTR:
			cp.mode, cp.pad = hsm.ModeCTR, false
		case kmip14.BlockCipherModeGCM:
			cp.mode, cp.pad = hsm.ModeGCM, false
		default:
			return cp, kmip.Errorf(kmip14.ResultReasonInvalidField, "block cipher mode %v is not supported; use CBC, ECB, CTR or GCM", kmip14.BlockCipherMode(m.Int))
		}
	}
	if pm := p.Child(kmip14.TagPaddingMethod); pm != nil && (cp.mode == hsm.ModeCBC || cp.mode == hsm.ModeECB) {
		switch kmip14.PaddingMethod(pm.Int) {
		case kmip14.PaddingMethodNone:
			cp.pad = false
		case kmip14.PaddingMethodPKCS5:
			cp.pad = true
		default:
			return cp, kmip.Errorf(kmip14.ResultReasonInvalidField, "padding method %v is not supported; use PKCS5 or None", kmip14.PaddingMethod(pm.Int))
		}
	}
	if r := p.Child(kmip14.TagRandomIV); r != nil {
		cp.randomIV = r.Int == 1
	}
	if t := p.Child(kmip14.TagTagLength); t != nil {
		cp.tagLen = int(t.Int)
	}
	return cp, nil
}

// cipherKey loads the key for Encrypt or Decrypt and checks that it may do that.
func (s *Service) cipherKey(ctx context.Context, it *kmip.Item, usage kmip14.CryptographicUsageMask) (*meta.Object, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	o, err := s.view(ctx, id)
	if err != nil {
		return nil, err
	}
	st := kmip14.State(o.State)
	switch {
	case kmip14.ObjectType(o.Type) != kmip14.ObjectTypeSymmetricKey || !isAES(o):
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "object %q is not an AES key", id)
	case usage == kmip14.CryptographicUsageMaskEncrypt && st != kmip14.StateActive:
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is %v; only an Active key encrypts", id, st)
	case usage == kmip14.CryptographicUsageMaskDecrypt && st != kmip14.StateActive && st != kmip14.StateDeactivated && st != kmip14.StateCompromised:
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is %v and cannot decrypt", id, st)
	case o.UsageMask&int32(usage) == 0:
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "the usage mask of object %q does not allow %v", id, usage)
	}
	return o, nil
}

// encrypt encrypts Data under an Active AES key inside the token (KMIP Encrypt).
func (s *Service) encrypt(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	cp, err := parseParams(it.Payload.Child(kmip14.TagCryptographicParameters))
	if err != nil {
		return nil, err
	}
	data := it.Payload.Child(kmip14.TagData)
	if data == nil || data.Type != msg.TypeByteString {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Encrypt needs Data")
	}
	o, err := s.cipherKey(ctx, it, kmip14.CryptographicUsageMaskEncrypt)
	if err != nil {
		return nil, err
	}
	req := hsm.CipherRequest{Key: keyOf(o), Mode: cp.mode, Pad: cp.pad, TagLen: cp.tagLen, Data: data.Bytes}
	if iv := it.Payload.Child(kmip14.TagIVCounterNonce); iv != nil && !cp.randomIV {
		req.IV = iv.Bytes
	}
	if aad := it.Payload.Child(kmip14.TagAuthenticatedEncryptionAdditionalData); aad != nil {
		req.AAD = aad.Bytes
	}
	res, err := s.keys.Encrypt(ctx, req)
	if err != nil {
		return nil, err
	}
	out := msg.Struct(kmip14.TagResponsePayload,
		msg.Text(kmip14.TagUniqueIdentifier, o.ID),
		msg.Bytes(kmip14.TagData, res.Data))
	if req.IV == nil && cp.mode != hsm.ModeECB {
		out.Children = append(out.Children, msg.Bytes(kmip14.TagIVCounterNonce, res.IV))
	}
	if cp.mode == hsm.ModeGCM && it.Version.AtLeast(1, 4) {
		out.Children = append(out.Children, msg.Bytes(kmip14.TagAuthenticatedEncryptionTag, res.Tag))
	}
	return out, nil
}

// decrypt decrypts Data with an AES key inside the token (KMIP Decrypt).
func (s *Service) decrypt(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	cp, err := parseParams(it.Payload.Child(kmip14.TagCryptographicParameters))
	if err != nil {
		return nil, err
	}
	data := it.Payload.Child(kmip14.TagData)
	if data == nil || data.Type != msg.TypeByteString {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Decrypt needs Data")
	}
	o, err := s.cipherKey(ctx, it, kmip14.CryptographicUsageMaskDecrypt)
	if err != nil {
		return nil, err
	}
	req := hsm.CipherRequest{Key: keyOf(o), Mode: cp.mode, Pad: cp.pad, TagLen: cp.tagLen, Data: data.Bytes}
	if iv := it.Payload.Child(kmip14.TagIVCounterNonce); iv != nil {
		req.IV = iv.Bytes
	} else if cp.mode != hsm.ModeECB {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Decrypt in %v mode needs the IV/Counter/Nonce", cp.mode)
	}
	if aad := it.Payload.Child(kmip14.TagAuthenticatedEncryptionAdditionalData); aad != nil {
		req.AAD = aad.Bytes
	}
	if tag := it.Payload.Child(kmip14.TagAuthenticatedEncryptionTag); tag != nil {
		req.Tag = tag.Bytes
	}
	plain, err := s.keys.Decrypt(ctx, req)
	if err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Text(kmip14.TagUniqueIdentifier, o.ID),
		msg.Bytes(kmip14.TagData, plain)), nil
}
