package hsm

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// Mirror pairing. Each appliance holds one EC P-256 key pair that only
// derives (ECDH); two appliances exchange the public halves and each derives,
// inside its own token, the same AES-256 pair KEK. Keys then travel between
// them as blobs that Rewrap moves from a master to the pair KEK on the sender
// and back to a master on the receiver, so no key value leaves either token.
const (
	MirrorIdentityLabel = "hsmkms-mirror-ecdh" // the EC P-256 ECDH key pair (private + public token objects)
	PairKEKPrefix       = "hsmkms-pair-"       // pair KEKs: PairKEKPrefix + peer appliance id
)

// pairKDFDomain separates the pair KEK derivation from any other use of the
// ECDH secret; both sides hash it in front of the caller's context.
const pairKDFDomain = "hsmkms pair KEK v1\x00"

// identityLockLabel names the token data object that a process creating
// the identity holds as a lock (see lockIdentity).
const identityLockLabel = MirrorIdentityLabel + "-lock"

// identityAttempts bounds how often MirrorIdentity tries again while another
// process creates the identity; identityBackoff is the most it waits between
// two tries (a random part of it, so that two processes that collided do
// not collide again).
const (
	identityAttempts = 50
	identityBackoff  = 20 * time.Millisecond
)

// MirrorIdentity returns this token's ECDH public key as an uncompressed P-256 point
// (65 bytes, 0x04||X||Y), creating the key pair on first use (private half: CKA_TOKEN,
// CKA_PRIVATE, sensitive, non-extractable, CKA_DERIVE true, no sign/decrypt/unwrap;
// public half: token object with same label/ID). Idempotent; safe while other processes use the token.
//
// PKCS#11 has no lock across processes, and two processes that both found no
// identity would each create one, one of which a caller might already have
// been given. So the pair is created only under a lock made of token objects
// (lockIdentity), after looking again, and a token never holds two. On
// SoftHSM2 2.6.1 this holds across processes and within one Token; two
// Tokens in one process share a SoftHSM2 instance whose concurrent writes
// of token objects misbehave (SoftHSMv2 issue 573), so do not race them.
func (t *Token) MirrorIdentity(ctx context.Context) (point []byte, err error) {
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("find mirror identity: %w", err)
	}
	defer func() { t.release(s, err) }()
	for attempt := 1; ; attempt++ {
		point, retry, err := t.identityAttempt(s)
		if !retry {
			if err != nil {
				return nil, fmt.Errorf("find mirror identity: %w", err)
			}
			return point, nil
		}
		if attempt == identityAttempts {
			if errors.Is(err, errIdentityHalf) {
				return nil, fmt.Errorf("find mirror identity (a crash left stray objects: delete them): %w", err)
			}
			if err != nil {
				return nil, fmt.Errorf("find mirror identity: %w: %w", ErrBusy, err)
			}
			return nil, fmt.Errorf("find mirror identity: another process holds token object %s (if none runs, a crash left it: delete it): %w",
				identityLockLabel, ErrBusy)
		}
		wait := time.NewTimer(time.Duration(1 + rand.Int64N(int64(identityBackoff))))
		select {
		case <-wait.C:
		case <-ctx.Done():
			wait.Stop()
			return nil, fmt.Errorf("find mirror identity: %w: %w", ErrBusy, ctx.Err())
		}
	}
}

// identityAttempt returns the identity's point, creating the pair under the
// lock if the token has none. retry means another process holds the lock or
// collided with this one.
func (t *Token) identityAttempt(s *session) (point []byte, retry bool, err error) {
	// Within this Token, t.mu keeps callers off each other's lock.
	t.mu.Lock()
	defer t.mu.Unlock()
	// A single whole pair is final: nobody destroys one.
	_, point, err = t.mirrorIdentity(s.h)
	if err == nil || !errors.Is(err, ErrNotFound) && !errors.Is(err, errIdentityHalf) {
		return point, false, err
	}
	// None, or half of one: perhaps another process is creating it.
	lock, ok, err := t.lockIdentity(s.h)
	if !ok {
		return nil, err == nil || collided(err), err
	}
	defer func() {
		if derr := t.p11.DestroyObject(s.h, lock); derr != nil {
			t.log.Error("mirror identity lock left in the token", "token", t.label, "key_ref", identityLockLabel, "err", derr)
		}
	}()
	// Look again: the lock's last holder may have created it meanwhile. A
	// half pair here is a module slow to show another process's objects
	// (SoftHSM2), or one a crash left: a later try tells them apart.
	if _, point, err = t.mirrorIdentity(s.h); !errors.Is(err, ErrNotFound) {
		return point, errors.Is(err, errIdentityHalf), err
	}
	pub, _, err := t.p11.GenerateKeyPair(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
		identityPublicTemplate(), identityPrivateTemplate())
	if err != nil {
		// SoftHSM2 can fail after making one half; only the lock holder
		// creates identity objects, so a lone half now is that one. A whole
		// pair stays: it may already have been handed out (see above).
		if privs, pubs, ferr := t.identityObjects(s.h); ferr == nil && (len(privs) == 0) != (len(pubs) == 0) {
			for _, h := range append(privs, pubs...) {
				t.p11.DestroyObject(s.h, h)
			}
		}
		return nil, collided(err), fmt.Errorf("generate key pair %s: %w", MirrorIdentityLabel, mapErr(err, opOther))
	}
	if point, err = t.readPoint(s.h, pub); err != nil {
		return nil, false, err
	}
	t.log.Info("mirror identity created", "token", t.label, "key_ref", MirrorIdentityLabel)
	return point, false, nil
}

// lockIdentity takes the identity lock: it creates a token data object
// labelled identityLockLabel and holds the lock if that is then the only
// one; otherwise it destroys its object and reports ok false. Of two
// processes, the one that lists last sees the other's object, so at most
// one holds the lock (a module that lists what was created before, which
// every PKCS#11 token does). The holder destroys the object when done.
func (t *Token) lockIdentity(sh pkcs11.SessionHandle) (lock pkcs11.ObjectHandle, ok bool, err error) {
	lock, err = t.p11.CreateObject(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_APPLICATION, "hsmkms"),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, identityLockLabel),
	})
	if err != nil {
		return 0, false, fmt.Errorf("create %s: %w", identityLockLabel, mapErr(err, opOther))
	}
	locks, err := t.findObjects(sh, pkcs11.CKO_DATA, identityLockLabel)
	if err == nil && len(locks) == 1 {
		return lock, true, nil
	}
	if derr := t.p11.DestroyObject(sh, lock); derr != nil && err == nil {
		err = fmt.Errorf("destroy %s: %w", identityLockLabel, mapErr(derr, opOther))
	}
	return 0, false, err
}

// collided reports whether err is how SoftHSM2 2.6.1 fails when token
// objects are created concurrently (CKR_GENERAL_ERROR, or
// CKR_TEMPLATE_INCONSISTENT for a template that works alone: SoftHSMv2
// issue 573), which a later try survives.
func collided(err error) bool {
	return isCode(err, pkcs11.CKR_GENERAL_ERROR) || isCode(err, pkcs11.CKR_FUNCTION_FAILED) ||
		isCode(err, pkcs11.CKR_TEMPLATE_INCONSISTENT)
}

func identityCountErr(privs, pubs int) error {
	return fmt.Errorf("find key pair %s: %d private and %d public keys carry this label: %w",
		MirrorIdentityLabel, privs, pubs, errIdentityHalf)
}

// mirrorIdentity returns the handle of the identity's private key and its
// public point. It fails with ErrNotFound when the token has no identity
// and with ErrInvalidInput when it holds more than one, or half of one.
func (t *Token) mirrorIdentity(sh pkcs11.SessionHandle) (priv pkcs11.ObjectHandle, point []byte, err error) {
	privs, pubs, err := t.identityObjects(sh)
	if err != nil {
		return 0, nil, err
	}
	switch {
	case len(privs) == 0 && len(pubs) == 0:
		return 0, nil, fmt.Errorf("find key pair %s (see MirrorIdentity): %w", MirrorIdentityLabel, ErrNotFound)
	case len(privs) != 1 || len(pubs) != 1:
		return 0, nil, identityCountErr(len(privs), len(pubs))
	}
	if point, err = t.readPoint(sh, pubs[0]); err != nil {
		return 0, nil, err
	}
	return privs[0], point, nil
}

// identityObjects lists the private and public token objects labelled
// MirrorIdentityLabel.
func (t *Token) identityObjects(sh pkcs11.SessionHandle) (privs, pubs []pkcs11.ObjectHandle, err error) {
	if privs, err = t.findObjects(sh, pkcs11.CKO_PRIVATE_KEY, MirrorIdentityLabel); err != nil {
		return nil, nil, err
	}
	if pubs, err = t.findObjects(sh, pkcs11.CKO_PUBLIC_KEY, MirrorIdentityLabel); err != nil {
		return nil, nil, err
	}
	return privs, pubs, nil
}

// readPoint returns the uncompressed point of a P-256 public key object.
func (t *Token) readPoint(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) ([]byte, error) {
	pub, err := t.readECPublic(sh, h)
	if err != nil {
		return nil, err
	}
	point, err := pub.Bytes()
	if err != nil {
		return nil, fmt.Errorf("read public key: %w: %w", ErrInvalidInput, err)
	}
	return point, nil
}

func identityPublicTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidP256),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, MirrorIdentityLabel),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(MirrorIdentityLabel)),
	}
}

// identityPrivateTemplate is a private key that can do nothing but ECDH.
func identityPrivateTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, MirrorIdentityLabel),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(MirrorIdentityLabel)),
	}
}

// pairKEKTemplate is a pair KEK: a master-like AES-256 token key (it only
// wraps and unwraps and never leaves the token) that also cannot derive.
func pairKEKTemplate(label string) []*pkcs11.Attribute {
	return append(masterTemplate(label), pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false))
}

// sharedSecretTemplate is the raw ECDH output: a session AES-256 key (the
// 32-byte x-coordinate) that can only derive, and dies with DerivePairKEK.
func sharedSecretTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
	}
}

// checkPairLabel rejects a label outside the pair KEK namespace, so that
// DerivePairKEK and DeletePairKEK can never replace a master or backup KEK.
func checkPairLabel(op, label string) error {
	if !strings.HasPrefix(label, PairKEKPrefix) || len(label) == len(PairKEKPrefix) {
		return fmt.Errorf("%s %q: label must be %s<peer id>: %w", op, label, PairKEKPrefix, ErrInvalidInput)
	}
	return nil
}

// DerivePairKEK derives the pair KEK shared with the holder of peerPub (uncompressed P-256 point)
// and stores it as token key `label` (must start with PairKEKPrefix; an existing key with that label
// is replaced). context is public data both sides agree on (the caller passes a sorted
// concatenation of both appliance ids + both public keys); it binds the KEK to this pairing.
//
// Everything happens in the token:
//
//  1. C_DeriveKey(CKM_ECDH1_DERIVE, CKD_NULL, peerPub) with the identity's
//     private key gives Z, the 32-byte x-coordinate, as a session AES-256
//     key that can only derive.
//  2. C_DeriveKey(CKM_AES_ECB_ENCRYPT_DATA) under Z over
//     SHA-256(pairKDFDomain || context) gives the KEK:
//     AES-256-ECB_Z(H), two blocks, 32 bytes.
//
// Step 2 is the KDF, so that the raw x-coordinate (not uniformly random) is
// never a key itself and the KEK depends on the pairing's context. SoftHSM2
// 2.6.1 offers no ECDH KDF such as CKD_SHA256_KDF, no HMAC- or hash-based
// derive, and unwraps only with AES key wrap and RSA; its derive mechanisms
// besides ECDH and DH are the *_ENCRYPT_DATA ones. Of those, ECB over a
// hash is the simplest: AES under the secret Z acts as a PRF on the two
// distinct halves of H, and CBC would add only a fixed IV.
//
// It returns a key check value: the first 8 bytes of an all-zero AES-128 key
// wrapped under the new KEK with CKM_AES_KEY_WRAP (RFC 3394, deterministic).
// Both tokens return the same value iff they derived the same KEK; it is a
// public value, like the KCV of a key ceremony. The session objects (Z and the
// zero key) are destroyed. The old key under label is destroyed only once the
// new one exists, so a failure leaves it in place.
func (t *Token) DerivePairKEK(ctx context.Context, label string, peerPub, context []byte) (check []byte, err error) {
	if err := checkPairLabel("derive pair key", label); err != nil {
		return nil, err
	}
	if _, err := ecdh.P256().NewPublicKey(peerPub); err != nil {
		return nil, fmt.Errorf("derive pair key %s: peer public key is not an uncompressed P-256 point: %w", label, ErrInvalidInput)
	}
	if len(context) == 0 {
		return nil, fmt.Errorf("derive pair key %s: empty context: %w", label, ErrInvalidInput)
	}
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("derive pair key %s: %w", label, err)
	}
	defer func() { t.release(s, err) }()
	// t.mu serialises derivations in this process, so two of them for one
	// label cannot destroy each other's result, and guards t.keks.
	t.mu.Lock()
	defer t.mu.Unlock()
	priv, _, err := t.mirrorIdentity(s.h)
	if err != nil {
		return nil, fmt.Errorf("derive pair key %s: %w", label, err)
	}
	old, err := t.findObjects(s.h, pkcs11.CKO_SECRET_KEY, label)
	if err != nil {
		return nil, fmt.Errorf("derive pair key %s: %w", label, err)
	}
	ecdhMech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDH1_DERIVE,
		pkcs11.NewECDH1DeriveParams(pkcs11.CKD_NULL, nil, peerPub))}
	z, err := t.p11.DeriveKey(s.h, ecdhMech, priv, sharedSecretTemplate())
	if err != nil {
		return nil, fmt.Errorf("derive pair key %s: ECDH: %w", label, mapErr(err, opOther))
	}
	defer t.p11.DestroyObject(s.h, z)
	h := sha256.New()
	h.Write([]byte(pairKDFDomain))
	h.Write(context)
	kek, err := t.deriveEncryptData(s.h, z, h.Sum(nil), pairKEKTemplate(label))
	if err != nil {
		return nil, fmt.Errorf("derive pair key %s: %w", label, err)
	}
	if check, err = t.checkValue(s.h, kek); err != nil {
		t.p11.DestroyObject(s.h, kek)
		return nil, fmt.Errorf("derive pair key %s: %w", label, err)
	}
	for _, o := range old {
		if err := t.p11.DestroyObject(s.h, o); err != nil {
			return nil, fmt.Errorf("derive pair key %s: remove the previous key: %w", label, mapErr(err, opOther))
		}
	}
	// The old handle is dead: never serve it from the cache again.
	t.keks[label] = kek
	t.log.Info("pair key derived", "token", t.label, "key_ref", label, "replaced", len(old) > 0)
	return check, nil
}

// keyDerivationString mirrors CK_KEY_DERIVATION_STRING_DATA, the parameter
// of CKM_AES_ECB_ENCRYPT_DATA: a pointer and a CK_ULONG (C unsigned long,
// the size of a Go uint on the Unix ABIs this package runs on).
type keyDerivationString struct {
	data uintptr
	n    uint
}

// deriveEncryptData runs C_DeriveKey(CKM_AES_ECB_ENCRYPT_DATA) over data
// under base. miekg/pkcs11 has no type for this parameter and copies a []byte
// parameter into C memory as is, so the parameter carries the address of data,
// pinned for the call (the cgo rules allow C to read pinned Go memory).
func (t *Token) deriveEncryptData(sh pkcs11.SessionHandle, base pkcs11.ObjectHandle, data []byte, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&data[0])
	param := keyDerivationString{data: uintptr(unsafe.Pointer(&data[0])), n: uint(len(data))}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&param)), unsafe.Sizeof(param))
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB_ENCRYPT_DATA, raw)}
	h, err := t.p11.DeriveKey(sh, mech, base, tmpl)
	if err != nil {
		return 0, fmt.Errorf("derive with AES-ECB: %w", mapErr(err, opOther))
	}
	return h, nil
}

// checkValue returns the key check value of KEK kek: the first 8 bytes of
// RFC 3394 AES key wrap of an all-zero AES-128 session key under it.
func (t *Token) checkValue(sh pkcs11.SessionHandle, kek pkcs11.ObjectHandle) ([]byte, error) {
	zero, err := t.p11.CreateObject(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, make([]byte, 16)),
	})
	if err != nil {
		return nil, fmt.Errorf("compute check value: %w", mapErr(err, opOther))
	}
	defer t.p11.DestroyObject(sh, zero)
	blob, err := t.p11.WrapKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP, nil)}, kek, zero)
	if err != nil {
		return nil, fmt.Errorf("compute check value: %w", mapErr(err, opOther))
	}
	return blob[:8], nil
}

// DeletePairKEK removes the token key `label` (must start with PairKEKPrefix); no error if absent.
// The Token forgets its cached handle, so Rewrap to or from label fails with
// ErrNotFound afterwards.
func (t *Token) DeletePairKEK(ctx context.Context, label string) (err error) {
	if err := checkPairLabel("delete pair key", label); err != nil {
		return err
	}
	if err := t.begin(); err != nil {
		return err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return fmt.Errorf("delete pair key %s: %w", label, err)
	}
	defer func() { t.release(s, err) }()
	t.mu.Lock()
	defer t.mu.Unlock()
	hs, err := t.findObjects(s.h, pkcs11.CKO_SECRET_KEY, label)
	if err != nil {
		return fmt.Errorf("delete pair key %s: %w", label, err)
	}
	for _, h := range hs {
		if err := t.p11.DestroyObject(s.h, h); err != nil {
			return fmt.Errorf("delete pair key %s: %w", label, mapErr(err, opOther))
		}
	}
	delete(t.keks, label)
	if len(hs) > 0 {
		t.log.Info("pair key deleted", "token", t.label, "key_ref", label)
	}
	return nil
}

// findObjects returns every token object of class labelled label.
func (t *Token) findObjects(sh pkcs11.SessionHandle, class uint, label string) ([]pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	return t.findAll(sh, tmpl, label)
}
