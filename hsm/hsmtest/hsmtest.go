package hsmtest

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/softhsm"
)

// Label is the token label of the shared test token.
const Label = "hsmkms-test"

// shared is the process's one provisioned token; refs counts tests using it.
var shared struct {
	mu   sync.Mutex
	refs int
	dir  string
	cfg  hsm.Config
	tok  *hsm.Token
}

// Token returns the process's shared token, provisioned on first use with a
// master key. Tests must not close it; use Open for a token to close.
func Token(t testing.TB) *hsm.Token {
	t.Helper()
	tok, _ := acquire(t)
	return tok
}

// Open returns a new *hsm.Token on the shared SoftHSM2 token, closed at the
// end of the test (closing it earlier is fine).
func Open(t testing.TB) *hsm.Token {
	t.Helper()
	_, cfg := acquire(t)
	tok, err := hsm.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("open test token: %v", err)
	}
	t.Cleanup(func() {
		if err := tok.Close(); err != nil {
			t.Errorf("close test token: %v", err)
		}
	})
	return tok
}

// acquire provisions the shared token if needed and holds a reference on it
// until t ends.
func acquire(t testing.TB) (*hsm.Token, hsm.Config) {
	t.Helper()
	if _, err := softhsm.FindModule(); err != nil {
		if os.Getenv("HSMKMS_REQUIRE_SOFTHSM") == "1" {
			t.Fatalf("SoftHSM2 required (HSMKMS_REQUIRE_SOFTHSM=1): %v", err)
		}
		t.Skipf("SoftHSM2 not installed: %v", err)
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.tok == nil {
		if err := provision(); err != nil {
			t.Fatalf("provision test token: %v", err)
		}
	}
	shared.refs++
	t.Cleanup(release)
	return shared.tok, shared.cfg
}

// provision makes a fresh token in a temporary directory; shared.mu is held.
// The directory outlives the test that triggered it, so it is not t.TempDir.
func provision() (err error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "hsmkms-softhsm-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	p, err := softhsm.Provision(ctx, dir, Label)
	if err != nil {
		return err
	}
	cfg := hsm.Config{
		Module:     p.Module,
		TokenLabel: p.Label,
		PIN:        hsm.PINSource{File: p.PINFile},
		SetEnv:     p.Env(),
	}
	so, err := hsm.PINSource{File: p.SOPINFile}.Read()
	if err != nil {
		return err
	}
	if err := hsm.InitToken(ctx, cfg, so); err != nil {
		return err
	}
	tok, err := hsm.Open(ctx, cfg)
	if err != nil {
		return err
	}
	if err := tok.InitKeys(ctx, so); err != nil {
		tok.Close()
		return err
	}
	shared.dir, shared.cfg, shared.tok = dir, cfg, tok
	return nil
}

func release() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.refs--
	if shared.refs > 0 {
		return
	}
	shared.tok.Close()
	os.RemoveAll(shared.dir)
	shared.tok, shared.dir, shared.cfg = nil, "", hsm.Config{}
}
