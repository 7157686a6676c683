package hsm_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/hsmkms/hsmkms/hsm/hsmtest"
)

func TestAuditMAC(t *testing.T) {
	t.Parallel()
	tok := hsmtest.Open(t)
	ctx := t.Context()
	mac := func(prev, rec string) []byte {
		t.Helper()
		m, err := tok.AuditMAC(ctx, []byte(prev), []byte(rec))
		if err != nil {
			t.Fatalf("AuditMAC: %v", err)
		}
		return m
	}
	first := mac("prev", "record")
	if len(first) != 32 {
		t.Fatalf("AuditMAC returned %d bytes, want 32 (HMAC-SHA256)", len(first))
	}
	for _, tc := range []struct {
		name      string
		prev, rec string
		wantEqual bool
	}{
		{"same input", "prev", "record", true},
		{"over the concatenation", "prevrec", "ord", true},
		{"other record", "prev", "recorD", false},
		{"other prev", "Prev", "record", false},
		{"empty", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mac(tc.prev, tc.rec); bytes.Equal(got, first) != tc.wantEqual {
				t.Errorf("MAC(%q, %q) equal to MAC(prev, record) = %v, want %v", tc.prev, tc.rec, !tc.wantEqual, tc.wantEqual)
			}
		})
	}

	// Ensuring again keeps the key: the MACs do not change.
	if err := tok.EnsureAuditKey(ctx); err != nil {
		t.Fatalf("EnsureAuditKey: %v", err)
	}
	if again := mac("prev", "record"); !bytes.Equal(again, first) {
		t.Error("EnsureAuditKey replaced an existing audit key")
	}
	// A second Token on the same token computes the same MACs (audit verify
	// runs in another process than serve).
	m, err := hsmtest.Open(t).AuditMAC(ctx, []byte("prev"), []byte("record"))
	if err != nil || !bytes.Equal(m, first) {
		t.Errorf("second Token: MAC %x, %v; want %x", m, err, first)
	}
}

func TestAuditKeyNeverLeaves(t *testing.T) {
	t.Parallel()
	tok := hsmtest.Open(t)
	if _, err := tok.AuditMAC(t.Context(), nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, sessionCopy := range []bool{false, true} {
		flags, valueErr, err := tok.AuditKeyAttrs(t.Context(), sessionCopy)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{"sensitive": true, "extractable": false, "sign": true, "encrypt": false, "token": !sessionCopy}
		for k, v := range want {
			if flags[k] != v {
				t.Errorf("audit key (session copy %v): %s = %v, want %v", sessionCopy, k, flags[k], v)
			}
		}
		if !errors.Is(valueErr, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
			t.Errorf("reading the audit key's value (session copy %v): %v, want CKR_ATTRIBUTE_SENSITIVE", sessionCopy, valueErr)
		}
	}
}

func TestAuditMACConcurrent(t *testing.T) {
	t.Parallel()
	tok := hsmtest.Open(t)
	want, err := tok.AuditMAC(t.Context(), make([]byte, 32), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				got, err := tok.AuditMAC(t.Context(), make([]byte, 32), []byte("x"))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("concurrent AuditMAC: %x, %v", got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestAuditMACAfterSessionLoss: the session copy dies with the sessions; at
// most one MAC fails and the next ones equal those before. Not parallel: it
// disturbs every Token of the process.
func TestAuditMACAfterSessionLoss(t *testing.T) {
	tok := hsmtest.Token(t)
	want, err := tok.AuditMAC(t.Context(), nil, []byte("before"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.DropSessions(); err != nil {
		t.Fatalf("DropSessions: %v", err)
	}
	failures := 0
	for i := range 5 {
		got, err := tok.AuditMAC(t.Context(), nil, []byte("before"))
		if err != nil {
			if failures++; failures > 1 || i > 0 {
				t.Fatalf("AuditMAC %d after session loss: %v (failure %d)", i, err, failures)
			}
			continue
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("AuditMAC %d after session loss computed another MAC", i)
		}
	}
}
