package hsm

import (
	"context"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// AuditLabel is the label of the token key that chains the audit trail.
const AuditLabel = "hsmkms-audit-1"

// auditMech is HMAC-SHA256, computed by the token.
var auditMech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}

// EnsureAuditKey creates the audit MAC key if the token lacks it: a 256-bit
// generic secret that can only sign and verify and never leaves the token.
// It is idempotent; InitKeys calls it, and serve calls it so that appliances
// created before the audit trail existed get the key.
func (t *Token) EnsureAuditKey(ctx context.Context) (err error) {
	if err := t.begin(); err != nil {
		return err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return fmt.Errorf("ensure key %s: %w", AuditLabel, err)
	}
	defer func() { t.release(s, err) }()
	if _, err = t.findKey(s.h, AuditLabel); err == nil || !errors.Is(err, ErrNotFound) {
		return err
	}
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, AuditLabel),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(AuditLabel)),
	}
	gen := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil)}
	if _, err = t.p11.GenerateKey(s.h, gen, tmpl); err != nil {
		return fmt.Errorf("generate %s: %w", AuditLabel, mapErr(err, opOther))
	}
	t.log.Info("audit key created", "token", t.label, "key_ref", AuditLabel)
	return nil
}

// auditCacheID keys the audit key's session copy in the handle cache; the
// NUL makes it unlike any KMIP Unique Identifier.
const auditCacheID = "\x00" + AuditLabel

// auditFingerprint is the cache fingerprint of the audit key's copy.
var auditFingerprint = fingerprint(Key{ID: auditCacheID, Wrapped: Wrapped{KEK: AuditLabel}})

// AuditMAC returns HMAC-SHA256 of prev followed by record under the audit
// key, computed inside the token. It fails with ErrNotFound if the key is
// missing (see EnsureAuditKey).
//
// It signs with a session copy of the key, made with C_CopyObject on the
// home session and kept in the handle cache like an unwrapped managed key:
// SoftHSM2 re-reads a token object's file on every use, which made each MAC
// about four times slower than with a session object, and the audit trail
// computes one MAC per KMIP request. The copy keeps the key's sensitive,
// non-extractable, sign-only attributes.
func (t *Token) AuditMAC(ctx context.Context, prev, record []byte) (mac []byte, err error) {
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("compute audit MAC: %w", err)
	}
	defer func() { t.release(s, err) }()
	e, err := t.auditKey()
	if err != nil {
		return nil, fmt.Errorf("compute audit MAC: %w", err)
	}
	defer t.unuse(e, &err)
	if err = t.p11.SignInit(s.h, auditMech, e.h); err == nil {
		data := make([]byte, 0, len(prev)+len(record))
		mac, err = t.p11.Sign(s.h, append(append(data, prev...), record...))
	}
	if err != nil {
		return nil, fmt.Errorf("compute audit MAC with %s: %w", AuditLabel, mapErr(err, opOther))
	}
	return mac, nil
}

// auditKey returns a referenced cache entry holding a session copy of the
// audit key, copying it on the home session on a miss.
func (t *Token) auditKey() (*entry, error) {
	e, victims := t.cache.get(auditCacheID, auditFingerprint)
	t.destroy(victims)
	if e != nil {
		return e, nil
	}
	t.mu.Lock()
	h, err := t.findKey(t.home, AuditLabel)
	if err == nil {
		h, err = t.p11.CopyObject(t.home, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)})
		if err != nil {
			err = fmt.Errorf("copy %s into a session object: %w", AuditLabel, mapErr(err, opOther))
		}
	}
	t.mu.Unlock()
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("find key %s (run `hsmkms serve` once, or init): %w", AuditLabel, err)
	}
	if err != nil {
		return nil, err
	}
	e, victims = t.cache.add(auditCacheID, auditFingerprint, h)
	t.destroy(victims)
	return e, nil
}
