package hsm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// Raw operations RawRate measures.
const (
	RawEncrypt64       = "encrypt64"        // AES-CBC-PAD of 64 bytes with one unwrapped session key
	RawExport          = "export"           // unwrap non-sensitive + read CKA_VALUE + destroy
	RawGenerate        = "generate"         // generate + wrap + destroy
	RawUnwrapEncrypt64 = "unwrap-encrypt64" // unwrap + AES-CBC-PAD of 64 bytes + destroy
)

// rawBench is the fixture of one raw measurement: a wrapped AES-256 key and,
// for encrypt64, that key unwrapped once on the home session.
type rawBench struct {
	t      *Token
	op     string
	master pkcs11.ObjectHandle
	key    Key
	h      pkcs11.ObjectHandle
	data   []byte
	iv     []byte
}

// newRawBench prepares op; close undoes it. The caller holds t.begin.
func (t *Token) newRawBench(ctx context.Context, op string) (*rawBench, error) {
	switch op {
	case RawEncrypt64, RawExport, RawGenerate, RawUnwrapEncrypt64:
	default:
		return nil, fmt.Errorf("raw op %q: %w", op, ErrInvalidInput)
	}
	master, err := t.masterKey()
	if err != nil {
		return nil, err
	}
	b := &rawBench{t: t, op: op, master: master.h, data: make([]byte, 64), iv: make([]byte, 16)}
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	w, _, err := t.generate(s, 256, false)
	t.release(s, err)
	if err != nil {
		return nil, err
	}
	b.key = Key{ID: "raw-bench", Kind: KindAES, Wrapped: w}
	if op == RawEncrypt64 {
		t.mu.Lock()
		b.h, err = t.unwrap(t.home, master.h, b.key, pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true))
		t.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *rawBench) close() {
	if b.h != 0 {
		b.t.destroy([]pkcs11.ObjectHandle{b.h})
	}
}

// run does one op on s, straight PKCS#11 with no cache.
func (b *rawBench) run(s *session) error {
	c := b.t.p11
	switch b.op {
	case RawEncrypt64:
		return b.encrypt(s, b.h)
	case RawGenerate:
		_, _, err := b.t.generate(s, 256, false)
		return err
	case RawUnwrapEncrypt64:
		h, err := b.t.unwrap(s.h, b.master, b.key, pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true))
		if err != nil {
			return err
		}
		defer c.DestroyObject(s.h, h)
		return b.encrypt(s, h)
	}
	plain, err := b.t.readPlain(s, b.key)
	clear(plain)
	return err
}

func (b *rawBench) encrypt(s *session, h pkcs11.ObjectHandle) error {
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_CBC_PAD, b.iv)}
	if err := b.t.p11.EncryptInit(s.h, mech, h); err != nil {
		return mapErr(err, opOther)
	}
	_, err := b.t.p11.Encrypt(s.h, b.data)
	return mapErr(err, opOther)
}

// RawRate measures, directly on the token with no caching layer, how many
// operations per second op achieves over d using workers goroutines: op
// "encrypt64" (AES-CBC-PAD 64 bytes with one session key), "export" (unwrap
// non-sensitive + read value + destroy), "generate" (generate + wrap +
// destroy) or "unwrap-encrypt64" (unwrap + encrypt 64 bytes + destroy).
// Used by `hsmkms bench` as the ceiling. Each worker holds a pooled session
// for the whole run, so workers are capped at the pool size, and other
// callers wait meanwhile.
func (t *Token) RawRate(ctx context.Context, op string, workers int, d time.Duration) (float64, error) {
	if workers < 1 || d <= 0 {
		return 0, fmt.Errorf("measure raw %s: workers %d, duration %s: %w", op, workers, d, ErrInvalidInput)
	}
	if err := t.begin(); err != nil {
		return 0, err
	}
	defer t.end()
	b, err := t.newRawBench(ctx, op)
	if err != nil {
		return 0, fmt.Errorf("measure raw %s: %w", op, err)
	}
	defer b.close()
	workers = min(workers, cap(t.pool))
	sessions := make([]*session, 0, workers)
	errs := make([]error, workers) // errs[i] is the error of sessions[i]
	defer func() {
		for i, s := range sessions {
			t.release(s, errs[i])
		}
	}()
	for range workers {
		s, err := t.acquire(ctx)
		if err != nil {
			return 0, fmt.Errorf("measure raw %s: %w", op, err)
		}
		sessions = append(sessions, s)
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		ops atomic.Int64
		wg  sync.WaitGroup
	)
	start := time.Now()
	for i, s := range sessions {
		wg.Go(func() {
			for ctx.Err() == nil {
				if errs[i] = b.run(s); errs[i] != nil {
					cancel()
					return
				}
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("measure raw %s: %w", op, err)
	}
	return float64(ops.Load()) / elapsed.Seconds(), nil
}
