package hsm

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"
)

// DropSessions closes every session of the application on the token's slot,
// as a token reset or a dropped network HSM connection would.
func (t *Token) DropSessions() error {
	return t.p11.(*pkcs11.Ctx).CloseAllSessions(t.slot)
}

// CachedHandles reports the number of cached unwrapped handles.
func (t *Token) CachedHandles() int { return t.cache.len() }

// RawLoop runs n raw operations (see RawRate) on one session, for
// benchmarks.
func (t *Token) RawLoop(ctx context.Context, op string, n int) (err error) {
	if err := t.begin(); err != nil {
		return err
	}
	defer t.end()
	b, err := t.newRawBench(ctx, op)
	if err != nil {
		return err
	}
	defer b.close()
	s, err := t.acquire(ctx)
	if err != nil {
		return err
	}
	defer func() { t.release(s, err) }()
	for range n {
		if err = b.run(s); err != nil {
			return err
		}
	}
	return nil
}

// KeyAttrs returns the boolean attributes of the single token object of
// class labelled label, by attribute type, for tests that check templates.
func (t *Token) KeyAttrs(class uint, label string, types ...uint) (map[uint]bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	hs, err := t.findObjects(t.home, class, label)
	if err != nil {
		return nil, err
	}
	if len(hs) != 1 {
		return nil, fmt.Errorf("find %s: %d objects", label, len(hs))
	}
	var tmpl []*pkcs11.Attribute
	for _, ty := range types {
		tmpl = append(tmpl, pkcs11.NewAttribute(ty, nil))
	}
	attrs, err := t.p11.GetAttributeValue(t.home, hs[0], tmpl)
	if err != nil {
		return nil, err
	}
	out := make(map[uint]bool)
	for _, a := range attrs {
		out[a.Type] = len(a.Value) == 1 && a.Value[0] != 0
	}
	return out, nil
}

// SessionObjects counts the session objects this application holds on the
// token (every session sees them all).
func (t *Token) SessionObjects() (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.p11.FindObjectsInit(t.home, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)}); err != nil {
		return 0, err
	}
	defer t.p11.FindObjectsFinal(t.home)
	hs, _, err := t.p11.FindObjects(t.home, 1000)
	return len(hs), err
}
