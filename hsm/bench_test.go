package hsm_test

import (
	"testing"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/hsm/hsmtest"
)

// benchKey returns a generated AES-256 key.
func benchKey(b *testing.B, tok *hsm.Token) hsm.Key {
	w, _, err := tok.Generate(b.Context(), 256)
	if err != nil {
		b.Fatalf("Generate: %v", err)
	}
	return hsm.Key{ID: "bench", Kind: hsm.KindAES, Wrapped: w}
}

// BenchmarkEncrypt64 is AES-CBC-PAD of 64 bytes through Token.Encrypt with a
// cached handle: the server's hot path.
func BenchmarkEncrypt64(b *testing.B) {
	tok := hsmtest.Token(b)
	req := hsm.CipherRequest{Key: benchKey(b, tok), Mode: hsm.ModeCBC, Pad: true, IV: make([]byte, 16), Data: make([]byte, 64)}
	for b.Loop() {
		if _, err := tok.Encrypt(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncrypt64GCMRandomIV adds a token-generated IV per call.
func BenchmarkEncrypt64GCMRandomIV(b *testing.B) {
	tok := hsmtest.Token(b)
	req := hsm.CipherRequest{Key: benchKey(b, tok), Mode: hsm.ModeGCM, Data: make([]byte, 64)}
	for b.Loop() {
		if _, err := tok.Encrypt(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncrypt64Parallel(b *testing.B) {
	tok := hsmtest.Token(b)
	req := hsm.CipherRequest{Key: benchKey(b, tok), Mode: hsm.ModeCBC, Pad: true, IV: make([]byte, 16), Data: make([]byte, 64)}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := tok.Encrypt(b.Context(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkExportPlain(b *testing.B) {
	tok := hsmtest.Token(b)
	k := benchKey(b, tok)
	for b.Loop() {
		if _, err := tok.ExportPlain(b.Context(), k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	tok := hsmtest.Token(b)
	for b.Loop() {
		if _, _, err := tok.Generate(b.Context(), 256); err != nil {
			b.Fatal(err)
		}
	}
}

// The Raw benchmarks are the PKCS#11 baseline: the same token calls with no
// pool, cache or validation around them.
func BenchmarkRawEncrypt64(b *testing.B)       { benchRaw(b, hsm.RawEncrypt64) }
func BenchmarkRawUnwrapEncrypt64(b *testing.B) { benchRaw(b, hsm.RawUnwrapEncrypt64) }
func BenchmarkRawExport(b *testing.B)          { benchRaw(b, hsm.RawExport) }
func BenchmarkRawGenerate(b *testing.B)        { benchRaw(b, hsm.RawGenerate) }

func benchRaw(b *testing.B, op string) {
	tok := hsmtest.Token(b)
	b.ResetTimer()
	if err := tok.RawLoop(b.Context(), op, b.N); err != nil {
		b.Fatal(err)
	}
}
