package backup_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
	"github.com/hsmkms/hsmkms/softhsm"
)

// tokens hands every test its own SoftHSM2 token, all in one token directory
// (SoftHSM2 reads one configuration per process). The keeper token is opened
// first and closed last, because the first Token of a module finalizes it.
var tokens struct {
	mu     sync.Mutex
	dir    string
	p      *softhsm.Provisioned
	so     []byte
	keeper *hsm.Token
	n      int
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tokens.keeper != nil {
		tokens.keeper.Close()
	}
	if tokens.dir != "" {
		os.RemoveAll(tokens.dir)
	}
	os.Exit(code)
}

// newToken initialises a fresh token with its master and backup keys.
func newToken(t testing.TB) *hsm.Token {
	t.Helper()
	if _, err := softhsm.FindModule(); err != nil {
		if os.Getenv("HSMKMS_REQUIRE_SOFTHSM") == "1" {
			t.Fatalf("SoftHSM2 required (HSMKMS_REQUIRE_SOFTHSM=1): %v", err)
		}
		t.Skipf("SoftHSM2 not installed: %v", err)
	}
	tokens.mu.Lock()
	defer tokens.mu.Unlock()
	ctx := context.Background()
	if tokens.p == nil && tokens.err == nil {
		tokens.err = provision(ctx)
	}
	if tokens.err != nil {
		t.Fatalf("provision SoftHSM2: %v", tokens.err)
	}
	tokens.n++
	tok, err := initToken(ctx, fmt.Sprintf("backup-test-%d", tokens.n))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return tok
}

func provision(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "hsmkms-backup-test-")
	if err != nil {
		return err
	}
	tokens.dir = dir
	if tokens.p, err = softhsm.Provision(ctx, filepath.Join(dir, "softhsm"), "keeper"); err != nil {
		return err
	}
	if tokens.so, err = (hsm.PINSource{File: tokens.p.SOPINFile}).Read(); err != nil {
		return err
	}
	tokens.keeper, err = initToken(ctx, "keeper")
	return err
}

func initToken(ctx context.Context, label string) (*hsm.Token, error) {
	cfg := hsm.Config{Module: tokens.p.Module, TokenLabel: label,
		PIN: hsm.PINSource{File: tokens.p.PINFile}, SetEnv: tokens.p.Env()}
	if err := hsm.InitToken(ctx, cfg, tokens.so); err != nil {
		return nil, fmt.Errorf("init token %s: %w", label, err)
	}
	tok, err := hsm.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open token %s: %w", label, err)
	}
	if err := tok.InitKeys(ctx, nil); err != nil {
		tok.Close()
		return nil, fmt.Errorf("init keys of %s: %w", label, err)
	}
	return tok, nil
}

func newStore(t testing.TB) *meta.Store {
	t.Helper()
	st, err := meta.Open(t.Context(), filepath.Join(t.TempDir(), "hsmkms.db"), meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
