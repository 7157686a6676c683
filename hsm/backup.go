package hsm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"

	"github.com/miekg/pkcs11"
)

// Backup keys. A backup KEK generation N is a pair of token keys:
// hsmkms-backup-N (AES-256, wraps and unwraps) and hsmkms-backup-mac-N
// (a 32-byte generic secret for HMAC-SHA256 seals). Both are sensitive and
// non-extractable. A pair is made either inside the token (InitKeys,
// EnsureBackupKEK) or from a 64-byte backup secret, KEK || MAC key, that a
// key ceremony split into custodian shares (ImportBackupSecret). The pair is
// named across tokens by its fingerprint, which BackupFingerprint computes
// from the secret and the token from digests of the two keys.
const (
	BackupKEKPrefix  = "hsmkms-backup-"
	BackupMACPrefix  = "hsmkms-backup-mac-"
	BackupSecretSize = 64
)

// BackupKEK is one backup key generation in the token.
type BackupKEK struct {
	Generation  int
	Label       string // the AES-256 wrapping key, hsmkms-backup-N
	MACLabel    string // the HMAC-SHA256 seal key, hsmkms-backup-mac-N
	Fingerprint string // 32 hex digits; equal on every token holding the pair
}

// BackupFingerprint returns the fingerprint of a 64-byte backup secret
// (KEK || MAC key), the same the token computes for the imported pair. It is
// a hash of hashes of two random 256-bit keys and reveals nothing usable.
func BackupFingerprint(secret []byte) (string, error) {
	if len(secret) != BackupSecretSize {
		return "", fmt.Errorf("fingerprint backup secret of %d bytes (want %d): %w", len(secret), BackupSecretSize, ErrInvalidInput)
	}
	kek := sha256.Sum256(secret[:32])
	mac := sha256.Sum256(secret[32:])
	return fingerprintOf(kek[:], mac[:]), nil
}

func fingerprintOf(kekDigest, macDigest []byte) string {
	h := sha256.New()
	h.Write([]byte("hsmkms backup KEK v1\x00"))
	h.Write(kekDigest)
	h.Write(macDigest)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// backupTemplate is a backup key of a pair: a token key that never leaves it.
func backupTemplate(label string, mac bool) []*pkcs11.Attribute {
	ktype, wrap := uint(pkcs11.CKK_AES), true
	if mac {
		ktype, wrap = pkcs11.CKK_GENERIC_SECRET, false
	}
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ktype),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, wrap),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, wrap),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, mac),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, mac),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(label)),
	}
}

// backupKEKs lists the complete backup pairs visible on s, oldest first,
// with their fingerprints (two C_DigestKey per pair).
func (t *Token) backupKEKs(s *session) (pairs []BackupKEK, top int, err error) {
	found, err := t.findLabelled(s.h, BackupKEKPrefix)
	if err != nil {
		return nil, 0, err
	}
	for label := range found {
		if g, ok := labelGen(label, BackupKEKPrefix); ok {
			top = max(top, g)
		} else if g, ok := labelGen(label, BackupMACPrefix); ok {
			top = max(top, g)
		}
	}
	for label, h := range found {
		g, ok := labelGen(label, BackupKEKPrefix)
		if !ok {
			continue
		}
		macLabel := BackupMACPrefix + strconv.Itoa(g)
		mh, ok := found[macLabel]
		if !ok {
			continue // a half-made pair: ignored, and its number is not reused
		}
		kd, err := t.digestHandle(s, h)
		if err != nil {
			return nil, 0, fmt.Errorf("digest %s: %w", label, err)
		}
		md, err := t.digestHandle(s, mh)
		if err != nil {
			return nil, 0, fmt.Errorf("digest %s: %w", macLabel, err)
		}
		pairs = append(pairs, BackupKEK{Generation: g, Label: label, MACLabel: macLabel, Fingerprint: fingerprintOf(kd, md)})
	}
	slices.SortFunc(pairs, func(a, b BackupKEK) int { return a.Generation - b.Generation })
	return pairs, top, nil
}

// BackupKEKs lists the backup key pairs in the token, oldest first.
func (t *Token) BackupKEKs(ctx context.Context) (pairs []BackupKEK, err error) {
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("list backup keys: %w", err)
	}
	defer func() { t.release(s, err) }()
	if pairs, _, err = t.backupKEKs(s); err != nil {
		return nil, fmt.Errorf("list backup keys: %w", err)
	}
	return pairs, nil
}

// initBackupKEK generates backup pair 1 inside the token unless a pair
// exists; InitKeys calls it (t.mu is held, so it uses s only).
func (t *Token) initBackupKEK(s *session) error {
	pairs, top, err := t.backupKEKs(s)
	if err != nil {
		return err
	}
	if len(pairs) > 0 {
		return nil
	}
	return t.makeBackupPair(s, top+1, nil)
}

// makeBackupPair creates pair gen on s: generated in the token when secret is
// nil, else created from secret (KEK || MAC key). A failure removes the half
// already made.
func (t *Token) makeBackupPair(s *session, gen int, secret []byte) error {
	kekLabel := BackupKEKPrefix + strconv.Itoa(gen)
	macLabel := BackupMACPrefix + strconv.Itoa(gen)
	kekTmpl, macTmpl := backupTemplate(kekLabel, false), backupTemplate(macLabel, true)
	var (
		kh  pkcs11.ObjectHandle
		err error
	)
	if secret == nil {
		kh, err = t.p11.GenerateKey(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
			append(kekTmpl, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32)))
	} else {
		kh, err = t.p11.CreateObject(s.h, append(kekTmpl, pkcs11.NewAttribute(pkcs11.CKA_VALUE, secret[:32])))
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", kekLabel, mapErr(err, opOther))
	}
	if secret == nil {
		_, err = t.p11.GenerateKey(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil)},
			append(macTmpl, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32)))
	} else {
		_, err = t.p11.CreateObject(s.h, append(macTmpl, pkcs11.NewAttribute(pkcs11.CKA_VALUE, secret[32:])))
	}
	if err != nil {
		t.p11.DestroyObject(s.h, kh)
		return fmt.Errorf("create %s: %w", macLabel, mapErr(err, opOther))
	}
	t.log.Info("backup key created", "token", t.label, "key_ref", kekLabel, "imported", secret != nil)
	return nil
}

// EnsureBackupKEK returns the newest backup pair, generating pair 1 inside
// the token first if there is none (an appliance made before backups
// existed).
func (t *Token) EnsureBackupKEK(ctx context.Context) (k BackupKEK, err error) {
	if err := t.begin(); err != nil {
		return BackupKEK{}, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return BackupKEK{}, fmt.Errorf("find backup key: %w", err)
	}
	defer func() { t.release(s, err) }()
	pairs, top, err := t.backupKEKs(s)
	if err == nil && len(pairs) == 0 {
		if err = t.makeBackupPair(s, top+1, nil); err == nil {
			pairs, _, err = t.backupKEKs(s)
		}
	}
	if err != nil {
		return BackupKEK{}, fmt.Errorf("find backup key: %w", err)
	}
	if len(pairs) == 0 {
		return BackupKEK{}, fmt.Errorf("find backup key: %w", ErrNotFound)
	}
	return pairs[len(pairs)-1], nil
}

// ImportBackupSecret creates a backup pair from a 64-byte backup secret (KEK
// || MAC key) as non-extractable token keys, under the next generation
// number, and returns it; created is false when the token already holds a
// pair with this fingerprint. The caller clears secret. This is the one
// place key bytes enter the token from outside other than Import: Shamir
// shares can only be combined in memory (see `kek import-shares`).
func (t *Token) ImportBackupSecret(ctx context.Context, secret []byte) (k BackupKEK, created bool, err error) {
	fp, err := BackupFingerprint(secret)
	if err != nil {
		return BackupKEK{}, false, fmt.Errorf("import backup key: %w", err)
	}
	if err := t.begin(); err != nil {
		return BackupKEK{}, false, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return BackupKEK{}, false, fmt.Errorf("import backup key %s: %w", fp, err)
	}
	defer func() { t.release(s, err) }()
	pairs, top, err := t.backupKEKs(s)
	if err != nil {
		return BackupKEK{}, false, fmt.Errorf("import backup key %s: %w", fp, err)
	}
	for _, p := range pairs {
		if p.Fingerprint == fp {
			return p, false, nil
		}
	}
	if err = t.makeBackupPair(s, top+1, secret); err != nil {
		return BackupKEK{}, false, fmt.Errorf("import backup key %s: %w", fp, err)
	}
	if pairs, _, err = t.backupKEKs(s); err != nil {
		return BackupKEK{}, false, fmt.Errorf("import backup key %s: %w", fp, err)
	}
	for _, p := range pairs {
		if p.Fingerprint == fp {
			return p, true, nil
		}
	}
	// The token computed another fingerprint from what was just stored.
	return BackupKEK{}, false, fmt.Errorf("import backup key %s: the token does not report the imported pair: %w", fp, ErrTokenUnavailable)
}

// Rewrap moves a wrapped key from one KEK to another inside the token: it
// unwraps w under w.KEK as a sensitive session object (extractable only so
// that it can be wrapped again), wraps it under toKEK with
// CKM_AES_KEY_WRAP_PAD and destroys the object. Both KEKs are token keys
// named by label: a master (hsmkms-master-N), a backup KEK
// (hsmkms-backup-N) or a pair KEK (hsmkms-pair-<peer>, see DerivePairKEK).
// The value never leaves the token in the clear.
//
// kind only needs the right object class: a private key kind for private
// keys, and for everything else any secret kind will do, KindSecret
// included. Secret values are stored as multiples of 8 bytes (see
// encodeValue), which RFC 5649 carries exactly, even on SoftHSM2.
func (t *Token) Rewrap(ctx context.Context, w Wrapped, kind KeyKind, toKEK string) (out Wrapped, err error) {
	class := uint(pkcs11.CKO_SECRET_KEY)
	ktype := ckk(kind)
	switch kind {
	case KindAES, KindSecret, KindHMAC, KindDES3:
	case KindRSA, KindEC:
		class, ktype = pkcs11.CKO_PRIVATE_KEY, ckkPrivate(kind)
	default:
		return Wrapped{}, fmt.Errorf("rewrap key: kind %d: %w", int(kind), ErrInvalidInput)
	}
	if n := len(w.Blob); n < 16 || n%8 != 0 {
		return Wrapped{}, fmt.Errorf("rewrap key: wrapped blob of %d bytes: %w", n, ErrInvalidInput)
	}
	if err := t.begin(); err != nil {
		return Wrapped{}, err
	}
	defer t.end()
	from, err := t.kekHandle(w.KEK)
	if err != nil {
		return Wrapped{}, fmt.Errorf("rewrap key from %s: %w", w.KEK, err)
	}
	to, err := t.kekHandle(toKEK)
	if err != nil {
		return Wrapped{}, fmt.Errorf("rewrap key to %s: %w", toKEK, err)
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return Wrapped{}, fmt.Errorf("rewrap key: %w", err)
	}
	defer func() { t.release(s, err) }()
	h, err := t.p11.UnwrapKey(s.h, wrapMech, from, w.Blob, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ktype),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
	})
	if err != nil {
		t.forgetStaleKEK(err, w.KEK)
		return Wrapped{}, fmt.Errorf("rewrap key: unwrap under %s: %w", w.KEK, mapErr(err, opDecrypt))
	}
	defer t.p11.DestroyObject(s.h, h)
	out, err = t.wrap(s, kekRef{h: to, label: toKEK}, h)
	if err != nil {
		t.forgetStaleKEK(err, toKEK)
		return Wrapped{}, fmt.Errorf("rewrap key: %w", err)
	}
	return out, nil
}

// BackupMAC returns HMAC-SHA256 of data under the seal key of pair k,
// computed inside the token.
func (t *Token) BackupMAC(ctx context.Context, k BackupKEK, data []byte) (mac []byte, err error) {
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	h, err := t.kekHandle(k.MACLabel)
	if err != nil {
		return nil, fmt.Errorf("seal with %s: %w", k.MACLabel, err)
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("seal with %s: %w", k.MACLabel, err)
	}
	defer func() { t.release(s, err) }()
	if err = t.p11.SignInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}, h); err != nil {
		return nil, fmt.Errorf("seal with %s: %w", k.MACLabel, mapErr(err, opOther))
	}
	if mac, err = t.p11.Sign(s.h, data); err != nil {
		return nil, fmt.Errorf("seal with %s: %w", k.MACLabel, mapErr(err, opOther))
	}
	return mac, nil
}
