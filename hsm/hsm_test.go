package hsm_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/hsm/hsmtest"
)

func TestExercise(t *testing.T) {
	t.Parallel()
	hsmtest.Exercise(t, hsmtest.Open(t))
}

func TestSharedTokenReady(t *testing.T) {
	t.Parallel()
	if err := hsmtest.Token(t).Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// TestRecoverAfterSessionLoss kills every session under the Token, as a
// token reset would: at most one call may fail, with ErrTokenUnavailable,
// and the Token must then work again without a restart. Not parallel: it
// disturbs every Token of the process.
func TestRecoverAfterSessionLoss(t *testing.T) {
	ctx := t.Context()
	tok := hsmtest.Token(t)
	w, _, err := tok.Generate(ctx, 256)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	req := hsm.CipherRequest{Key: hsm.Key{ID: "recover", Kind: hsm.KindAES, Wrapped: w}, Mode: hsm.ModeGCM, Data: []byte("x")}
	if _, err := tok.Encrypt(ctx, req); err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if tok.CachedHandles() == 0 {
		t.Fatalf("no cached handle after Encrypt")
	}
	// Open every pooled session, so the loss hits live handles.
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() { tok.Encrypt(ctx, req) })
	}
	wg.Wait()
	if err := tok.DropSessions(); err != nil {
		t.Fatalf("DropSessions: %v", err)
	}
	failures := 0
	for i := range 20 {
		_, err := tok.Encrypt(ctx, req)
		if err == nil {
			continue
		}
		failures++
		if !errors.Is(err, hsm.ErrTokenUnavailable) || failures > 1 || i > 0 {
			t.Fatalf("Encrypt %d after session loss: %v (failure %d); want at most the first to fail with ErrTokenUnavailable", i, err, failures)
		}
		t.Logf("first Encrypt after session loss: %v", err)
	}
	if err := tok.Ping(ctx); err != nil {
		t.Fatalf("Ping after recovery: %v", err)
	}
	if _, _, err := tok.Generate(ctx, 128); err != nil {
		t.Fatalf("Generate after recovery: %v", err)
	}
}

func TestInitKeysIdempotent(t *testing.T) {
	t.Parallel()
	tok := hsmtest.Open(t)
	for _, so := range [][]byte{nil, []byte("not used")} {
		if err := tok.InitKeys(t.Context(), so); err != nil {
			t.Fatalf("InitKeys: %v", err)
		}
	}
	if err := tok.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	hsmtest.Token(t) // the module is loaded and the test token exists
	pin := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pin, []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	module := "/usr/lib/softhsm/libsofthsm2.so"
	for _, tc := range []struct {
		name string
		cfg  hsm.Config
		want error
	}{
		{"no module", hsm.Config{TokenLabel: "x", PIN: hsm.PINSource{File: pin}}, hsm.ErrInvalidInput},
		{"two PIN sources", hsm.Config{Module: module, TokenLabel: "x", PIN: hsm.PINSource{File: pin, Env: "X"}}, hsm.ErrInvalidInput},
		{"long label", hsm.Config{Module: module, TokenLabel: strings.Repeat("x", 33), PIN: hsm.PINSource{File: pin}}, hsm.ErrInvalidInput},
		{"missing module", hsm.Config{Module: "/nonexistent/lib.so", TokenLabel: "x", PIN: hsm.PINSource{File: pin}}, hsm.ErrTokenUnavailable},
		{"unknown label", hsm.Config{Module: module, TokenLabel: "no-such-token", PIN: hsm.PINSource{File: pin}}, hsm.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := hsm.Open(t.Context(), tc.cfg)
			if err == nil {
				tok.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("Open: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRawRate(t *testing.T) {
	t.Parallel()
	tok := hsmtest.Open(t)
	for _, op := range []string{hsm.RawEncrypt64, hsm.RawExport, hsm.RawGenerate, hsm.RawUnwrapEncrypt64} {
		rate, err := tok.RawRate(t.Context(), op, 2, 50*time.Millisecond)
		if err != nil || rate <= 0 {
			t.Errorf("RawRate(%s) = %.0f, %v", op, rate, err)
		}
	}
	if _, err := tok.RawRate(t.Context(), "nope", 1, time.Millisecond); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("RawRate of an unknown op: %v, want ErrInvalidInput", err)
	}
}

func TestPINSource(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("HSMKMS_TEST_PIN", "envpin\n")
	t.Setenv("HSMKMS_TEST_EMPTY", "")
	for _, tc := range []struct {
		name    string
		src     hsm.PINSource
		want    string
		wantErr string // substring the error must name
	}{
		{"file with LF", hsm.PINSource{File: write("lf", "s3cret\n")}, "s3cret", ""},
		{"file with CRLF", hsm.PINSource{File: write("crlf", "s3cret\r\n")}, "s3cret", ""},
		{"file without newline", hsm.PINSource{File: write("plain", "s3cret")}, "s3cret", ""},
		{"env", hsm.PINSource{Env: "HSMKMS_TEST_PIN"}, "envpin", ""},
		{"missing file", hsm.PINSource{File: filepath.Join(dir, "nope")}, "", "nope"},
		{"empty file", hsm.PINSource{File: write("empty", "\n")}, "", "empty"},
		{"unset env", hsm.PINSource{Env: "HSMKMS_TEST_UNSET"}, "", "HSMKMS_TEST_UNSET"},
		{"empty env", hsm.PINSource{Env: "HSMKMS_TEST_EMPTY"}, "", "HSMKMS_TEST_EMPTY"},
		{"both", hsm.PINSource{File: "f", Env: "e"}, "", "both"},
		{"neither", hsm.PINSource{}, "", "neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.src.Read()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Read error = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("Read = %q, %v; want %q", got, err, tc.want)
			}
			if s := tc.src.String(); strings.Contains(s, tc.want) {
				t.Errorf("String() = %q reveals the PIN", s)
			}
		})
	}
}
