package hsm

import (
	"context"
	"crypto/subtle"
	"fmt"

	"github.com/miekg/pkcs11"
)

// Symmetric kinds beyond AES and Secret Data. The values stay clear of keys.go's and
// asym.go's.
const (
	// KindHMAC is a CKK_GENERIC_SECRET used as an HMAC key. Its value is stored
	// exactly (no padding marker, unlike KindSecret, since HMAC hashes the whole
	// value), so it must be a multiple of 8 bytes: SoftHSM2 loses RFC 5649's length
	// indicator on unwrap.
	KindHMAC KeyKind = iota + 32
	// KindDES3 is a CKK_DES3 key: 24 bytes with parity (KMIP 3DES, 168 bits).
	KindDES3
)

// maxHMAC bounds an HMAC key; longer keys than the hash block add nothing.
const maxHMAC = 512

// MACAlgorithm is a MAC computed in the token.
type MACAlgorithm int

// MAC algorithms.
const (
	HMACSHA1 MACAlgorithm = iota + 1
	HMACSHA256
	HMACSHA384
	HMACSHA512
	AESCMAC
)

var macMechs = map[MACAlgorithm]uint{
	HMACSHA1:   pkcs11.CKM_SHA_1_HMAC,
	HMACSHA256: pkcs11.CKM_SHA256_HMAC,
	HMACSHA384: pkcs11.CKM_SHA384_HMAC,
	HMACSHA512: pkcs11.CKM_SHA512_HMAC,
	AESCMAC:    pkcs11.CKM_AES_CMAC,
}

// MACRequest is one MAC or VerifyMAC call. HMAC algorithms take a KindHMAC key,
// AES-CMAC a KindAES key.
type MACRequest struct {
	Key       Key
	Algorithm MACAlgorithm
	Data      []byte
}

func (r MACRequest) check() (uint, error) {
	mech, ok := macMechs[r.Algorithm]
	if !ok {
		return 0, fmt.Errorf("MAC algorithm %d: %w", int(r.Algorithm), ErrInvalidInput)
	}
	want := KindHMAC
	if r.Algorithm == AESCMAC {
		want = KindAES
	}
	if r.Key.Kind != want {
		return 0, fmt.Errorf("MAC algorithm %d with a %s key: %w", int(r.Algorithm), r.Key.Kind, ErrInvalidInput)
	}
	return mech, nil
}

// exactValue checks material for the kinds stored byte for byte and returns a copy.
func exactValue(kind KeyKind, material []byte) ([]byte, error) {
	if err := checkExact(kind, len(material)); err != nil {
		return nil, err
	}
	return append([]byte(nil), material...), nil
}

func checkExact(kind KeyKind, n int) error {
	switch {
	case kind == KindDES3 && n != 24:
		return fmt.Errorf("3DES key of %d bytes (want 24): %w", n, ErrInvalidInput)
	case kind == KindHMAC && (n < 8 || n > maxHMAC || n%8 != 0):
		return fmt.Errorf("HMAC key of %d bytes (want a multiple of 8 up to %d): %w", n, maxHMAC, ErrInvalidInput)
	}
	return nil
}

// GenerateSecret creates an HMAC key of bits (a multiple of 64 up to 4096) or a 3DES
// key (bits 168 or 192) inside the token, like Generate does for AES: it returns the
// key wrapped under the master key and the SHA-256 digest of its value computed by
// the token.
func (t *Token) GenerateSecret(ctx context.Context, kind KeyKind, bits int) (w Wrapped, digest []byte, err error) {
	tmpl := []*pkcs11.Attribute{}
	var mech uint
	switch {
	case kind == KindHMAC && bits%64 == 0 && checkExact(kind, bits/8) == nil:
		mech = pkcs11.CKM_GENERIC_SECRET_KEY_GEN
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, bits/8))
	case kind == KindDES3 && (bits == 168 || bits == 192):
		mech = pkcs11.CKM_DES3_KEY_GEN
	default:
		return Wrapped{}, nil, fmt.Errorf("generate %d-bit %s key: %w", bits, kind, ErrInvalidInput)
	}
	if err := t.begin(); err != nil {
		return Wrapped{}, nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return Wrapped{}, nil, fmt.Errorf("generate %s key: %w", kind, err)
	}
	defer func() { t.release(s, err) }()
	master, err := t.masterKey()
	if err != nil {
		return Wrapped{}, nil, fmt.Errorf("generate %s key: %w", kind, err)
	}
	tmpl = append(newKeyTemplate(kind, master.trusted), tmpl...)
	h, err := t.p11.GenerateKey(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, tmpl)
	if err != nil {
		return Wrapped{}, nil, fmt.Errorf("generate %s key: %w", kind, mapErr(err, opOther))
	}
	defer t.p11.DestroyObject(s.h, h)
	if digest, err = t.digestHandle(s, h); err != nil {
		return Wrapped{}, nil, fmt.Errorf("generate %s key: %w", kind, err)
	}
	if w, err = t.wrap(s, master, h); err != nil {
		return Wrapped{}, nil, fmt.Errorf("generate %s key: %w", kind, err)
	}
	return w, digest, nil
}

// MAC computes r.Algorithm over r.Data with r.Key inside the token (C_Sign). The key
// is unwrapped as a sensitive, non-extractable signing object for this call only.
func (t *Token) MAC(ctx context.Context, r MACRequest) (mac []byte, err error) {
	mech, err := r.check()
	if err == nil {
		err = t.checkKey(r.Key)
	}
	if err != nil {
		return nil, fmt.Errorf("mac with key %s: %w", r.Key.ID, err)
	}
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("mac with key %s: %w", r.Key.ID, err)
	}
	defer func() { t.release(s, err) }()
	if mac, err = t.mac(s, r, mech); err != nil {
		return nil, fmt.Errorf("mac with key %s: %w", r.Key.ID, err)
	}
	return mac, nil
}

func (t *Token) mac(s *session, r MACRequest, mech uint) ([]byte, error) {
	kek, err := t.kekHandle(r.Key.Wrapped.KEK)
	if err != nil {
		return nil, err
	}
	h, err := t.unwrap(s.h, kek, r.Key,
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
	)
	if err != nil {
		return nil, err
	}
	defer t.p11.DestroyObject(s.h, h)
	if err := t.p11.SignInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, h); err != nil {
		return nil, mapErr(err, opOther)
	}
	out, err := t.p11.Sign(s.h, r.Data)
	if err != nil {
		return nil, mapErr(err, opOther)
	}
	return out, nil
}

// VerifyMAC reports whether mac is r.Algorithm over r.Data under r.Key. The token
// computes the MAC; the comparison runs in constant time. A mac shorter than the full
// MAC is compared as a truncated MAC (at least 4 bytes, as NIST SP 800-107 bounds
// it).
func (t *Token) VerifyMAC(ctx context.Context, r MACRequest, mac []byte) (bool, error) {
	if len(mac) < 4 {
		return false, fmt.Errorf("verify MAC of %d bytes: %w", len(mac), ErrInvalidInput)
	}
	want, err := t.MAC(ctx, r)
	if err != nil {
		return false, err
	}
	if len(mac) > len(want) {
		return false, nil
	}
	return subtle.ConstantTimeCompare(want[:len(mac)], mac) == 1, nil
}
