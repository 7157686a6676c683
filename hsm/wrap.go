package hsm

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
)

// WrapMech is a key wrapping mechanism of WrapKey and UnwrapKey (KMIP key
// wrapping under another managed key).
type WrapMech int

// Wrapping mechanisms.
const (
	WrapAESKW   WrapMech = iota + 1 // RFC 3394, CKM_AES_KEY_WRAP (KMIP NIST Key Wrap)
	WrapAESKWP                      // RFC 5649, CKM_AES_KEY_WRAP_PAD (KMIP AES Key Wrap Padding)
	WrapRSAOAEP                     // RSA-OAEP, CKM_RSA_PKCS_OAEP, MGF1 over the same hash
)

func (m WrapMech) String() string {
	switch m {
	case WrapAESKW:
		return "AES-KW"
	case WrapAESKWP:
		return "AES-KWP"
	case WrapRSAOAEP:
		return "RSA-OAEP"
	}
	return fmt.Sprintf("WrapMech(%d)", int(m))
}

// WrapRequest asks WrapKey to wrap the managed key Key (an AES key or a
// private key, which wraps as PKCS#8) for a client. The wrapping key is KEK, a
// managed AES key, for the AES mechanisms, or Public, an RSA public key as DER
// SubjectPublicKeyInfo, for RSA-OAEP.
type WrapRequest struct {
	Key    Key
	KEK    Key
	Public []byte
	Mech   WrapMech
	Hash   crypto.Hash // RSA-OAEP only
}

// UnwrapRequest asks UnwrapKey to import Blob, a key of Kind (KindAES,
// KindRSA or KindEC) wrapped by a client under KEK: a managed AES key for the
// AES mechanisms, a managed RSA private key for RSA-OAEP.
type UnwrapRequest struct {
	Blob []byte
	Kind KeyKind
	KEK  Key
	Mech WrapMech
	Hash crypto.Hash // RSA-OAEP only
}

// Unwrapped is a key imported by UnwrapKey: wrapped under the master key now,
// its size in bits (the RSA modulus, the EC curve) and the SHA-256 digest of
// its value (AES, computed by the token) or of its PKCS#8 encoding.
type Unwrapped struct {
	Wrapped Wrapped
	Bits    int
	Digest  []byte
}

// mechanism returns the PKCS#11 mechanism of m.
func (m WrapMech) mechanism(h crypto.Hash) ([]*pkcs11.Mechanism, error) {
	switch m {
	case WrapAESKW:
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP, nil)}, nil
	case WrapAESKWP:
		return wrapMech, nil
	case WrapRSAOAEP:
		return oaepMech(h, nil)
	}
	return nil, fmt.Errorf("wrapping mechanism %d: %w", int(m), ErrInvalidInput)
}

// checkManaged validates a managed AES or private key before any token call.
func (t *Token) checkManaged(k Key) error {
	if isPrivate(k.Kind) {
		return checkPrivate(k)
	}
	if k.Kind != KindAES {
		// Secret Data is stored padded (see encodeValue): wrapping the token's
		// value would hand the client the padding too.
		return fmt.Errorf("key %s: %v keys cannot be wrapped: %w", k.ID, k.Kind, ErrInvalidInput)
	}
	return t.checkKey(k)
}

// WrapKey returns r.Key wrapped under the wrapping key, computed by the token
// (C_WrapKey): the key never appears in the clear outside it. The wrapping
// key's permission to wrap is the caller's policy (KMIP usage mask).
func (t *Token) WrapKey(ctx context.Context, r WrapRequest) (blob []byte, err error) {
	mech, err := r.Mech.mechanism(r.Hash)
	if err == nil {
		err = t.checkManaged(r.Key)
	}
	var pub *rsa.PublicKey
	if err == nil && r.Mech == WrapRSAOAEP {
		pub, err = rsaPublic(r.Public)
	} else if err == nil && r.KEK.Kind != KindAES {
		err = fmt.Errorf("wrapping key %s is %v, not AES: %w", r.KEK.ID, r.KEK.Kind, ErrInvalidInput)
	} else if err == nil {
		err = t.checkKey(r.KEK)
	}
	if err != nil {
		return nil, fmt.Errorf("wrap key %s: %w", r.Key.ID, err)
	}
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("wrap key %s: %w", r.Key.ID, err)
	}
	defer func() { t.release(s, err) }()
	if blob, err = t.wrapFor(s, r, mech, pub); err != nil {
		return nil, fmt.Errorf("wrap key %s with %v: %w", r.Key.ID, r.Mech, err)
	}
	return blob, nil
}

func (t *Token) wrapFor(s *session, r WrapRequest, mech []*pkcs11.Mechanism, pub *rsa.PublicKey) ([]byte, error) {
	target, err := t.openManaged(s, r.Key,
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true))
	if err != nil {
		return nil, err
	}
	defer t.p11.DestroyObject(s.h, target)
	var wrapping pkcs11.ObjectHandle
	if pub != nil {
		wrapping, err = t.p11.CreateObject(s.h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, pub.N.Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(pub.E)).Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		})
		if err != nil {
			return nil, fmt.Errorf("create public key: %w", mapErr(err, opOther))
		}
	} else if wrapping, err = t.openManaged(s, r.KEK, kekAttrs...); err != nil {
		return nil, err
	}
	defer t.p11.DestroyObject(s.h, wrapping)
	blob, err := t.p11.WrapKey(s.h, mech, wrapping, target)
	if err != nil {
		return nil, mapErr(err, opOther)
	}
	return blob, nil
}

// kekAttrs make an unwrapped managed AES key a wrapping key, for one call.
var kekAttrs = []*pkcs11.Attribute{
	pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
	pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
	pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
	pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
}

// openManaged unwraps managed key k as a session object on s, uncached: the
// caller destroys it. Wrapping is rare, and a cached handle has other rights.
func (t *Token) openManaged(s *session, k Key, extra ...*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	kek, err := t.kekHandle(k.Wrapped.KEK)
	if err != nil {
		return 0, err
	}
	if isPrivate(k.Kind) {
		return t.unwrapPrivate(s.h, kek, k, extra...)
	}
	return t.unwrap(s.h, kek, k, extra...)
}

// rsaPublic parses DER SubjectPublicKeyInfo holding an RSA key.
func rsaPublic(der []byte) (*rsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", ErrInvalidInput)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, not RSA: %w", k, ErrInvalidInput)
	}
	return pub, nil
}

// UnwrapKey imports a key that a client wrapped under a managed key: the
// token unwraps it (C_UnwrapKey) into a sensitive session object and wraps it
// under the master key, so its value never appears in the clear outside.
func (t *Token) UnwrapKey(ctx context.Context, r UnwrapRequest) (u Unwrapped, err error) {
	mech, err := r.Mech.mechanism(r.Hash)
	if err == nil {
		err = t.checkManaged(r.KEK)
	}
	switch {
	case err != nil:
	case r.Kind != KindAES && !isPrivate(r.Kind):
		err = fmt.Errorf("unwrap a %v key: %w", r.Kind, ErrInvalidInput)
	case (r.Mech == WrapRSAOAEP) != (r.KEK.Kind == KindRSA):
		err = fmt.Errorf("%v with a %v key: %w", r.Mech, r.KEK.Kind, ErrInvalidInput)
	case len(r.Blob) == 0:
		// The miekg binding panics on an empty slice.
		err = fmt.Errorf("empty wrapped key: %w", ErrInvalidInput)
	}
	if err != nil {
		return Unwrapped{}, fmt.Errorf("unwrap key under %s: %w", r.KEK.ID, err)
	}
	if err := t.begin(); err != nil {
		return Unwrapped{}, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return Unwrapped{}, fmt.Errorf("unwrap key under %s: %w", r.KEK.ID, err)
	}
	defer func() { t.release(s, err) }()
	if u, err = t.unwrapFor(s, r, mech); err != nil {
		return Unwrapped{}, fmt.Errorf("unwrap key under %s with %v: %w", r.KEK.ID, r.Mech, err)
	}
	return u, nil
}

func (t *Token) unwrapFor(s *session, r UnwrapRequest, mech []*pkcs11.Mechanism) (Unwrapped, error) {
	extra := kekAttrs
	if r.KEK.Kind == KindRSA {
		extra = []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true)}
	}
	kek, err := t.openManaged(s, r.KEK, extra...)
	if err != nil {
		return Unwrapped{}, err
	}
	defer t.p11.DestroyObject(s.h, kek)
	master, err := t.masterKey()
	if err != nil {
		return Unwrapped{}, err
	}
	var tmpl []*pkcs11.Attribute
	switch r.Kind {
	case KindAES:
		tmpl = newKeyTemplate(KindAES, master.trusted)
	case KindRSA:
		tmpl = append(privateTemplate(KindRSA, master.trusted),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true))
	default:
		tmpl = append(privateTemplate(KindEC, master.trusted), pkcs11.NewAttribute(pkcs11.CKA_SIGN, true))
	}
	h, err := t.p11.UnwrapKey(s.h, mech, kek, r.Blob, tmpl)
	if err != nil {
		return Unwrapped{}, mapErr(err, opDecrypt)
	}
	defer t.p11.DestroyObject(s.h, h)
	var u Unwrapped
	if u.Wrapped, err = t.wrap(s, master, h); err != nil {
		return Unwrapped{}, err
	}
	if r.Kind == KindAES {
		// RFC 5649 wraps n bytes into n+8 when n is a multiple of 8; SoftHSM2
		// leaves CKA_VALUE_LEN unset on unwrapped keys.
		u.Bits = (len(u.Wrapped.Blob) - 8) * 8
		if u.Bits != 128 && u.Bits != 192 && u.Bits != 256 {
			return Unwrapped{}, fmt.Errorf("unwrapped AES key of %d bits: %w", u.Bits, ErrInvalidInput)
		}
		u.Digest, err = t.digestHandle(s, h)
		return u, err
	}
	if u.Bits, err = t.privateBits(s, h, r.Kind); err != nil {
		return Unwrapped{}, err
	}
	u.Digest, err = t.privateDigest(s, Key{ID: "unwrapped", Kind: r.Kind, Wrapped: u.Wrapped})
	return u, err
}

// privateBits reads the size of private key object h from its public parts.
func (t *Token) privateBits(s *session, h pkcs11.ObjectHandle, kind KeyKind) (int, error) {
	ty := uint(pkcs11.CKA_MODULUS)
	if kind == KindEC {
		ty = pkcs11.CKA_EC_PARAMS
	}
	a, err := t.p11.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(ty, nil)})
	if err != nil {
		return 0, fmt.Errorf("read key size: %w", mapErr(err, opOther))
	}
	if kind == KindRSA {
		return new(big.Int).SetBytes(a[0].Value).BitLen(), nil
	}
	c, err := curveOf(a[0].Value)
	if err != nil {
		return 0, err
	}
	return c.Params().BitSize, nil
}
