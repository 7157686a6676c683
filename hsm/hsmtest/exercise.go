package hsmtest

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
)

// Known material for the known-answer tests.
var (
	knownKey = mustHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	knownIV  = mustHex("f0e0d0c0b0a090807060504030201000")
	message  = []byte("hsmkms known-answer message, 45 bytes long...")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// Exercise runs the behavioural contract of an hsm.Token against tok: key
// round trips, redaction, every cipher mode against crypto/aes, bad
// ciphertext, digests, the handle cache, concurrency, pool exhaustion and
// Close. It closes tok at the end, so pass a token the test owns (Open).
func Exercise(t *testing.T, tok *hsm.Token) {
	ctx := t.Context()
	aesKey := importKey(t, tok, hsm.KindAES, "kat-aes", knownKey)

	t.Run("ping", func(t *testing.T) {
		if err := tok.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
	t.Run("import export round trip", func(t *testing.T) {
		for _, tc := range []struct {
			kind hsm.KeyKind
			n    int
		}{
			{hsm.KindAES, 16}, {hsm.KindAES, 24}, {hsm.KindAES, 32},
			{hsm.KindSecret, 1}, {hsm.KindSecret, 5}, {hsm.KindSecret, 8}, {hsm.KindSecret, 13},
			{hsm.KindSecret, 64}, {hsm.KindSecret, 4096},
		} {
			t.Run(fmt.Sprintf("%s-%d", tc.kind, tc.n), func(t *testing.T) {
				material := pattern(tc.n)
				if tc.kind == hsm.KindSecret && tc.n > 1 {
					material[tc.n-1] = 0 // trailing zeros must survive the padding workaround
				}
				k := importKey(t, tok, tc.kind, "", material)
				// A short value turns up in any random-looking blob by chance (a
				// 1-byte secret in one run of ten); from 8 bytes on it cannot.
				if tc.n >= 8 && bytes.Contains(k.Wrapped.Blob, material) {
					t.Errorf("wrapped blob contains the plaintext")
				}
				if k.Wrapped.KEK != hsm.MasterLabel {
					t.Errorf("KEK = %q, want %q", k.Wrapped.KEK, hsm.MasterLabel)
				}
				got, err := tok.ExportPlain(ctx, k)
				if err != nil {
					t.Fatalf("ExportPlain: %v", err)
				}
				if !bytes.Equal(got, material) {
					t.Errorf("ExportPlain = %x, want %x", got, material)
				}
				sum, err := tok.Digest(ctx, k)
				if err != nil {
					t.Fatalf("Digest: %v", err)
				}
				if want := sha256.Sum256(material); !bytes.Equal(sum, want[:]) {
					t.Errorf("Digest = %x, want %x", sum, want)
				}
			})
		}
	})
	t.Run("generate", func(t *testing.T) {
		for _, bits := range []int{128, 192, 256} {
			w, genDigest, err := tok.Generate(ctx, bits)
			if err != nil {
				t.Fatalf("Generate(%d): %v", bits, err)
			}
			k := hsm.Key{ID: fmt.Sprintf("gen-%d", bits), Kind: hsm.KindAES, Wrapped: w}
			plain, err := tok.ExportPlain(ctx, k)
			if err != nil {
				t.Fatalf("ExportPlain: %v", err)
			}
			if len(plain) != bits/8 {
				t.Errorf("generated key has %d bytes, want %d", len(plain), bits/8)
			}
			if bytes.Contains(w.Blob, plain) {
				t.Errorf("wrapped blob contains the plaintext")
			}
			sum, err := tok.Digest(ctx, k)
			if want := sha256.Sum256(plain); err != nil || !bytes.Equal(sum, want[:]) || !bytes.Equal(genDigest, want[:]) {
				t.Errorf("Digest = %x, %v, Generate's digest = %x; want %x", sum, err, genDigest, want)
			}
		}
		a, _, errA := tok.Generate(ctx, 256)
		b, _, errB := tok.Generate(ctx, 256)
		if errA != nil || errB != nil || bytes.Equal(a.Blob, b.Blob) {
			t.Errorf("two generated keys: equal blobs or errors %v, %v", errA, errB)
		}
	})
	t.Run("redaction", func(t *testing.T) {
		w := aesKey.Wrapped
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "wrapped", w)
		for _, s := range []string{fmt.Sprint(w), fmt.Sprintf("%v", aesKey), fmt.Sprintf("%#v", aesKey), buf.String()} {
			if hexBlob := hex.EncodeToString(w.Blob); bytes.Contains([]byte(s), []byte(hexBlob)) || bytes.Contains([]byte(s), w.Blob) {
				t.Errorf("blob printed: %s", s)
			}
			if !bytes.Contains([]byte(s), []byte(w.KEK)) {
				t.Errorf("KEK missing from %s", s)
			}
		}
	})
	t.Run("cipher modes match crypto/aes", func(t *testing.T) {
		for _, tc := range cipherCases() {
			t.Run(tc.name, func(t *testing.T) {
				req := tc.req
				req.Key = aesKey
				res, err := tok.Encrypt(ctx, req)
				if err != nil {
					t.Fatalf("Encrypt: %v", err)
				}
				wantData, wantTag := goEncrypt(t, req, res.IV)
				if !bytes.Equal(res.Data, wantData) || !bytes.Equal(res.Tag, wantTag) {
					t.Errorf("Encrypt = %x|%x, crypto/aes gives %x|%x", res.Data, res.Tag, wantData, wantTag)
				}
				if req.IV != nil && !bytes.Equal(res.IV, req.IV) {
					t.Errorf("IV = %x, want the request's %x", res.IV, req.IV)
				}
				dec := req
				dec.IV, dec.Tag, dec.Data = res.IV, res.Tag, res.Data
				got, err := tok.Decrypt(ctx, dec)
				if err != nil {
					t.Fatalf("Decrypt: %v", err)
				}
				if !bytes.Equal(got, req.Data) {
					t.Errorf("Decrypt = %q, want %q", got, req.Data)
				}
			})
		}
	})
	t.Run("bad ciphertext", func(t *testing.T) {
		gcm := hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeGCM, AAD: []byte("aad"), Data: message}
		res, err := tok.Encrypt(ctx, gcm)
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		// A block whose last byte is 0 never carries valid PKCS#7 padding.
		zeroBlock := hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeCBC, IV: knownIV, Data: make([]byte, 16)}
		cbc, err := tok.Encrypt(ctx, zeroBlock)
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		ecb, err := tok.Encrypt(ctx, hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeECB, Data: make([]byte, 16)})
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		for _, tc := range []struct {
			name string
			req  hsm.CipherRequest
		}{
			{"GCM tampered tag", with(gcm, func(r *hsm.CipherRequest) { r.IV, r.Data, r.Tag = res.IV, res.Data, flip(res.Tag) })},
			{"GCM tampered data", with(gcm, func(r *hsm.CipherRequest) { r.IV, r.Data, r.Tag = res.IV, flip(res.Data), res.Tag })},
			{"GCM wrong AAD", with(gcm, func(r *hsm.CipherRequest) { r.IV, r.Data, r.Tag, r.AAD = res.IV, res.Data, res.Tag, []byte("other") })},
			{"CBC bad padding", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeCBC, Pad: true, IV: knownIV, Data: cbc.Data}},
			{"ECB bad padding", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeECB, Pad: true, Data: ecb.Data}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := tok.Decrypt(ctx, tc.req); !errors.Is(err, hsm.ErrBadCiphertext) {
					t.Errorf("Decrypt error = %v, want ErrBadCiphertext", err)
				}
			})
		}
		// The failures must leave the pool healthy.
		got, err := tok.Decrypt(ctx, with(gcm, func(r *hsm.CipherRequest) { r.IV, r.Data, r.Tag = res.IV, res.Data, res.Tag }))
		if err != nil || !bytes.Equal(got, message) {
			t.Errorf("Decrypt after failures = %q, %v", got, err)
		}
		tampered := aesKey
		tampered.ID = "tampered"
		tampered.Wrapped.Blob = flip(aesKey.Wrapped.Blob)
		if _, err := tok.ExportPlain(ctx, tampered); !errors.Is(err, hsm.ErrBadCiphertext) {
			t.Errorf("ExportPlain of a tampered blob: %v, want ErrBadCiphertext", err)
		}
	})
	t.Run("invalid input", func(t *testing.T) {
		secret := importKey(t, tok, hsm.KindSecret, "secret", []byte("not an AES key"))
		unknownKEK := aesKey
		unknownKEK.Wrapped.KEK = "no-such-kek"
		for _, tc := range []struct {
			name string
			req  hsm.CipherRequest
			dec  bool
			want error
		}{
			{"unknown mode", hsm.CipherRequest{Key: aesKey, Mode: 99, Data: message}, false, hsm.ErrInvalidInput},
			{"CBC short IV", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeCBC, Pad: true, IV: knownIV[:15], Data: message}, false, hsm.ErrInvalidInput},
			{"CBC unaligned", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeCBC, Data: message}, false, hsm.ErrInvalidInput},
			{"ECB unaligned", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeECB, Data: message}, false, hsm.ErrInvalidInput},
			{"ECB with IV", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeECB, IV: knownIV, Data: make([]byte, 16)}, false, hsm.ErrInvalidInput},
			{"CTR empty", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeCTR, Data: nil}, false, hsm.ErrInvalidInput},
			// PKCS#11 refuses to let the 128-bit counter wrap (keystream reuse).
			{"CTR counter wraps", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeCTR, IV: bytes.Repeat([]byte{0xff}, 16), Data: message}, false, hsm.ErrInvalidInput},
			{"GCM tag length", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeGCM, TagLen: 17, Data: message}, false, hsm.ErrInvalidInput},
			{"secret used as AES", hsm.CipherRequest{Key: secret, Mode: hsm.ModeCBC, Pad: true, Data: message}, false, hsm.ErrInvalidInput},
			{"empty blob", hsm.CipherRequest{Key: hsm.Key{ID: "x", Kind: hsm.KindAES, Wrapped: hsm.Wrapped{KEK: hsm.MasterLabel}}, Mode: hsm.ModeECB, Data: make([]byte, 16)}, false, hsm.ErrInvalidInput},
			{"unknown KEK", hsm.CipherRequest{Key: unknownKEK, Mode: hsm.ModeECB, Data: make([]byte, 16)}, false, hsm.ErrNotFound},
			{"decrypt CBC without IV", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeCBC, Data: make([]byte, 16)}, true, hsm.ErrInvalidInput},
			{"decrypt GCM without tag", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeGCM, IV: knownIV[:12], Data: message}, true, hsm.ErrInvalidInput},
			{"decrypt CBC pad unaligned", hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeCBC, Pad: true, IV: knownIV, Data: message}, true, hsm.ErrInvalidInput},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var err error
				if tc.dec {
					_, err = tok.Decrypt(ctx, tc.req)
				} else {
					_, err = tok.Encrypt(ctx, tc.req)
				}
				if !errors.Is(err, tc.want) {
					t.Errorf("error = %v, want %v", err, tc.want)
				}
			})
		}
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"generate 100 bits", func() error { _, _, err := tok.Generate(ctx, 100); return err }},
			{"import AES 15 bytes", func() error { _, err := tok.Import(ctx, hsm.KindAES, make([]byte, 15)); return err }},
			{"import empty secret", func() error { _, err := tok.Import(ctx, hsm.KindSecret, nil); return err }},
			{"import 4097-byte secret", func() error { _, err := tok.Import(ctx, hsm.KindSecret, make([]byte, 4097)); return err }},
			{"import unknown kind", func() error { _, err := tok.Import(ctx, 0, make([]byte, 16)); return err }},
			{"random 0 bytes", func() error { _, err := tok.Random(ctx, 0); return err }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := tc.call(); !errors.Is(err, hsm.ErrInvalidInput) {
					t.Errorf("error = %v, want ErrInvalidInput", err)
				}
			})
		}
	})
	t.Run("random", func(t *testing.T) {
		a, errA := tok.Random(ctx, 32)
		b, errB := tok.Random(ctx, 32)
		if errA != nil || errB != nil || len(a) != 32 || bytes.Equal(a, b) {
			t.Errorf("Random: %x, %v; %x, %v", a, errA, b, errB)
		}
	})
	t.Run("forget and changed blob", func(t *testing.T) {
		req := hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeCBC, Pad: true, IV: knownIV, Data: message}
		first, err := tok.Encrypt(ctx, req)
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		tok.Forget(aesKey.ID)
		tok.Forget("never-cached")
		again, err := tok.Encrypt(ctx, req)
		if err != nil || !bytes.Equal(again.Data, first.Data) {
			t.Fatalf("Encrypt after Forget = %x, %v; want %x", again.Data, err, first.Data)
		}
		// Same ID, new blob: the cache must not reuse the old handle.
		other := pattern(32)
		req.Key = importKey(t, tok, hsm.KindAES, aesKey.ID, other)
		got, err := tok.Encrypt(ctx, req)
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		req.Key = hsm.Key{}
		want, _ := goEncryptWith(t, other, req, knownIV)
		if !bytes.Equal(got.Data, want) {
			t.Errorf("Encrypt with a changed blob used the old key")
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		keys := []hsm.Key{aesKey}
		for i := range 3 {
			w, _, err := tok.Generate(ctx, 256)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			keys = append(keys, hsm.Key{ID: fmt.Sprintf("conc-%d", i), Kind: hsm.KindAES, Wrapped: w})
		}
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := range 16 {
			wg.Go(func() {
				for i := range 40 {
					k := keys[(g+i)%len(keys)]
					if i%10 == 0 {
						tok.Forget(k.ID)
					}
					if err := roundTrip(ctx, tok, k, i); err != nil {
						errs <- fmt.Errorf("goroutine %d op %d: %w", g, i, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("pool exhausted", func(t *testing.T) {
		rawCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		// RawRate holds every pooled session while it runs.
		go func() {
			_, err := tok.RawRate(rawCtx, "encrypt64", 1<<10, 30*time.Second)
			done <- err
		}()
		deadline := time.Now().Add(20 * time.Second)
		var err error
		for time.Now().Before(deadline) {
			wctx, wcancel := context.WithTimeout(ctx, 20*time.Millisecond)
			_, err = tok.Random(wctx, 8)
			wcancel()
			if errors.Is(err, hsm.ErrBusy) {
				break
			}
		}
		if !errors.Is(err, hsm.ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("call on an exhausted pool: %v, want ErrBusy and DeadlineExceeded", err)
		}
		cancel()
		<-done
		if _, err := tok.Random(ctx, 8); err != nil {
			t.Errorf("Random after the pool freed up: %v", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		if err := tok.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := tok.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := tok.Encrypt(ctx, hsm.CipherRequest{Key: aesKey, Mode: hsm.ModeGCM, Data: message}); !errors.Is(err, hsm.ErrTokenUnavailable) {
			t.Errorf("Encrypt after Close: %v, want ErrTokenUnavailable", err)
		}
		if err := tok.Ping(ctx); !errors.Is(err, hsm.ErrTokenUnavailable) {
			t.Errorf("Ping after Close: %v, want ErrTokenUnavailable", err)
		}
		tok.Forget(aesKey.ID)
	})
}

// roundTrip encrypts and decrypts with k in a mode chosen by i.
func roundTrip(ctx context.Context, tok *hsm.Token, k hsm.Key, i int) error {
	modes := []hsm.Mode{hsm.ModeGCM, hsm.ModeCBC, hsm.ModeCTR}
	req := hsm.CipherRequest{Key: k, Mode: modes[i%len(modes)], Pad: true, Data: message}
	res, err := tok.Encrypt(ctx, req)
	if err != nil {
		return err
	}
	req.IV, req.Tag, req.Data = res.IV, res.Tag, res.Data
	got, err := tok.Decrypt(ctx, req)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, message) {
		return fmt.Errorf("round trip of %s gave %q", req.Mode, got)
	}
	return nil
}

type cipherCase struct {
	name string
	req  hsm.CipherRequest
}

func cipherCases() []cipherCase {
	aligned := message[:32]
	return []cipherCase{
		{"CBC pad", hsm.CipherRequest{Mode: hsm.ModeCBC, Pad: true, IV: knownIV, Data: message}},
		{"CBC pad empty", hsm.CipherRequest{Mode: hsm.ModeCBC, Pad: true, IV: knownIV}},
		{"CBC pad random IV", hsm.CipherRequest{Mode: hsm.ModeCBC, Pad: true, Data: message}},
		{"CBC no pad", hsm.CipherRequest{Mode: hsm.ModeCBC, IV: knownIV, Data: aligned}},
		{"ECB pad", hsm.CipherRequest{Mode: hsm.ModeECB, Pad: true, Data: message}},
		{"ECB no pad", hsm.CipherRequest{Mode: hsm.ModeECB, Data: aligned}},
		{"CTR", hsm.CipherRequest{Mode: hsm.ModeCTR, IV: knownIV, Data: message}},
		{"CTR carry past 64 bits", hsm.CipherRequest{Mode: hsm.ModeCTR, IV: append(make([]byte, 8), bytes.Repeat([]byte{0xff}, 8)...), Data: message}},
		{"CTR random IV", hsm.CipherRequest{Mode: hsm.ModeCTR, Data: message}},
		{"GCM AAD", hsm.CipherRequest{Mode: hsm.ModeGCM, IV: knownIV[:12], AAD: []byte("header"), Data: message}},
		{"GCM random IV", hsm.CipherRequest{Mode: hsm.ModeGCM, Data: message}},
		{"GCM tag 12", hsm.CipherRequest{Mode: hsm.ModeGCM, IV: knownIV[:12], TagLen: 12, Data: message}},
		{"GCM empty data", hsm.CipherRequest{Mode: hsm.ModeGCM, IV: knownIV[:12], AAD: []byte("only aad")}},
	}
}

// goEncrypt computes what the token must return for req with knownKey.
func goEncrypt(t *testing.T, req hsm.CipherRequest, iv []byte) (data, tag []byte) {
	return goEncryptWith(t, knownKey, req, iv)
}

func goEncryptWith(t *testing.T, key []byte, req hsm.CipherRequest, iv []byte) (data, tag []byte) {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	in := req.Data
	if req.Pad && (req.Mode == hsm.ModeCBC || req.Mode == hsm.ModeECB) {
		n := 16 - len(in)%16
		in = append(append([]byte(nil), in...), bytes.Repeat([]byte{byte(n)}, n)...)
	}
	out := make([]byte, len(in))
	switch req.Mode {
	case hsm.ModeCBC:
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, in)
	case hsm.ModeECB:
		for i := 0; i < len(in); i += 16 {
			block.Encrypt(out[i:i+16], in[i:i+16])
		}
	case hsm.ModeCTR:
		cipher.NewCTR(block, iv).XORKeyStream(out, in)
	case hsm.ModeGCM:
		tagLen := req.TagLen
		if tagLen == 0 {
			tagLen = 16
		}
		var aead cipher.AEAD
		if len(iv) == 12 {
			aead, err = cipher.NewGCMWithTagSize(block, tagLen)
		} else {
			aead, err = cipher.NewGCMWithNonceSize(block, len(iv))
		}
		if err != nil {
			t.Fatal(err)
		}
		sealed := aead.Seal(nil, iv, in, req.AAD)
		return sealed[:len(in)], sealed[len(in):]
	}
	return out, nil
}

func importKey(t *testing.T, tok *hsm.Token, kind hsm.KeyKind, id string, material []byte) hsm.Key {
	t.Helper()
	w, err := tok.Import(t.Context(), kind, material)
	if err != nil {
		t.Fatalf("Import %s of %d bytes: %v", kind, len(material), err)
	}
	if id == "" {
		id = fmt.Sprintf("%s-%d", kind, len(material))
	}
	return hsm.Key{ID: id, Kind: kind, Wrapped: w}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

func flip(b []byte) []byte {
	c := append([]byte(nil), b...)
	c[len(c)/2] ^= 0x01
	return c
}

func with(r hsm.CipherRequest, f func(*hsm.CipherRequest)) hsm.CipherRequest {
	f(&r)
	return r
}
