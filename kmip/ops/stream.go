package ops

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

// Streamed Encrypt and Decrypt (KMIP 1.3: Init Indicator, Correlation Value, Final
// Indicator) without keeping a PKCS#11 operation open between requests, which would
// pin a token session to a client for as long as it pleases.
//
// The server keeps the data received so far. Each Encrypt part returns the ciphertext
// that the data so far determines: all of it for GCM and CTR (stream modes), whole
// blocks for CBC and ECB. The token computes it by encrypting the whole prefix again
// under the same key and IV, which yields the same bytes; the GCM tag of a prefix is
// dropped, so no two tags under one IV ever leave the server. The Final part encrypts
// everything once more and returns the rest and the tag. Decrypt returns the
// plaintext only with the Final part, after GCM verified the tag.
//
// Streams are bounded in number, size and age, belong to the identity that opened
// them, and their buffers are cleared when they end.

const (
	maxStreams     = 256
	maxStreamBytes = 1 << 20
	streamTTL      = 5 * time.Minute
)

// stream is one streamed operation between its Init and Final parts.
type stream struct {
	owner   string
	keyID   string
	op      kmip14.Operation
	cp      cipherParams
	iv, aad []byte
	data    []byte
	emitted int
	expires time.Time
}

// streams holds the open streams by Correlation Value.
type streams struct {
	mu sync.Mutex
	m  map[string]*stream
}

func newStreams() *streams { return &streams{m: map[string]*stream{}} }

// put stores st under corr, or under a fresh Correlation Value when corr is nil, and
// returns the value.
func (t *streams) put(corr []byte, st *stream, now time.Time) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, old := range t.m {
		if now.After(old.expires) {
			clear(old.data)
			delete(t.m, k)
		}
	}
	if corr == nil {
		if len(t.m) >= maxStreams {
			return nil, kmip.Errorf(kmip14.ResultReasonGeneralFailure, "too many streamed operations in progress; retry later")
		}
		corr = make([]byte, 16)
		rand.Read(corr) // never fails (crypto/rand since Go 1.24)
	}
	st.expires = now.Add(streamTTL)
	t.m[string(corr)] = st
	return corr, nil
}

// take removes and returns the stream of corr if caller opened it for op.
func (t *streams) take(corr []byte, owner string, op kmip14.Operation) (*stream, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.m[string(corr)]
	if !ok || st.owner != owner || st.op != op {
		return nil, kmip.Errorf(kmip14.ResultReasonItemNotFound, "no %v in progress has this Correlation Value", op)
	}
	delete(t.m, string(corr))
	return st, nil
}

// part starts (Init) or continues a stream and appends this part's data.
func (s *Service) part(ctx context.Context, it *kmip.Item, r cryptRequest, op kmip14.Operation, usage kmip14.CryptographicUsageMask) (*stream, error) {
	owner := s.caller(ctx).identity
	var st *stream
	if r.init {
		if r.correlation != nil {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "the Init Indicator starts a stream; it takes no Correlation Value")
		}
		o, err := s.cipherKey(ctx, r.id, usage, len(r.data))
		if err != nil {
			return nil, err
		}
		cp, err := parseParams(paramsFor(it, o))
		if err != nil {
			return nil, err
		}
		st = &stream{owner: owner, keyID: o.ID, op: op, cp: cp, iv: r.iv, aad: r.aad}
		if op == kmip14.OperationDecrypt {
			if err := needIV(cp, r.hasIV); err != nil {
				return nil, err
			}
		} else if cp.mode != hsm.ModeECB && (st.iv == nil || cp.randomIV) {
			st.iv = make([]byte, 16)
			if cp.mode == hsm.ModeGCM {
				st.iv = st.iv[:12]
			}
			rand.Read(st.iv)
		}
	} else {
		var err error
		if st, err = s.streams.take(r.correlation, owner, op); err != nil {
			return nil, err
		}
		if st.keyID != r.id {
			clear(st.data)
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "the Correlation Value belongs to another key")
		}
		// The key's state and dates are checked on every part.
		if _, err := s.cipherKey(ctx, r.id, usage, len(r.data)); err != nil {
			clear(st.data)
			return nil, err
		}
	}
	if len(st.data)+len(r.data) > maxStreamBytes {
		clear(st.data)
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "a streamed operation may carry at most %d bytes", maxStreamBytes)
	}
	st.data = append(st.data, r.data...)
	return st, nil
}

// keep stores an unfinished stream and returns its Correlation Value.
func (s *Service) keep(r cryptRequest, st *stream) ([]byte, error) {
	corr := r.correlation
	if r.init {
		corr = nil
	}
	c, err := s.streams.put(corr, st, s.now())
	if err != nil {
		clear(st.data)
	}
	return c, err
}

// encryptPart serves one part of a streamed Encrypt.
func (s *Service) encryptPart(ctx context.Context, it *kmip.Item, r cryptRequest) (*msg.Node, error) {
	st, err := s.part(ctx, it, r, kmip14.OperationEncrypt, kmip14.CryptographicUsageMaskEncrypt)
	if err != nil {
		return nil, err
	}
	o, err := s.view(ctx, st.keyID)
	if err != nil {
		clear(st.data)
		return nil, err
	}
	req := hsm.CipherRequest{Key: keyOf(o), Mode: st.cp.mode, Pad: st.cp.pad, TagLen: st.cp.tagLen, IV: st.iv, AAD: st.aad, Data: st.data}
	out := msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, o.ID))
	if r.final {
		defer clear(st.data)
		res, err := s.keys.Encrypt(ctx, req)
		if err != nil {
			return nil, err
		}
		out.Children = append(out.Children, msg.Bytes(kmip14.TagData, res.Data[st.emitted:]))
		if st.cp.mode == hsm.ModeGCM {
			out.Children = append(out.Children, msg.Bytes(kmip14.TagAuthenticatedEncryptionTag, res.Tag))
		}
		return out, nil
	}
	n := len(st.data)
	if st.cp.mode == hsm.ModeCBC || st.cp.mode == hsm.ModeECB {
		n -= n % 16
		req.Pad = false
	}
	var ct []byte
	if n > st.emitted {
		req.Data = st.data[:n]
		res, err := s.keys.Encrypt(ctx, req)
		if err != nil {
			clear(st.data)
			return nil, err
		}
		ct, st.emitted = res.Data[st.emitted:n], n
	}
	corr, err := s.keep(r, st)
	if err != nil {
		return nil, err
	}
	if ct != nil {
		out.Children = append(out.Children, msg.Bytes(kmip14.TagData, ct))
	}
	if r.init && (r.iv == nil || st.cp.randomIV) && st.cp.mode != hsm.ModeECB {
		out.Children = append(out.Children, msg.Bytes(kmip14.TagIVCounterNonce, st.iv))
	}
	out.Children = append(out.Children, msg.Bytes(kmip14.TagCorrelationValue, corr))
	return out, nil
}

// decryptPart serves one part of a streamed Decrypt: the plaintext comes with the
// Final part.
func (s *Service) decryptPart(ctx context.Context, it *kmip.Item, r cryptRequest) (*msg.Node, error) {
	st, err := s.part(ctx, it, r, kmip14.OperationDecrypt, kmip14.CryptographicUsageMaskDecrypt)
	if err != nil {
		return nil, err
	}
	out := msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, st.keyID))
	if !r.final {
		corr, err := s.keep(r, st)
		if err != nil {
			return nil, err
		}
		out.Children = append(out.Children, msg.Bytes(kmip14.TagCorrelationValue, corr))
		return out, nil
	}
	defer clear(st.data)
	o, err := s.view(ctx, st.keyID)
	if err != nil {
		return nil, err
	}
	plain, err := s.keys.Decrypt(ctx, hsm.CipherRequest{Key: keyOf(o), Mode: st.cp.mode, Pad: st.cp.pad, TagLen: st.cp.tagLen,
		IV: st.iv, AAD: st.aad, Tag: r.tag, Data: st.data})
	if err != nil {
		return nil, fmt.Errorf("decrypt stream: %w", err)
	}
	out.Children = append(out.Children, msg.Bytes(kmip14.TagData, plain))
	return out, nil
}
