package ops

import (
	"context"
	"time"

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

// paramsFor picks the Cryptographic Parameters of a request: the request's own,
// else the key's Cryptographic Parameters attribute (as the KMIP profiles' test
// cases expect), else nil, which parseParams reads as CLIENTS.md W9's default.
func paramsFor(it *kmip.Item, o *meta.Object) *msg.Node {
	if p := it.Payload.Child(kmip14.TagCryptographicParameters); p != nil {
		return p
	}
	return genericNode(o, attrCryptoParams)
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
	if t := p.Child(kmip14.TagTagLength); t != nil && cp.mode == hsm.ModeGCM {
		cp.tagLen = int(t.Int)
		// NIST SP 800-38D tag lengths. The Cryptographic Services profile's test
		// cases (CS-BC-M-GCM-1) expect General Failure for any other.
		if n := cp.tagLen; n != 4 && n != 8 && (n < 12 || n > 16) {
			return cp, kmip.Errorf(kmip14.ResultReasonGeneralFailure, "invalid GCM tag length %d: use 4, 8 or 12 to 16 bytes", n)
		}
	}
	return cp, nil
}

// protects reports whether a use applies protection (and so is bounded by the Protect
// Stop Date) rather than processing protected data (bounded by the Process Start
// Date).
func protects(usage kmip14.CryptographicUsageMask) bool {
	switch usage {
	case kmip14.CryptographicUsageMaskEncrypt, kmip14.CryptographicUsageMaskMACGenerate,
		kmip14.CryptographicUsageMaskSign, kmip14.CryptographicUsageMaskWrapKey:
		return true
	}
	return false
}

// usable checks that o may be used for usage now: its state, its usage mask, and its
// Protect Stop Date (for protecting uses) or Process Start Date (for the others).
func usable(o *meta.Object, usage kmip14.CryptographicUsageMask, now time.Time) error {
	st := kmip14.State(o.State)
	switch {
	case protects(usage) && st != kmip14.StateActive:
		return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is %v; only an Active key may %v", o.ID, st, usage)
	case !protects(usage) && st != kmip14.StateActive && st != kmip14.StateDeactivated && st != kmip14.StateCompromised:
		return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is %v and cannot %v", o.ID, st, usage)
	case o.UsageMask&int32(usage) == 0:
		return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "the usage mask of object %q does not allow %v", o.ID, usage)
	}
	if protects(usage) {
		if d := genericDate(o, attrProtectStop); !d.IsZero() && !now.Before(d) {
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "the Protect Stop Date of object %q has passed", o.ID)
		}
	} else if d := genericDate(o, attrProcessStart); !d.IsZero() && now.Before(d) {
		return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "the Process Start Date of object %q has not come yet", o.ID)
	}
	return nil
}

// cipherKey loads the key for Encrypt or Decrypt, checks that it may do that, and
// charges n bytes to its Usage Limits.
func (s *Service) cipherKey(ctx context.Context, id string, usage kmip14.CryptographicUsageMask, n int) (*meta.Object, error) {
	o, err := s.view(ctx, id)
	if err != nil {
		return nil, err
	}
	if kmip14.ObjectType(o.Type) != kmip14.ObjectTypeSymmetricKey || !isAES(o) {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "object %q is not an AES key", id)
	}
	if err := usable(o, usage, s.now()); err != nil {
		return nil, err
	}
	if err := s.consume(ctx, o, int64(n)); err != nil {
		return nil, err
	}
	return o, nil
}

// cryptRequest is what Encrypt and Decrypt read from their payload.
type cryptRequest struct {
	id             string
	data, iv, aad  []byte
	tag            []byte
	correlation    []byte
	init, final    bool
	streamed       bool
	hasIV, hasData bool
}

func readCrypt(it *kmip.Item) (cryptRequest, error) {
	var r cryptRequest
	id, err := uid(it)
	if err != nil {
		return r, err
	}
	r.id = id
	p := it.Payload
	if d := p.Child(kmip14.TagData); d != nil {
		if d.Type != msg.TypeByteString {
			return r, kmip.Errorf(kmip14.ResultReasonInvalidField, "Data must be a Byte String")
		}
		r.data, r.hasData = d.Bytes, true
	}
	if iv := p.Child(kmip14.TagIVCounterNonce); iv != nil {
		r.iv, r.hasIV = iv.Bytes, true
	}
	if aad := p.Child(kmip14.TagAuthenticatedEncryptionAdditionalData); aad != nil {
		r.aad = aad.Bytes
	}
	if tag := p.Child(kmip14.TagAuthenticatedEncryptionTag); tag != nil {
		r.tag = tag.Bytes
	}
	// Streaming (Init Indicator, Correlation Value, Final Indicator) is KMIP 1.3.
	if it.Version.AtLeast(1, 3) {
		if c := p.Child(kmip14.TagCorrelationValue); c != nil {
			r.correlation = c.Bytes
		}
		r.init = isTrue(p.Child(kmip14.TagInitIndicator))
		r.final = isTrue(p.Child(kmip14.TagFinalIndicator))
		r.streamed = r.init || r.correlation != nil
	}
	return r, nil
}

// encrypt encrypts Data under an Active AES key inside the token (KMIP Encrypt).
func (s *Service) encrypt(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	if out, ok, err := s.cryptRSA(ctx, it, true); ok { // crypt_rsa.go
		return out, err
	}
	r, err := readCrypt(it)
	if err != nil {
		return nil, err
	}
	if !r.hasData {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Encrypt needs Data")
	}
	if r.streamed {
		return s.encryptPart(ctx, it, r)
	}
	o, err := s.cipherKey(ctx, r.id, kmip14.CryptographicUsageMaskEncrypt, len(r.data))
	if err != nil {
		return nil, err
	}
	cp, err := parseParams(paramsFor(it, o))
	if err != nil {
		return nil, err
	}
	req := hsm.CipherRequest{Key: keyOf(o), Mode: cp.mode, Pad: cp.pad, TagLen: cp.tagLen, Data: r.data, AAD: r.aad}
	if !cp.randomIV {
		req.IV = r.iv
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
	if out, ok, err := s.cryptRSA(ctx, it, false); ok { // crypt_rsa.go
		return out, err
	}
	r, err := readCrypt(it)
	if err != nil {
		return nil, err
	}
	if !r.hasData {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Decrypt needs Data")
	}
	if r.streamed {
		return s.decryptPart(ctx, it, r)
	}
	o, err := s.cipherKey(ctx, r.id, kmip14.CryptographicUsageMaskDecrypt, len(r.data))
	if err != nil {
		return nil, err
	}
	cp, err := parseParams(paramsFor(it, o))
	if err != nil {
		return nil, err
	}
	if err := needIV(cp, r.hasIV); err != nil {
		return nil, err
	}
	plain, err := s.keys.Decrypt(ctx, hsm.CipherRequest{Key: keyOf(o), Mode: cp.mode, Pad: cp.pad, TagLen: cp.tagLen,
		Data: r.data, IV: r.iv, AAD: r.aad, Tag: r.tag})
	if err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Text(kmip14.TagUniqueIdentifier, o.ID),
		msg.Bytes(kmip14.TagData, plain)), nil
}

// needIV refuses a Decrypt without the IV its mode needs. The Cryptographic Services
// profile's test cases (CS-BC-M-11, -12, -13) expect Invalid Message.
func needIV(cp cipherParams, hasIV bool) error {
	if !hasIV && cp.mode != hsm.ModeECB {
		return kmip.Errorf(kmip14.ResultReasonInvalidMessage, "Decrypt in %v mode needs the IV/Counter/Nonce", cp.mode)
	}
	return nil
}

func isTrue(n *msg.Node) bool { return n != nil && n.Type == msg.TypeBoolean && n.Int == 1 }
