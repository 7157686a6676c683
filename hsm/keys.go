package hsm

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"

	"github.com/miekg/pkcs11"
)

// Wrapped is a managed key at rest: the RFC 5649 (CKM_AES_KEY_WRAP_PAD)
// blob and the label of the KEK it is wrapped under. It prints and logs
// redacted (length and KEK only).
type Wrapped struct {
	Blob []byte
	KEK  string
}

// String redacts the blob.
func (w Wrapped) String() string {
	return fmt.Sprintf("wrapped(%d bytes under %s)", len(w.Blob), w.KEK)
}

// GoString redacts the blob for %#v too.
func (w Wrapped) GoString() string { return w.String() }

// LogValue redacts the blob.
func (w Wrapped) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("blob_len", len(w.Blob)), slog.String("kek", w.KEK))
}

// KeyKind is the PKCS#11 key type a wrapped blob unwraps to.
type KeyKind int

// Key kinds.
const (
	KindAES    KeyKind = iota + 1 // CKK_AES, 128, 192 or 256 bits
	KindSecret                    // CKK_GENERIC_SECRET (KMIP Secret Data), 1 to 4096 bytes
)

func (k KeyKind) String() string {
	switch k {
	case KindAES:
		return "AES"
	case KindSecret:
		return "secret"
	case KindHMAC:
		return "HMAC"
	case KindDES3:
		return "3DES"
	case KindRSA:
		return "RSA"
	case KindEC:
		return "EC"
	}
	return fmt.Sprintf("KeyKind(%d)", int(k))
}

// Key names a managed key for an operation. ID (the KMIP unique identifier)
// only keys the handle cache.
type Key struct {
	ID      string
	Kind    KeyKind
	Wrapped Wrapped
}

// maxSecret bounds Secret Data; KMIP clients store passwords and seeds, not
// files.
const maxSecret = 4096

var wrapMech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}

func ckk(kind KeyKind) uint {
	switch kind {
	case KindSecret, KindHMAC:
		return pkcs11.CKK_GENERIC_SECRET
	case KindDES3:
		return pkcs11.CKK_DES3
	}
	return pkcs11.CKK_AES
}

// newKeyTemplate is the template of a managed key created in the token:
// a private session object, sensitive, extractable only so the master can
// wrap it, and bound to trusted KEKs when the master is trusted.
func newKeyTemplate(kind KeyKind, trusted bool) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckk(kind)),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP_WITH_TRUSTED, trusted),
	}
}

// Generate creates an AES key of bits (128, 192 or 256) inside the token and
// returns it wrapped under the master key, with the SHA-256 digest of its value
// computed by the token (C_DigestKey) while the session object still exists, so
// KMIP's Digest attribute costs no second unwrap. The key never leaves the token
// in the clear; the session object is destroyed before returning.
func (t *Token) Generate(ctx context.Context, bits int) (w Wrapped, digest []byte, err error) {
	if bits != 128 && bits != 192 && bits != 256 {
		return Wrapped{}, nil, fmt.Errorf("generate AES-%d key: %w", bits, ErrInvalidInput)
	}
	if err := t.begin(); err != nil {
		return Wrapped{}, nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return Wrapped{}, nil, fmt.Errorf("generate AES-%d key: %w", bits, err)
	}
	defer func() { t.release(s, err) }()
	w, digest, err = t.generate(s, bits, true)
	if err != nil {
		return Wrapped{}, nil, fmt.Errorf("generate AES-%d key: %w", bits, err)
	}
	return w, digest, nil
}

// generate makes and wraps one AES key; withDigest also digests it in the token.
func (t *Token) generate(s *session, bits int, withDigest bool) (Wrapped, []byte, error) {
	master, err := t.masterKey()
	if err != nil {
		return Wrapped{}, nil, err
	}
	tmpl := append(newKeyTemplate(KindAES, master.trusted), pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, bits/8))
	h, err := t.p11.GenerateKey(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, tmpl)
	if err != nil {
		return Wrapped{}, nil, mapErr(err, opOther)
	}
	defer t.p11.DestroyObject(s.h, h)
	var digest []byte
	if withDigest {
		if digest, err = t.digestHandle(s, h); err != nil {
			return Wrapped{}, nil, err
		}
	}
	w, err := t.wrap(s, master, h)
	return w, digest, err
}

// wrap wraps h under kek and names kek in the result.
func (t *Token) wrap(s *session, kek kekRef, h pkcs11.ObjectHandle) (Wrapped, error) {
	blob, err := t.p11.WrapKey(s.h, wrapMech, kek.h, h)
	if err != nil {
		return Wrapped{}, fmt.Errorf("wrap under %s: %w", kek.label, mapErr(err, opOther))
	}
	return Wrapped{Blob: blob, KEK: kek.label}, nil
}

// Import creates a key from material (KMIP Register) as a session object,
// wraps it under the master key and destroys the object. AES material is 16,
// 24 or 32 bytes; Secret Data 1 to 4096 bytes.
func (t *Token) Import(ctx context.Context, kind KeyKind, material []byte) (w Wrapped, err error) {
	value, err := encodeValue(kind, material)
	if err != nil {
		return Wrapped{}, fmt.Errorf("import %s key: %w", kind, err)
	}
	defer clear(value)
	if err := t.begin(); err != nil {
		return Wrapped{}, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return Wrapped{}, fmt.Errorf("import %s key: %w", kind, err)
	}
	defer func() { t.release(s, err) }()
	master, err := t.masterKey()
	if err != nil {
		return Wrapped{}, fmt.Errorf("import %s key: %w", kind, err)
	}
	tmpl := append(newKeyTemplate(kind, master.trusted), pkcs11.NewAttribute(pkcs11.CKA_VALUE, value))
	h, err := t.p11.CreateObject(s.h, tmpl)
	if err != nil {
		return Wrapped{}, fmt.Errorf("import %s key: %w", kind, mapErr(err, opOther))
	}
	defer t.p11.DestroyObject(s.h, h)
	if w, err = t.wrap(s, master, h); err != nil {
		return Wrapped{}, fmt.Errorf("import %s key: %w", kind, err)
	}
	return w, nil
}

// encodeValue checks material and returns the CKA_VALUE to store, a copy.
//
// Secret Data is stored with ISO/IEC 7816-4 padding (0x80, then zeros to a
// multiple of 8 bytes). SoftHSM2 2.6.1 loses the RFC 5649 length indicator on
// C_UnwrapKey and returns the value zero-padded to a multiple of 8, so an
// unpadded 5-byte secret would come back as 8 bytes. A value that is already
// a multiple of 8 unwraps exactly on every token, and the padding tells the
// true length back.
func encodeValue(kind KeyKind, material []byte) ([]byte, error) {
	switch kind {
	case KindAES:
		if n := len(material); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("AES key of %d bytes: %w", n, ErrInvalidInput)
		}
		return append([]byte(nil), material...), nil
	case KindSecret:
		n := len(material)
		if n < 1 || n > maxSecret {
			return nil, fmt.Errorf("secret of %d bytes (want 1 to %d): %w", n, maxSecret, ErrInvalidInput)
		}
		v := make([]byte, (n/8+1)*8)
		copy(v, material)
		v[n] = 0x80
		return v, nil
	case KindHMAC, KindDES3:
		return exactValue(kind, material)
	}
	return nil, fmt.Errorf("key kind %d: %w", int(kind), ErrInvalidInput)
}

// decodeValue reverses encodeValue in place; SoftHSM2's extra zero padding
// is tolerated because the 0x80 marker comes before it.
func decodeValue(kind KeyKind, value []byte) ([]byte, error) {
	switch kind {
	case KindAES:
		if n := len(value); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("unwrapped AES key of %d bytes: %w", n, ErrBadCiphertext)
		}
		return value, nil
	case KindSecret:
		i := len(value) - 1
		for i >= 0 && value[i] == 0 {
			i--
		}
		if i >= 1 && value[i] == 0x80 {
			clear(value[i:])
			return value[:i], nil
		}
		clear(value)
		return nil, fmt.Errorf("unwrapped secret has no padding marker: %w", ErrBadCiphertext)
	case KindHMAC, KindDES3:
		if err := checkExact(kind, len(value)); err != nil {
			clear(value)
			return nil, fmt.Errorf("unwrapped key: %w", ErrBadCiphertext)
		}
		return value, nil
	}
	return nil, fmt.Errorf("key kind %d: %w", int(kind), ErrInvalidInput)
}

// checkKey validates k before any token call: the miekg binding panics on an
// empty blob, and RFC 5649 blobs are at least 16 bytes in 8-byte steps.
func (t *Token) checkKey(k Key) error {
	if k.Kind != KindAES && k.Kind != KindSecret && k.Kind != KindHMAC && k.Kind != KindDES3 {
		return fmt.Errorf("key %s: kind %d: %w", k.ID, int(k.Kind), ErrInvalidInput)
	}
	if n := len(k.Wrapped.Blob); n < 16 || n%8 != 0 {
		return fmt.Errorf("key %s: wrapped blob of %d bytes: %w", k.ID, n, ErrInvalidInput)
	}
	if _, ok := masterGen(k.Wrapped.KEK); !ok {
		return fmt.Errorf("key %s: KEK %q: %w", k.ID, k.Wrapped.KEK, ErrNotFound)
	}
	return nil
}

// unwrap makes k a private session object on sh with extra attributes.
func (t *Token) unwrap(sh pkcs11.SessionHandle, kek pkcs11.ObjectHandle, k Key, extra ...*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	tmpl := append([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckk(k.Kind)),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
	}, extra...)
	h, err := t.p11.UnwrapKey(sh, wrapMech, kek, k.Wrapped.Blob, tmpl)
	if err != nil {
		return 0, fmt.Errorf("unwrap key %s: %w", k.ID, mapErr(err, opDecrypt))
	}
	return h, nil
}

// plainAttrs make an unwrapped object whose value can be read.
var plainAttrs = []*pkcs11.Attribute{
	pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
	pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
}

// readPlain unwraps k as a non-sensitive object on s, reads CKA_VALUE and
// destroys the object. Only ExportPlain and the Digest fallback call it.
func (t *Token) readPlain(s *session, k Key) ([]byte, error) {
	kek, err := t.kekHandle(k.Wrapped.KEK)
	if err != nil {
		return nil, err
	}
	h, err := t.unwrap(s.h, kek, k, plainAttrs...)
	if err != nil {
		return nil, err
	}
	defer t.p11.DestroyObject(s.h, h)
	attrs, err := t.p11.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", k.ID, mapErr(err, opOther))
	}
	return decodeValue(k.Kind, attrs[0].Value)
}

// ExportPlain returns the key's plaintext value; for a private key (KindRSA,
// KindEC) its PKCS#8 DER encoding. It is the one way key material leaves the
// token in the clear; only KMIP Get calls it, for keys whose policy allows
// it. The caller should clear the result after use.
func (t *Token) ExportPlain(ctx context.Context, k Key) (plain []byte, err error) {
	read, check := t.readPlain, t.checkKey(k)
	if isPrivate(k.Kind) {
		read, check = t.readPrivate, checkPrivate(k)
	}
	if err := check; err != nil {
		return nil, fmt.Errorf("export key: %w", err)
	}
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("export key %s: %w", k.ID, err)
	}
	defer func() { t.release(s, err) }()
	if plain, err = read(s, k); err != nil {
		return nil, fmt.Errorf("export key %s: %w", k.ID, err)
	}
	return plain, nil
}

// Digest returns SHA-256 of the key value. AES keys are hashed inside the
// token (C_DigestKey on the cached sensitive handle). Secret Data carries
// padding in the token (see encodeValue), so a token-side digest would hash
// the padding too: for those the value is unwrapped non-sensitive and hashed
// here, then cleared.
func (t *Token) Digest(ctx context.Context, k Key) (sum []byte, err error) {
	if err := t.checkKey(k); err != nil {
		return nil, fmt.Errorf("digest key: %w", err)
	}
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("digest key %s: %w", k.ID, err)
	}
	defer func() { t.release(s, err) }()
	if k.Kind == KindSecret {
		plain, err := t.readPlain(s, k)
		if err != nil {
			return nil, fmt.Errorf("digest key %s: %w", k.ID, err)
		}
		defer clear(plain)
		h := sha256.Sum256(plain)
		return h[:], nil
	}
	e, err := t.useKey(s, k)
	if err != nil {
		return nil, fmt.Errorf("digest key %s: %w", k.ID, err)
	}
	defer t.unuse(e, &err)
	if sum, err = t.digestHandle(s, e.h); err != nil {
		return nil, fmt.Errorf("digest key %s: %w", k.ID, err)
	}
	return sum, nil
}

// useKey returns a referenced cache entry holding k unwrapped as a
// sensitive, non-extractable encrypt/decrypt key. Misses unwrap on the home
// session, because a session object dies with the session that created it
// and pooled sessions get replaced.
func (t *Token) useKey(s *session, k Key) (*entry, error) {
	if k.Kind != KindAES {
		return nil, fmt.Errorf("use %s key %s for AES: %w", k.Kind, k.ID, ErrInvalidInput)
	}
	fp := fingerprint(k)
	e, victims := t.cache.get(k.ID, fp)
	t.destroy(victims)
	if e != nil {
		return e, nil
	}
	t.mu.Lock()
	kek, err := t.kekLocked(k.Wrapped.KEK)
	if err != nil {
		t.mu.Unlock()
		return nil, err
	}
	h, err := t.unwrap(t.home, kek, k,
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
	)
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	e, victims = t.cache.add(k.ID, fp, h)
	t.destroy(victims)
	return e, nil
}

// unuse releases a cache entry. When the operation found the handle invalid
// the entry is orphaned rather than destroyed (the number may be reused).
func (t *Token) unuse(e *entry, err *error) {
	if *err != nil && (isCode(*err, pkcs11.CKR_KEY_HANDLE_INVALID) || isCode(*err, pkcs11.CKR_OBJECT_HANDLE_INVALID)) {
		t.cache.orphan(e)
	}
	if h, ok := t.cache.release(e); ok {
		t.destroy([]pkcs11.ObjectHandle{h})
	}
}

// destroy removes evicted session objects through the home session that
// created them.
func (t *Token) destroy(hs []pkcs11.ObjectHandle) {
	if len(hs) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, h := range hs {
		if err := t.p11.DestroyObject(t.home, h); err != nil {
			t.log.Debug("cached key destroy failed", "token", t.label, "err", err)
		}
	}
}

// Forget drops the cached handle for a key ID (e.g. on Destroy) and destroys
// the session object once no operation uses it.
func (t *Token) Forget(id string) {
	if t.begin() != nil {
		return
	}
	defer t.end()
	t.destroy(t.cache.remove(id))
}

// digestHandle returns SHA-256 of the value of key object h, computed in the token.
func (t *Token) digestHandle(s *session, h pkcs11.ObjectHandle) (sum []byte, err error) {
	if err = t.p11.DigestInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256, nil)}); err == nil {
		if err = t.p11.DigestKey(s.h, h); err == nil {
			sum, err = t.p11.DigestFinal(s.h)
		} else {
			// C_DigestKey failing leaves the digest active; finish it so the
			// session stays usable.
			t.p11.DigestFinal(s.h)
		}
	}
	if err != nil {
		return nil, mapErr(err, opOther)
	}
	return sum, nil
}
