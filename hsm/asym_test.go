package hsm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/hsm/hsmtest"
)

// pair generates a key pair in the token and checks what comes back.
func pair(t *testing.T, tok *hsm.Token, r hsm.KeyPairRequest) (hsm.Key, crypto.PublicKey) {
	t.Helper()
	kp, err := tok.GenerateKeyPair(t.Context(), r)
	if err != nil {
		t.Fatalf("GenerateKeyPair: %v", err)
	}
	pub, err := x509.ParsePKIXPublicKey(kp.Public)
	if err != nil {
		t.Fatalf("public key is not SubjectPublicKeyInfo: %v", err)
	}
	k := hsm.Key{ID: t.Name(), Kind: r.Kind, Wrapped: kp.Private}
	der, err := tok.ExportPlain(t.Context(), k)
	if err != nil {
		t.Fatalf("ExportPlain: %v", err)
	}
	prv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatalf("ExportPlain is not PKCS#8: %v", err)
	}
	if !prv.(interface{ Public() crypto.PublicKey }).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Fatalf("exported private key does not match the public key")
	}
	if sum := sha256.Sum256(der); !bytes.Equal(sum[:], kp.Digest) {
		t.Fatalf("Digest is not SHA-256 of the PKCS#8 encoding")
	}
	return k, pub
}

func TestKeyPairSignVerify(t *testing.T) {
	t.Parallel()
	tok := hsmtest.Token(t)
	for _, tc := range []struct {
		req     hsm.KeyPairRequest
		schemes []hsm.SignScheme
	}{
		{hsm.KeyPairRequest{Kind: hsm.KindRSA, Bits: 2048}, []hsm.SignScheme{hsm.SignPKCS1v15, hsm.SignPSS}},
		{hsm.KeyPairRequest{Kind: hsm.KindRSA, Bits: 3072}, []hsm.SignScheme{hsm.SignPSS}},
		{hsm.KeyPairRequest{Kind: hsm.KindRSA, Bits: 4096}, []hsm.SignScheme{hsm.SignPKCS1v15}},
		{hsm.KeyPairRequest{Kind: hsm.KindEC, Curve: elliptic.P256()}, []hsm.SignScheme{hsm.SignECDSA}},
		{hsm.KeyPairRequest{Kind: hsm.KindEC, Curve: elliptic.P384()}, []hsm.SignScheme{hsm.SignECDSA}},
		{hsm.KeyPairRequest{Kind: hsm.KindEC, Curve: elliptic.P521()}, []hsm.SignScheme{hsm.SignECDSA}},
	} {
		t.Run(fmt.Sprintf("%v-%d-%v", tc.req.Kind, tc.req.Bits, tc.req.Curve != nil), func(t *testing.T) {
			t.Parallel()
			k, pub := pair(t, tok, tc.req)
			for _, scheme := range tc.schemes {
				for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA512} {
					hh := h.New()
					hh.Write([]byte("message"))
					digest := hh.Sum(nil)
					sig, err := tok.Sign(t.Context(), hsm.SignRequest{Key: k, Scheme: scheme, Hash: h, Digest: digest})
					if err != nil {
						t.Fatalf("Sign %d %v: %v", scheme, h, err)
					}
					switch p := pub.(type) {
					case *rsa.PublicKey:
						if scheme == hsm.SignPSS {
							err = rsa.VerifyPSS(p, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
						} else {
							err = rsa.VerifyPKCS1v15(p, h, digest, sig)
						}
					case *ecdsa.PublicKey:
						if !ecdsa.VerifyASN1(p, digest, sig) {
							err = errors.New("ECDSA signature invalid")
						}
					}
					if err != nil {
						t.Fatalf("verify %d %v: %v", scheme, h, err)
					}
				}
			}
		})
	}
}

func TestKeyPairRefusals(t *testing.T) {
	t.Parallel()
	tok := hsmtest.Token(t)
	ctx := t.Context()
	for _, r := range []hsm.KeyPairRequest{
		{Kind: hsm.KindRSA, Bits: 1024},
		{Kind: hsm.KindEC, Curve: elliptic.P224()},
		{Kind: hsm.KindAES, Bits: 256},
	} {
		if _, err := tok.GenerateKeyPair(ctx, r); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("GenerateKeyPair(%+v) = %v, want ErrInvalidInput", r, err)
		}
	}
	k, _ := pair(t, tok, hsm.KeyPairRequest{Kind: hsm.KindEC, Curve: elliptic.P256()})
	digest := sha256.Sum256([]byte("m"))
	for name, r := range map[string]hsm.SignRequest{
		"PSS with EC":      {Key: k, Scheme: hsm.SignPSS, Hash: crypto.SHA256, Digest: digest[:]},
		"short digest":     {Key: k, Scheme: hsm.SignECDSA, Hash: crypto.SHA256, Digest: digest[:20]},
		"unsupported hash": {Key: k, Scheme: hsm.SignECDSA, Hash: crypto.MD5, Digest: digest[:16]},
	} {
		if _, err := tok.Sign(ctx, r); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("Sign %s = %v, want ErrInvalidInput", name, err)
		}
	}
	bad := k
	bad.ID = "tampered"
	bad.Wrapped.Blob = bytes.Clone(k.Wrapped.Blob)
	bad.Wrapped.Blob[20] ^= 1
	if _, err := tok.Sign(ctx, hsm.SignRequest{Key: bad, Scheme: hsm.SignECDSA, Hash: crypto.SHA256, Digest: digest[:]}); !errors.Is(err, hsm.ErrBadCiphertext) {
		t.Errorf("Sign with a tampered blob = %v, want ErrBadCiphertext", err)
	}
}

func TestImportPrivate(t *testing.T) {
	t.Parallel()
	tok := hsmtest.Token(t)
	ctx := t.Context()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  crypto.Signer
		kind hsm.KeyKind
	}{{rk, hsm.KindRSA}, {ek, hsm.KindEC}} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			w, err := tok.ImportPrivate(ctx, tc.key)
			if err != nil {
				t.Fatalf("ImportPrivate: %v", err)
			}
			k := hsm.Key{ID: "import-" + t.Name(), Kind: tc.kind, Wrapped: w}
			got, err := tok.ExportPlain(ctx, k)
			if err != nil {
				t.Fatalf("ExportPlain: %v", err)
			}
			want, _ := x509.MarshalPKCS8PrivateKey(tc.key)
			if !bytes.Equal(got, want) {
				t.Fatalf("ExportPlain does not return the imported key's PKCS#8 encoding")
			}
		})
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := tok.ImportPrivate(ctx, small); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("ImportPrivate(RSA-1024) = %v, want ErrInvalidInput", err)
	}
	// OAEP decryption in the token of what Go encrypted with the public key.
	w, err := tok.ImportPrivate(ctx, rk)
	if err != nil {
		t.Fatal(err)
	}
	k := hsm.Key{ID: "oaep", Kind: hsm.KindRSA, Wrapped: w}
	ct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, &rk.PublicKey, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := tok.DecryptOAEP(ctx, hsm.OAEPRequest{Key: k, Hash: crypto.SHA1, Data: ct})
	if err != nil || string(plain) != "secret" {
		t.Fatalf("DecryptOAEP = %q, %v", plain, err)
	}
	ct[10] ^= 1
	if _, err := tok.DecryptOAEP(ctx, hsm.OAEPRequest{Key: k, Hash: crypto.SHA1, Data: ct}); !errors.Is(err, hsm.ErrBadCiphertext) {
		t.Errorf("DecryptOAEP of tampered ciphertext = %v, want ErrBadCiphertext", err)
	}
}

func TestWrapUnwrap(t *testing.T) {
	t.Parallel()
	tok := hsmtest.Token(t)
	ctx := t.Context()
	aes := func(id string) hsm.Key {
		w, _, err := tok.Generate(ctx, 256)
		if err != nil {
			t.Fatal(err)
		}
		return hsm.Key{ID: id, Kind: hsm.KindAES, Wrapped: w}
	}
	target, kek := aes("wrap-target"), aes("wrap-kek")
	rsaKey, rsaPub := pair(t, tok, hsm.KeyPairRequest{Kind: hsm.KindRSA, Bits: 2048})
	ecKey, _ := pair(t, tok, hsm.KeyPairRequest{Kind: hsm.KindEC, Curve: elliptic.P256()})
	pubDER, _ := x509.MarshalPKIXPublicKey(rsaPub)
	// Encrypting one block under the original and the round-tripped key tells
	// whether they are the same key without reading either.
	probe := func(k hsm.Key) []byte {
		res, err := tok.Encrypt(ctx, hsm.CipherRequest{Key: k, Mode: hsm.ModeECB, Data: make([]byte, 16)})
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		return res.Data
	}
	for _, tc := range []struct {
		name string
		key  hsm.Key
		wrap hsm.WrapRequest
		kek  hsm.Key
	}{
		{"AES under AES-KW", target, hsm.WrapRequest{KEK: kek, Mech: hsm.WrapAESKW}, kek},
		{"AES under AES-KWP", target, hsm.WrapRequest{KEK: kek, Mech: hsm.WrapAESKWP}, kek},
		{"AES under RSA-OAEP", target, hsm.WrapRequest{Public: pubDER, Mech: hsm.WrapRSAOAEP, Hash: crypto.SHA1}, rsaKey},
		{"EC under AES-KWP", ecKey, hsm.WrapRequest{KEK: kek, Mech: hsm.WrapAESKWP}, kek},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.wrap
			r.Key = tc.key
			blob, err := tok.WrapKey(ctx, r)
			if err != nil {
				t.Fatalf("WrapKey: %v", err)
			}
			u, err := tok.UnwrapKey(ctx, hsm.UnwrapRequest{Blob: blob, Kind: tc.key.Kind, KEK: tc.kek, Mech: r.Mech, Hash: r.Hash})
			if err != nil {
				t.Fatalf("UnwrapKey: %v", err)
			}
			back := hsm.Key{ID: tc.key.ID + "-back-" + t.Name(), Kind: tc.key.Kind, Wrapped: u.Wrapped}
			if tc.key.Kind == hsm.KindAES {
				if u.Bits != 256 || !bytes.Equal(probe(back), probe(tc.key)) {
					t.Fatalf("round trip changed the key (bits %d)", u.Bits)
				}
				return
			}
			a, _ := tok.ExportPlain(ctx, tc.key)
			b, _ := tok.ExportPlain(ctx, back)
			if u.Bits != 256 || !bytes.Equal(a, b) {
				t.Fatalf("round trip changed the key (bits %d)", u.Bits)
			}
		})
	}
	for name, r := range map[string]hsm.WrapRequest{
		"RSA key under RSA-OAEP": {Key: rsaKey, Public: pubDER, Mech: hsm.WrapRSAOAEP, Hash: crypto.SHA1},
		"under an RSA key":       {Key: target, KEK: rsaKey, Mech: hsm.WrapAESKW},
		"bad public key":         {Key: target, Public: []byte{1, 2}, Mech: hsm.WrapRSAOAEP, Hash: crypto.SHA1},
		"secret data":            {Key: hsm.Key{ID: "s", Kind: hsm.KindSecret, Wrapped: target.Wrapped}, KEK: kek, Mech: hsm.WrapAESKW},
	} {
		if _, err := tok.WrapKey(ctx, r); err == nil {
			t.Errorf("WrapKey %s succeeded", name)
		}
	}
	if _, err := tok.UnwrapKey(ctx, hsm.UnwrapRequest{Blob: make([]byte, 40), Kind: hsm.KindAES, KEK: kek, Mech: hsm.WrapAESKW}); !errors.Is(err, hsm.ErrBadCiphertext) {
		t.Errorf("UnwrapKey of garbage = %v, want ErrBadCiphertext", err)
	}
}

// BenchmarkSign measures Sign with a cached private key handle.
func BenchmarkSign(b *testing.B) {
	tok := hsmtest.Token(b)
	for _, r := range []hsm.KeyPairRequest{{Kind: hsm.KindRSA, Bits: 2048}, {Kind: hsm.KindEC, Curve: elliptic.P256()}} {
		kp, err := tok.GenerateKeyPair(b.Context(), r)
		if err != nil {
			b.Fatal(err)
		}
		scheme := hsm.SignPKCS1v15
		if r.Kind == hsm.KindEC {
			scheme = hsm.SignECDSA
		}
		req := hsm.SignRequest{Key: hsm.Key{ID: "bench-" + r.Kind.String(), Kind: r.Kind, Wrapped: kp.Private},
			Scheme: scheme, Hash: crypto.SHA256, Digest: make([]byte, 32)}
		b.Run(r.Kind.String(), func(b *testing.B) {
			for b.Loop() {
				if _, err := tok.Sign(b.Context(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
