package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/miekg/pkcs11"
)

// TLSKeyLabel is the default label of the TLS server key pair kept in the token.
const TLSKeyLabel = "hsmkms-tls"

// tlsSignTimeout bounds one handshake signature's wait for a session: crypto.Signer
// takes no context, and a handshake must not hang on a busy token.
const tlsSignTimeout = 5 * time.Second

// oidP256 is the DER of the named curve P-256 (secp256r1), as CKA_EC_PARAMS holds it.
var oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// GenerateTLSKey creates an ECDSA P-256 key pair labelled label in the token for the
// TLS server: a private key that never leaves it (sensitive, not extractable, sign
// only) and its public key. It refuses when a private key with that label exists. It
// returns the public key, for the CA to certify.
func (t *Token) GenerateTLSKey(ctx context.Context, label string) (pub *ecdsa.PublicKey, err error) {
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("generate tls key %s: %w", label, err)
	}
	defer func() { t.release(s, err) }()
	if _, err := t.findTLSObject(s.h, pkcs11.CKO_PRIVATE_KEY, label); err == nil {
		return nil, fmt.Errorf("generate tls key %s: a private key with this label exists: %w", label, ErrInvalidInput)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("generate tls key %s: %w", label, err)
	}
	public := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidP256),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(label)),
	}
	private := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(label)),
	}
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}
	pubH, _, err := t.p11.GenerateKeyPair(s.h, mech, public, private)
	if err != nil {
		return nil, fmt.Errorf("generate tls key %s: %w", label, mapErr(err, opOther))
	}
	pub, err = t.readECPublic(s.h, pubH)
	if err != nil {
		return nil, fmt.Errorf("generate tls key %s: %w", label, err)
	}
	t.log.Info("tls key created", "token", t.label, "key_ref", label)
	return pub, nil
}

// TLSSigner returns a crypto.Signer over the token's key pair labelled label, for a
// tls.Certificate's PrivateKey. Each Sign finds the private key again (it survives
// session loss that way) and signs the digest with CKM_ECDSA on a pooled session.
func (t *Token) TLSSigner(ctx context.Context, label string) (_ crypto.Signer, err error) {
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("open tls key %s: %w", label, err)
	}
	defer func() { t.release(s, err) }()
	if _, err := t.findTLSObject(s.h, pkcs11.CKO_PRIVATE_KEY, label); err != nil {
		return nil, fmt.Errorf("open tls key %s: %w", label, err)
	}
	h, err := t.findTLSObject(s.h, pkcs11.CKO_PUBLIC_KEY, label)
	if err != nil {
		return nil, fmt.Errorf("open tls key %s: %w", label, err)
	}
	pub, err := t.readECPublic(s.h, h)
	if err != nil {
		return nil, fmt.Errorf("open tls key %s: %w", label, err)
	}
	return &tlsSigner{t: t, label: label, pub: pub}, nil
}

// tlsSigner signs TLS handshakes with a private key that stays in the token.
type tlsSigner struct {
	t     *Token
	label string
	pub   *ecdsa.PublicKey
}

var _ crypto.Signer = (*tlsSigner)(nil)

// Public returns the public half of the key pair.
func (k *tlsSigner) Public() crypto.PublicKey { return k.pub }

// Sign signs digest, which the caller hashed with opts.HashFunc(), and returns an
// ASN.1 ECDSA signature as crypto/ecdsa does. rand is unused: the token draws the nonce.
func (k *tlsSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) (sig []byte, err error) {
	if h := opts.HashFunc(); h == 0 || len(digest) != h.Size() {
		return nil, fmt.Errorf("sign with tls key %s: digest of %d bytes for hash %v: %w", k.label, len(digest), h, ErrInvalidInput)
	}
	t := k.t
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	ctx, cancel := context.WithTimeout(context.Background(), tlsSignTimeout)
	defer cancel()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("sign with tls key %s: %w", k.label, err)
	}
	defer func() { t.release(s, err) }()
	h, err := t.findTLSObject(s.h, pkcs11.CKO_PRIVATE_KEY, k.label)
	if err != nil {
		return nil, fmt.Errorf("sign with tls key %s: %w", k.label, err)
	}
	if err := t.p11.SignInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, h); err != nil {
		return nil, fmt.Errorf("sign with tls key %s: %w", k.label, mapErr(err, opOther))
	}
	raw, err := t.p11.Sign(s.h, digest)
	if err != nil {
		return nil, fmt.Errorf("sign with tls key %s: %w", k.label, mapErr(err, opOther))
	}
	// CKM_ECDSA returns r and s as two big-endian halves of equal length.
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, fmt.Errorf("sign with tls key %s: signature of %d bytes: %w", k.label, len(raw), ErrTokenUnavailable)
	}
	half := len(raw) / 2
	sig, err = asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:half]), new(big.Int).SetBytes(raw[half:])})
	if err != nil {
		return nil, fmt.Errorf("sign with tls key %s: encode signature: %w", k.label, err)
	}
	return sig, nil
}

// findTLSObject returns the token object of class labelled label.
func (t *Token) findTLSObject(sh pkcs11.SessionHandle, class uint, label string) (pkcs11.ObjectHandle, error) {
	hs, err := t.findObjects(sh, class, label)
	if err != nil {
		return 0, err
	}
	switch len(hs) {
	case 0:
		return 0, fmt.Errorf("find %s: %w", label, ErrNotFound)
	case 1:
		return hs[0], nil
	}
	return 0, fmt.Errorf("find %s: several objects carry this label: %w", label, ErrInvalidInput)
}

// readECPublic reads a P-256 public key object.
func (t *Token) readECPublic(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) (*ecdsa.PublicKey, error) {
	attrs, err := t.p11.GetAttributeValue(sh, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", mapErr(err, opOther))
	}
	if len(attrs) != 2 || !bytes.Equal(attrs[0].Value, oidP256) {
		return nil, fmt.Errorf("read public key: not on curve P-256: %w", ErrInvalidInput)
	}
	// CKA_EC_POINT is the DER OCTET STRING of the uncompressed point (PKCS#11 2.40).
	var point []byte
	if rest, err := asn1.Unmarshal(attrs[1].Value, &point); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("read public key: CKA_EC_POINT is not a DER octet string: %w", ErrInvalidInput)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w: %w", ErrInvalidInput, err)
	}
	return pub, nil
}
