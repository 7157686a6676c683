package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
)

// Private key kinds. A managed private key is wrapped under the master key
// like a symmetric one (the token wraps its PKCS#8 encoding); its public half
// is not secret and is kept by the caller as DER SubjectPublicKeyInfo. The
// values stay clear of the symmetric kinds in keys.go.
const (
	KindRSA KeyKind = iota + 16 // CKK_RSA private key, 2048 to 4096 bits
	KindEC                      // CKK_EC private key on P-256, P-384 or P-521
)

// KeyPairRequest asks GenerateKeyPair for an RSA key of Bits (2048, 3072 or
// 4096) or, with Kind KindEC, a key on Curve (P-256, P-384 or P-521).
type KeyPairRequest struct {
	Kind  KeyKind
	Bits  int
	Curve elliptic.Curve
}

// KeyPair is a generated pair: the private key wrapped under the master key,
// the public key as DER SubjectPublicKeyInfo, and the SHA-256 digest of the
// private key's PKCS#8 encoding (KMIP's Digest attribute).
type KeyPair struct {
	Private Wrapped
	Public  []byte
	Digest  []byte
}

// SignScheme is a signature scheme of Sign.
type SignScheme int

// Signature schemes.
const (
	SignPKCS1v15 SignScheme = iota + 1 // RSASSA-PKCS1-v1_5 (CKM_RSA_PKCS over a DigestInfo)
	SignPSS                            // RSASSA-PSS, MGF1 with the same hash, salt as long as the hash
	SignECDSA                          // ECDSA, signature returned ASN.1 DER encoded
)

// SignRequest is one Sign call: Digest is the hash (by Hash) of the message,
// computed by the caller, since hashing needs no secret.
type SignRequest struct {
	Key    Key
	Scheme SignScheme
	Hash   crypto.Hash
	Digest []byte
}

// OAEPRequest is one RSA-OAEP decryption with a managed private key. MGF1
// uses Hash too.
type OAEPRequest struct {
	Key   Key
	Hash  crypto.Hash
	Label []byte
	Data  []byte
}

var curveOIDs = map[elliptic.Curve]asn1.ObjectIdentifier{
	elliptic.P256(): {1, 2, 840, 10045, 3, 1, 7},
	elliptic.P384(): {1, 3, 132, 0, 34},
	elliptic.P521(): {1, 3, 132, 0, 35},
}

// ecParams returns CKA_EC_PARAMS (the named curve's DER OID) for c.
func ecParams(c elliptic.Curve) ([]byte, error) {
	oid, ok := curveOIDs[c]
	if !ok {
		return nil, fmt.Errorf("curve %v: %w", c, ErrInvalidInput)
	}
	return asn1.Marshal(oid)
}

// curveOf reverses ecParams.
func curveOf(params []byte) (elliptic.Curve, error) {
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(params, &oid); err == nil {
		for c, o := range curveOIDs {
			if o.Equal(oid) {
				return c, nil
			}
		}
	}
	return nil, fmt.Errorf("EC parameters are not a supported named curve: %w", ErrInvalidInput)
}

var hashMechs = map[crypto.Hash]struct{ hash, mgf uint }{
	crypto.SHA1:   {pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1},
	crypto.SHA224: {pkcs11.CKM_SHA224, pkcs11.CKG_MGF1_SHA224},
	crypto.SHA256: {pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256},
	crypto.SHA384: {pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384},
	crypto.SHA512: {pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512},
}

var hashOIDs = map[crypto.Hash]asn1.ObjectIdentifier{
	crypto.SHA1:   {1, 3, 14, 3, 2, 26},
	crypto.SHA224: {2, 16, 840, 1, 101, 3, 4, 2, 4},
	crypto.SHA256: {2, 16, 840, 1, 101, 3, 4, 2, 1},
	crypto.SHA384: {2, 16, 840, 1, 101, 3, 4, 2, 2},
	crypto.SHA512: {2, 16, 840, 1, 101, 3, 4, 2, 3},
}

// oaepMech is CKM_RSA_PKCS_OAEP with MGF1 over the same hash.
func oaepMech(h crypto.Hash, label []byte) ([]*pkcs11.Mechanism, error) {
	m, ok := hashMechs[h]
	if !ok {
		return nil, fmt.Errorf("OAEP with %v: %w", h, ErrInvalidInput)
	}
	// SoftHSM2 rejects a source of 0 (CKR_ARGUMENTS_BAD) even with no label.
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP,
		pkcs11.NewOAEPParams(m.hash, m.mgf, pkcs11.CKZ_DATA_SPECIFIED, label))}, nil
}

// privateTemplate is the template of a managed private key created in the
// token: a private, sensitive session object, extractable only so the master
// can wrap it.
func privateTemplate(kind KeyKind, trusted bool) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkPrivate(kind)),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP_WITH_TRUSTED, trusted),
	}
}

func ckkPrivate(kind KeyKind) uint {
	if kind == KindEC {
		return pkcs11.CKK_EC
	}
	return pkcs11.CKK_RSA
}

func isPrivate(kind KeyKind) bool { return kind == KindRSA || kind == KindEC }

// checkPrivate is checkKey for private keys.
func checkPrivate(k Key) error {
	if !isPrivate(k.Kind) {
		return fmt.Errorf("key %s: %v is not a private key kind: %w", k.ID, k.Kind, ErrInvalidInput)
	}
	if n := len(k.Wrapped.Blob); n < 16 || n%8 != 0 {
		return fmt.Errorf("key %s: wrapped blob of %d bytes: %w", k.ID, n, ErrInvalidInput)
	}
	if _, ok := masterGen(k.Wrapped.KEK); !ok {
		return fmt.Errorf("key %s: KEK %q: %w", k.ID, k.Wrapped.KEK, ErrNotFound)
	}
	return nil
}

// GenerateKeyPair creates a key pair inside the token and returns the private
// key wrapped under the master key and the public key. The private key is a
// sensitive session object that never leaves the token in the clear; both
// objects are destroyed before returning.
func (t *Token) GenerateKeyPair(ctx context.Context, r KeyPairRequest) (kp KeyPair, err error) {
	var (
		mech     uint
		pub, prv []*pkcs11.Attribute
		what     string
	)
	switch r.Kind {
	case KindRSA:
		if r.Bits != 2048 && r.Bits != 3072 && r.Bits != 4096 {
			return KeyPair{}, fmt.Errorf("generate RSA-%d key pair: %w", r.Bits, ErrInvalidInput)
		}
		what = fmt.Sprintf("RSA-%d", r.Bits)
		mech = pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN
		pub = []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, r.Bits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		}
		prv = []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_SIGN, true), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true)}
	case KindEC:
		params, err := ecParams(r.Curve)
		if err != nil {
			return KeyPair{}, fmt.Errorf("generate EC key pair: %w", err)
		}
		what = "EC " + r.Curve.Params().Name
		mech = pkcs11.CKM_EC_KEY_PAIR_GEN
		pub = []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params)}
		prv = []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_SIGN, true)}
	default:
		return KeyPair{}, fmt.Errorf("generate %v key pair: %w", r.Kind, ErrInvalidInput)
	}
	pub = append(pub, pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false))
	if err := t.begin(); err != nil {
		return KeyPair{}, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate %s key pair: %w", what, err)
	}
	defer func() { t.release(s, err) }()
	master, err := t.masterKey()
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate %s key pair: %w", what, err)
	}
	ph, kh, err := t.p11.GenerateKeyPair(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)},
		pub, append(privateTemplate(r.Kind, master.trusted), prv...))
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate %s key pair: %w", what, mapErr(err, opOther))
	}
	defer t.p11.DestroyObject(s.h, ph)
	defer t.p11.DestroyObject(s.h, kh)
	if kp.Public, err = t.readPublic(s, ph, r.Kind); err != nil {
		return KeyPair{}, fmt.Errorf("generate %s key pair: %w", what, err)
	}
	if kp.Private, err = t.wrap(s, master, kh); err != nil {
		return KeyPair{}, fmt.Errorf("generate %s key pair: %w", what, err)
	}
	if kp.Digest, err = t.privateDigest(s, Key{ID: "new", Kind: r.Kind, Wrapped: kp.Private}); err != nil {
		return KeyPair{}, fmt.Errorf("generate %s key pair: %w", what, err)
	}
	return kp, nil
}

// readPublic returns the public key object h as DER SubjectPublicKeyInfo.
func (t *Token) readPublic(s *session, h pkcs11.ObjectHandle, kind KeyKind) ([]byte, error) {
	var pub any
	if kind == KindRSA {
		a, err := t.p11.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil), pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil)})
		if err != nil {
			return nil, fmt.Errorf("read public key: %w", mapErr(err, opOther))
		}
		e := new(big.Int).SetBytes(a[1].Value)
		if !e.IsInt64() || e.Int64() > 1<<31-1 {
			return nil, fmt.Errorf("public exponent too large: %w", ErrInvalidInput)
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(a[0].Value), E: int(e.Int64())}
	} else {
		a, err := t.p11.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil), pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
		if err != nil {
			return nil, fmt.Errorf("read public key: %w", mapErr(err, opOther))
		}
		c, err := curveOf(a[0].Value)
		if err != nil {
			return nil, err
		}
		// CKA_EC_POINT is the uncompressed point inside a DER OCTET STRING.
		var point []byte
		if _, err := asn1.Unmarshal(a[1].Value, &point); err != nil {
			return nil, fmt.Errorf("decode EC point: %w", ErrInvalidInput)
		}
		if pub, err = ecdsa.ParseUncompressedPublicKey(c, point); err != nil {
			return nil, fmt.Errorf("decode EC point: %w", ErrInvalidInput)
		}
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return der, nil
}

// ImportPrivate creates a private key (an *rsa.PrivateKey of two primes or an
// *ecdsa.PrivateKey on P-256, P-384 or P-521, from KMIP Register) as a
// session object, wraps it under the master key and destroys the object.
func (t *Token) ImportPrivate(ctx context.Context, key crypto.PrivateKey) (w Wrapped, err error) {
	kind, tmpl, err := componentTemplate(key)
	if err != nil {
		return Wrapped{}, fmt.Errorf("import private key: %w", err)
	}
	defer func() {
		for _, a := range tmpl {
			clear(a.Value)
		}
	}()
	if err := t.begin(); err != nil {
		return Wrapped{}, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return Wrapped{}, fmt.Errorf("import %v private key: %w", kind, err)
	}
	defer func() { t.release(s, err) }()
	master, err := t.masterKey()
	if err != nil {
		return Wrapped{}, fmt.Errorf("import %v private key: %w", kind, err)
	}
	h, err := t.p11.CreateObject(s.h, append(privateTemplate(kind, master.trusted), tmpl...))
	if err != nil {
		return Wrapped{}, fmt.Errorf("import %v private key: %w", kind, mapErr(err, opOther))
	}
	defer t.p11.DestroyObject(s.h, h)
	if w, err = t.wrap(s, master, h); err != nil {
		return Wrapped{}, fmt.Errorf("import %v private key: %w", kind, err)
	}
	return w, nil
}

// componentTemplate lists the PKCS#11 attributes of a private key's components.
func componentTemplate(key crypto.PrivateKey) (KeyKind, []*pkcs11.Attribute, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if len(k.Primes) != 2 {
			return 0, nil, fmt.Errorf("RSA key with %d primes: %w", len(k.Primes), ErrInvalidInput)
		}
		if bits := k.N.BitLen(); bits < 2048 || bits > 4096 {
			return 0, nil, fmt.Errorf("RSA-%d key (want 2048 to 4096 bits): %w", bits, ErrInvalidInput)
		}
		if err := k.Validate(); err != nil {
			return 0, nil, fmt.Errorf("RSA key: %w", ErrInvalidInput)
		}
		k.Precompute()
		return KindRSA, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, k.N.Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(k.E)).Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE_EXPONENT, k.D.Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_PRIME_1, k.Primes[0].Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_PRIME_2, k.Primes[1].Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_EXPONENT_1, k.Precomputed.Dp.Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_EXPONENT_2, k.Precomputed.Dq.Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_COEFFICIENT, k.Precomputed.Qinv.Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		}, nil
	case *ecdsa.PrivateKey:
		params, err := ecParams(k.Curve)
		if err != nil {
			return 0, nil, err
		}
		d, err := k.Bytes()
		if err != nil {
			return 0, nil, fmt.Errorf("EC key: %w", ErrInvalidInput)
		}
		return KindEC, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, d),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		}, nil
	}
	return 0, nil, fmt.Errorf("private key of type %T: %w", key, ErrInvalidInput)
}

// unwrapPrivate makes k a private-key session object on sh with extra attributes.
func (t *Token) unwrapPrivate(sh pkcs11.SessionHandle, kek pkcs11.ObjectHandle, k Key, extra ...*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	tmpl := append([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkPrivate(k.Kind)),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
	}, extra...)
	h, err := t.p11.UnwrapKey(sh, wrapMech, kek, k.Wrapped.Blob, tmpl)
	if err != nil {
		return 0, fmt.Errorf("unwrap key %s: %w", k.ID, mapErr(err, opDecrypt))
	}
	return h, nil
}

// readPrivate unwraps k as a non-sensitive object on s, reads its components,
// destroys the object and returns the key's PKCS#8 DER encoding. Only
// ExportPlain and privateDigest call it; it is the private-key counterpart of
// readPlain.
func (t *Token) readPrivate(s *session, k Key) ([]byte, error) {
	kek, err := t.kekHandle(k.Wrapped.KEK)
	if err != nil {
		return nil, err
	}
	h, err := t.unwrapPrivate(s.h, kek, k, plainAttrs...)
	if err != nil {
		return nil, err
	}
	defer t.p11.DestroyObject(s.h, h)
	var key any
	if k.Kind == KindRSA {
		types := []uint{pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT, pkcs11.CKA_PRIVATE_EXPONENT, pkcs11.CKA_PRIME_1, pkcs11.CKA_PRIME_2}
		tmpl := make([]*pkcs11.Attribute, len(types))
		for i, ty := range types {
			tmpl[i] = pkcs11.NewAttribute(ty, nil)
		}
		a, err := t.p11.GetAttributeValue(s.h, h, tmpl)
		if err != nil {
			return nil, fmt.Errorf("read key %s: %w", k.ID, mapErr(err, opOther))
		}
		n := make([]*big.Int, len(a))
		for i := range a {
			n[i] = new(big.Int).SetBytes(a[i].Value)
			clear(a[i].Value)
		}
		if !n[1].IsInt64() || n[1].Int64() > 1<<31-1 {
			return nil, fmt.Errorf("read key %s: public exponent too large: %w", k.ID, ErrBadCiphertext)
		}
		rk := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n[0], E: int(n[1].Int64())}, D: n[2], Primes: []*big.Int{n[3], n[4]}}
		rk.Precompute()
		key = rk
	} else {
		a, err := t.p11.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil), pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			return nil, fmt.Errorf("read key %s: %w", k.ID, mapErr(err, opOther))
		}
		defer clear(a[1].Value)
		c, err := curveOf(a[0].Value)
		if err != nil {
			return nil, fmt.Errorf("read key %s: %w", k.ID, err)
		}
		// The scalar may come back without its leading zero bytes.
		size := (c.Params().BitSize + 7) / 8
		if len(a[1].Value) > size {
			return nil, fmt.Errorf("read key %s: EC value of %d bytes: %w", k.ID, len(a[1].Value), ErrBadCiphertext)
		}
		d := make([]byte, size)
		defer clear(d)
		copy(d[size-len(a[1].Value):], a[1].Value)
		if key, err = ecdsa.ParseRawPrivateKey(c, d); err != nil {
			return nil, fmt.Errorf("read key %s: %w", k.ID, ErrBadCiphertext)
		}
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key %s: %w", k.ID, err)
	}
	return der, nil
}

// privateDigest returns SHA-256 of k's PKCS#8 encoding. PKCS#11 cannot digest
// a private key object (C_DigestKey takes secret keys), so the encoding is
// read as for ExportPlain, hashed and cleared.
func (t *Token) privateDigest(s *session, k Key) ([]byte, error) {
	der, err := t.readPrivate(s, k)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	sum := sha256.Sum256(der)
	return sum[:], nil
}

// usePrivate is useKey for private keys: a cached, sensitive,
// non-extractable handle that may sign, and for RSA decrypt and unwrap.
func (t *Token) usePrivate(k Key) (*entry, error) {
	fp := fingerprint(k)
	e, victims := t.cache.get(k.ID, fp)
	t.destroy(victims)
	if e != nil {
		return e, nil
	}
	use := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
	}
	if k.Kind == KindRSA {
		use = append(use, pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true))
	}
	t.mu.Lock()
	kek, err := t.kekLocked(k.Wrapped.KEK)
	if err != nil {
		t.mu.Unlock()
		return nil, err
	}
	h, err := t.unwrapPrivate(t.home, kek, k, use...)
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	e, victims = t.cache.add(k.ID, fp, h)
	t.destroy(victims)
	return e, nil
}

// Sign signs r.Digest with a managed private key inside the token.
func (t *Token) Sign(ctx context.Context, r SignRequest) (sig []byte, err error) {
	if err := checkPrivate(r.Key); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	mech, input, err := signMech(r)
	if err != nil {
		return nil, fmt.Errorf("sign with key %s: %w", r.Key.ID, err)
	}
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("sign with key %s: %w", r.Key.ID, err)
	}
	defer func() { t.release(s, err) }()
	if sig, err = t.sign(s, r.Key, mech, input); err != nil {
		return nil, fmt.Errorf("sign with key %s: %w", r.Key.ID, err)
	}
	if r.Scheme == SignECDSA {
		// PKCS#11 returns r||s; X.509, TLS and Go's crypto expect DER.
		half := len(sig) / 2
		return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:half]), new(big.Int).SetBytes(sig[half:])})
	}
	return sig, nil
}

func (t *Token) sign(s *session, k Key, mech []*pkcs11.Mechanism, input []byte) (sig []byte, err error) {
	e, err := t.usePrivate(k)
	if err != nil {
		return nil, err
	}
	defer t.unuse(e, &err)
	if err = t.p11.SignInit(s.h, mech, e.h); err != nil {
		return nil, mapErr(err, opOther)
	}
	if sig, err = t.p11.Sign(s.h, input); err != nil {
		return nil, mapErr(err, opOther)
	}
	return sig, nil
}

// signMech checks r and returns the raw-digest mechanism and its input.
func signMech(r SignRequest) ([]*pkcs11.Mechanism, []byte, error) {
	hm, ok := hashMechs[r.Hash]
	if !ok || len(r.Digest) != r.Hash.Size() {
		return nil, nil, fmt.Errorf("digest of %d bytes with %v: %w", len(r.Digest), r.Hash, ErrInvalidInput)
	}
	switch {
	case r.Scheme == SignPKCS1v15 && r.Key.Kind == KindRSA:
		info, err := asn1.Marshal(struct {
			Alg    pkix.AlgorithmIdentifier
			Digest []byte
		}{pkix.AlgorithmIdentifier{Algorithm: hashOIDs[r.Hash], Parameters: asn1.NullRawValue}, r.Digest})
		if err != nil {
			return nil, nil, fmt.Errorf("encode DigestInfo: %w", err)
		}
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}, info, nil
	case r.Scheme == SignPSS && r.Key.Kind == KindRSA:
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS,
			pkcs11.NewPSSParams(hm.hash, hm.mgf, uint(r.Hash.Size())))}, r.Digest, nil
	case r.Scheme == SignECDSA && r.Key.Kind == KindEC:
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, r.Digest, nil
	}
	return nil, nil, fmt.Errorf("signature scheme %d with a %v key: %w", r.Scheme, r.Key.Kind, ErrInvalidInput)
}

// DecryptOAEP decrypts RSA-OAEP ciphertext with a managed private key inside
// the token. SoftHSM2 2.6.1 implements OAEP with SHA-1 only; other hashes fail
// there with ErrInvalidInput.
func (t *Token) DecryptOAEP(ctx context.Context, r OAEPRequest) (plain []byte, err error) {
	if err := checkPrivate(r.Key); err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	if r.Key.Kind != KindRSA {
		return nil, fmt.Errorf("decrypt with key %s: OAEP needs an RSA key: %w", r.Key.ID, ErrInvalidInput)
	}
	mech, err := oaepMech(r.Hash, r.Label)
	if err != nil {
		return nil, fmt.Errorf("decrypt with key %s: %w", r.Key.ID, err)
	}
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("decrypt with key %s: %w", r.Key.ID, err)
	}
	defer func() { t.release(s, err) }()
	if plain, err = t.decryptOAEP(s, r.Key, mech, r.Data); err != nil {
		return nil, fmt.Errorf("decrypt with key %s: %w", r.Key.ID, err)
	}
	return plain, nil
}

func (t *Token) decryptOAEP(s *session, k Key, mech []*pkcs11.Mechanism, data []byte) (plain []byte, err error) {
	e, err := t.usePrivate(k)
	if err != nil {
		return nil, err
	}
	defer t.unuse(e, &err)
	if err = t.p11.DecryptInit(s.h, mech, e.h); err != nil {
		return nil, mapErr(err, opOther)
	}
	if plain, err = t.p11.Decrypt(s.h, data); err != nil {
		return nil, mapErr(err, opDecrypt)
	}
	return plain, nil
}
