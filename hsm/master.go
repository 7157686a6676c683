package hsm

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/pkcs11"
)

// Master key generations. The token may hold several masters at once,
// hsmkms-master-1, -2, ...: new keys are wrapped under the newest, and every
// blob names its own KEK (Wrapped.KEK), so blobs under an older master stay
// usable until `kek retire-master` deletes it.
const (
	masterPrefix = "hsmkms-master-"
	// masterRecheck bounds how long a Token keeps wrapping new keys under a
	// master that another process (kek rotate-master) has superseded.
	masterRecheck = 10 * time.Second
)

// kekRef is a resolved KEK: its handle, label and trust.
type kekRef struct {
	h       pkcs11.ObjectHandle
	label   string
	trusted bool
}

// masterGen returns N for a label hsmkms-master-N (N >= 1).
func masterGen(label string) (int, bool) {
	return labelGen(label, masterPrefix)
}

// labelGen returns N for a label prefix+N (N >= 1, decimal, no sign).
func labelGen(label, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(label, prefix)
	if !ok || rest == "" || rest[0] < '1' || rest[0] > '9' {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil
}

// findLabelled returns the token secret keys whose label starts with prefix,
// by label. The token holds a handful of long-lived keys, so reading every
// label is cheap.
func (t *Token) findLabelled(sh pkcs11.SessionHandle, prefix string) (map[string]pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
	}
	all, err := t.findAll(sh, tmpl, "keys "+prefix+"*")
	if err != nil {
		return nil, err
	}
	found := make(map[string]pkcs11.ObjectHandle)
	for _, h := range all {
		attrs, err := t.p11.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil)})
		if err != nil {
			return nil, fmt.Errorf("read label of key %d: %w", h, mapErr(err, opOther))
		}
		if label := string(attrs[0].Value); strings.HasPrefix(label, prefix) {
			if _, dup := found[label]; dup {
				return nil, fmt.Errorf("find key %s: several keys carry this label: %w", label, ErrInvalidInput)
			}
			found[label] = h
		}
	}
	return found, nil
}

// findAll returns every object matching tmpl on sh; what names them in errors.
func (t *Token) findAll(sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute, what string) ([]pkcs11.ObjectHandle, error) {
	if err := t.p11.FindObjectsInit(sh, tmpl); err != nil {
		return nil, fmt.Errorf("find %s: %w", what, mapErr(err, opOther))
	}
	var all []pkcs11.ObjectHandle
	for {
		hs, _, err := t.p11.FindObjects(sh, 64)
		if err != nil {
			t.p11.FindObjectsFinal(sh)
			return nil, fmt.Errorf("find %s: %w", what, mapErr(err, opOther))
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	if err := t.p11.FindObjectsFinal(sh); err != nil {
		return nil, fmt.Errorf("find %s: %w", what, mapErr(err, opOther))
	}
	return all, nil
}

// kekHandle resolves a KEK label (a master or a backup KEK) to its handle.
func (t *Token) kekHandle(label string) (pkcs11.ObjectHandle, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.kekLocked(label)
}

// kekLocked is kekHandle with t.mu held. An unknown master label makes the
// Token look the masters up again: a blob under a newer master than the
// newest known means another process rotated, and new keys should follow.
func (t *Token) kekLocked(label string) (pkcs11.ObjectHandle, error) {
	if h, ok := t.keks[label]; ok {
		return h, nil
	}
	if _, ok := masterGen(label); ok {
		if err := t.findMaster(); err != nil {
			return 0, err
		}
		if h, ok := t.keks[label]; ok {
			return h, nil
		}
		return 0, fmt.Errorf("find key %s: %w", label, ErrNotFound)
	}
	h, err := t.findKey(t.home, label)
	if err != nil {
		return 0, err
	}
	t.keks[label] = h
	return h, nil
}

// forgetStaleKEK drops the cached handle of KEK label when err says the
// handle is gone: another Token or process destroyed or replaced the key
// (DeletePairKEK, DerivePairKEK), so the next use looks the label up again.
func (t *Token) forgetStaleKEK(err error, label string) {
	if isCode(err, pkcs11.CKR_WRAPPING_KEY_HANDLE_INVALID) || isCode(err, pkcs11.CKR_UNWRAPPING_KEY_HANDLE_INVALID) ||
		isCode(err, pkcs11.CKR_KEY_HANDLE_INVALID) || isCode(err, pkcs11.CKR_OBJECT_HANDLE_INVALID) {
		t.mu.Lock()
		delete(t.keks, label)
		t.mu.Unlock()
	}
}

// masterTemplate is a master wrapping key: an AES-256 token key that wraps
// and unwraps and can never leave the token.
func masterTemplate(label string) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(label)),
	}
}

// createMaster generates the master key label on s and makes it the newest;
// t.mu is held.
func (t *Token) createMaster(s *session, label string) error {
	if _, err := t.p11.GenerateKey(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, masterTemplate(label)); err != nil {
		return fmt.Errorf("generate %s: %w", label, mapErr(err, opOther))
	}
	if err := t.findMaster(); err != nil {
		return err
	}
	t.log.Info("master key created", "token", t.label, "key_ref", label)
	return nil
}

// Masters returns the labels of the master keys in the token, oldest first;
// the last one is the one new keys are wrapped under.
func (t *Token) Masters(ctx context.Context) ([]string, error) {
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list master keys: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.findMaster(); err != nil {
		return nil, fmt.Errorf("list master keys: %w", err)
	}
	var labels []string
	for label := range t.keks {
		if _, ok := masterGen(label); ok {
			labels = append(labels, label)
		}
	}
	slices.SortFunc(labels, func(a, b string) int {
		ga, _ := masterGen(a)
		gb, _ := masterGen(b)
		return ga - gb
	})
	return labels, nil
}

// RotateMaster creates the next master generation (hsmkms-master-N+1) and
// wraps new keys under it from now on. Existing blobs keep their KEK until
// the caller rewraps them (Rewrap); other processes using this token switch
// within masterRecheck, or at once when they meet a blob under the new master.
func (t *Token) RotateMaster(ctx context.Context) (label string, err error) {
	if err := t.begin(); err != nil {
		return "", err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("rotate master key: %w", err)
	}
	defer func() { t.release(s, err) }()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.findMaster(); err != nil {
		return "", fmt.Errorf("rotate master key: %w", err)
	}
	gen, ok := masterGen(t.newest)
	if !ok {
		return "", fmt.Errorf("rotate master key: find key %s (run init): %w", MasterLabel, ErrNotFound)
	}
	label = masterPrefix + strconv.Itoa(gen+1)
	if err := t.createMaster(s, label); err != nil {
		return "", fmt.Errorf("rotate master key: %w", err)
	}
	return label, nil
}

// DeleteMaster destroys an old master key. It refuses the newest one. The
// caller must make sure no blob is wrapped under it any more, and that no
// process still holds such a blob in memory (see `kek retire-master`):
// whatever the deleted master wrapped is lost.
func (t *Token) DeleteMaster(ctx context.Context, label string) (err error) {
	if _, ok := masterGen(label); !ok {
		return fmt.Errorf("delete master key %q: not a master key label: %w", label, ErrInvalidInput)
	}
	if err := t.begin(); err != nil {
		return err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return fmt.Errorf("delete master key %s: %w", label, err)
	}
	defer func() { t.release(s, err) }()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.findMaster(); err != nil {
		return fmt.Errorf("delete master key %s: %w", label, err)
	}
	if label == t.newest {
		return fmt.Errorf("delete master key %s: it is the newest master: %w", label, ErrInvalidInput)
	}
	h, ok := t.keks[label]
	if !ok {
		return fmt.Errorf("delete master key %s: %w", label, ErrNotFound)
	}
	if err := t.p11.DestroyObject(s.h, h); err != nil {
		return fmt.Errorf("delete master key %s: %w", label, mapErr(err, opOther))
	}
	delete(t.keks, label)
	t.log.Info("master key deleted", "token", t.label, "key_ref", label)
	return nil
}
