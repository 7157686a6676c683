package ops

import (
	"bytes"
	"context"
	"crypto/aes"
	"encoding/hex"
	"testing"
)

// TestAESKeyWrap checks the block-by-block key wrap against RFC 3394 section 4.1, RFC
// 5649 section 6 and, for 48-byte inputs like a Key Value encoding, Python
// cryptography's keywrap module. Here a software AES stands in for the token's ECB.
func TestAESKeyWrap(t *testing.T) {
	t.Parallel()
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	seq := func(from, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(from + i)
		}
		return b
	}
	for _, tc := range []struct {
		name      string
		kek, data []byte
		padded    bool
		want      string
	}{
		{"RFC 3394 4.1", unhex("000102030405060708090A0B0C0D0E0F"), unhex("00112233445566778899AABBCCDDEEFF"), false,
			"1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5"},
		{"RFC 5649 20 bytes", unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"), unhex("c37b7e6492584340bed12207808941155068f738"), true,
			"138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"RFC 3394 48 bytes", seq(0, 32), seq(100, 48), false,
			"40c559583fef7ac9553cbe4c1a43170d2a67bb696427247d2136c2c6e5db50a37faf7793bdaf35841eff91f8d8fb6078e2cac96ef905de1e"},
		{"RFC 5649 48 bytes", seq(0, 32), seq(100, 48), true,
			"a73101fd26f441d50017b958b4a77586f7237971f7cc23b988d581ac33c6f4558902fec878a2a18b96c17d292d23c786326248c52236f5d1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := aes.NewCipher(tc.kek)
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			enc := func(_ context.Context, in []byte) ([]byte, error) {
				calls++
				out := make([]byte, 16)
				c.Encrypt(out, in)
				return out, nil
			}
			data := bytes.Clone(tc.data)
			got, err := aesKeyWrap(t.Context(), enc, data, tc.padded)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got) != tc.want {
				t.Fatalf("got %x, want %s", got, tc.want)
			}
			if n := (len(tc.data) + 7) / 8; calls != 6*n {
				t.Fatalf("%d block encryptions, want %d", calls, 6*n)
			}
			if !bytes.Equal(data, tc.data) {
				t.Fatalf("the input was modified")
			}
		})
	}
	if _, err := aesKeyWrap(t.Context(), nil, make([]byte, 12), false); err == nil {
		t.Fatal("RFC 3394 of 12 bytes: got success")
	}
}
