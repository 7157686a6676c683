package hsm

import (
	"context"

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
