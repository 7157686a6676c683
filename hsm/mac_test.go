package hsm_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/hsm/hsmtest"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMACKnownAnswers imports keys and checks the token's MACs against published
// answers: RFC 4231 test case 2 style (HMAC, computed here with crypto/hmac) and RFC
// 4493 example 2 (AES-CMAC).
func TestMACKnownAnswers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tok := hsmtest.Token(t)
	hkey := bytes.Repeat([]byte{0x0b}, 32)
	data := []byte("Hi There")
	want := hmac.New(sha256.New, hkey)
	want.Write(data)
	hw, err := tok.Import(ctx, hsm.KindHMAC, hkey)
	if err != nil {
		t.Fatalf("Import HMAC key: %v", err)
	}
	cw, err := tok.Import(ctx, hsm.KindAES, unhex(t, "2b7e151628aed2a6abf7158809cf4f3c"))
	if err != nil {
		t.Fatalf("Import AES key: %v", err)
	}
	tests := []struct {
		name    string
		req     hsm.MACRequest
		want    []byte
		wantErr error
	}{
		{"hmac-sha256", hsm.MACRequest{Key: hsm.Key{ID: "h", Kind: hsm.KindHMAC, Wrapped: hw}, Algorithm: hsm.HMACSHA256, Data: data}, want.Sum(nil), nil},
		{"aes-cmac", hsm.MACRequest{Key: hsm.Key{ID: "c", Kind: hsm.KindAES, Wrapped: cw}, Algorithm: hsm.AESCMAC,
			Data: unhex(t, "6bc1bee22e409f96e93d7e117393172a")}, unhex(t, "070a16b46b4d4144f79bdd9dd04a287c"), nil},
		{"hmac with an AES key", hsm.MACRequest{Key: hsm.Key{ID: "c", Kind: hsm.KindAES, Wrapped: cw}, Algorithm: hsm.HMACSHA1, Data: data}, nil, hsm.ErrInvalidInput},
		{"unknown algorithm", hsm.MACRequest{Key: hsm.Key{ID: "h", Kind: hsm.KindHMAC, Wrapped: hw}, Algorithm: 99, Data: data}, nil, hsm.ErrInvalidInput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tok.MAC(ctx, tc.req)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("MAC: %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				return
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("MAC %x, want %x", got, tc.want)
			}
			for _, v := range []struct {
				mac []byte
				ok  bool
			}{{tc.want, true}, {tc.want[:8], true}, {append([]byte{tc.want[0] ^ 1}, tc.want[1:]...), false}} {
				ok, err := tok.VerifyMAC(ctx, tc.req, v.mac)
				if err != nil || ok != v.ok {
					t.Errorf("VerifyMAC(%x) = %v, %v; want %v", v.mac, ok, err, v.ok)
				}
			}
		})
	}
}

// TestGenerateSecret makes HMAC and 3DES keys in the token and reads them back.
func TestGenerateSecret(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tok := hsmtest.Token(t)
	tests := []struct {
		kind    hsm.KeyKind
		bits    int
		wantLen int
		wantErr bool
	}{
		{hsm.KindHMAC, 256, 32, false},
		{hsm.KindHMAC, 512, 64, false},
		{hsm.KindDES3, 168, 24, false},
		{hsm.KindHMAC, 100, 0, true},
		{hsm.KindDES3, 128, 0, true},
	}
	for _, tc := range tests {
		w, digest, err := tok.GenerateSecret(ctx, tc.kind, tc.bits)
		if tc.wantErr {
			if !errors.Is(err, hsm.ErrInvalidInput) {
				t.Errorf("%s/%d: %v, want ErrInvalidInput", tc.kind, tc.bits, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s/%d: %v", tc.kind, tc.bits, err)
		}
		plain, err := tok.ExportPlain(ctx, hsm.Key{ID: "g", Kind: tc.kind, Wrapped: w})
		if err != nil {
			t.Fatalf("%s/%d: ExportPlain: %v", tc.kind, tc.bits, err)
		}
		if sum := sha256.Sum256(plain); len(plain) != tc.wantLen || !bytes.Equal(sum[:], digest) {
			t.Errorf("%s/%d: %d bytes, digest match %v", tc.kind, tc.bits, len(plain), bytes.Equal(sum[:], digest))
		}
	}
}
