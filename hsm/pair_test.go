package hsm_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/hsm/hsmtest"
)

// pairTokens numbers the extra tokens the pairing tests initialise; initMu
// serialises their initialisation, because SoftHSM2 offers one free slot at
// a time.
var (
	pairTokens atomic.Int64
	initMu     sync.Mutex
)

// newApplianceToken initialises a fresh token with its master key next to
// the shared test token (SoftHSM2 reads one configuration per process, so
// every token of the process lives in the shared token directory). It
// returns the open Token, closed at the end of the test, and its Config for
// opening it again.
func newApplianceToken(t *testing.T) (*hsm.Token, hsm.Config) {
	t.Helper()
	cfg := hsmtest.Config(t) // module, user PIN file and SOFTHSM2_CONF of the shared token
	cfg.TokenLabel = fmt.Sprintf("appliance-%d", pairTokens.Add(1))
	so := make([]byte, 16)
	rand.Read(so)
	initMu.Lock()
	err := hsm.InitToken(t.Context(), cfg, []byte(hex.EncodeToString(so)))
	initMu.Unlock()
	if err != nil {
		t.Fatalf("init token %s: %v", cfg.TokenLabel, err)
	}
	tok := openToken(t, cfg)
	if err := tok.InitKeys(t.Context(), nil); err != nil {
		t.Fatalf("init keys of %s: %v", cfg.TokenLabel, err)
	}
	return tok, cfg
}

// openToken opens another Token on cfg's token, closed at the end of the test.
func openToken(t *testing.T, cfg hsm.Config) *hsm.Token {
	t.Helper()
	tok, err := hsm.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("open token %s: %v", cfg.TokenLabel, err)
	}
	t.Cleanup(func() { tok.Close() })
	return tok
}

// pairingContext is what the mirror layer is expected to pass: both
// appliance IDs and both public keys, in an order both sides agree on.
func pairingContext(idA, idB string, pubA, pubB []byte) []byte {
	parts := [][]byte{[]byte(idA), []byte(idB), pubA, pubB}
	slices.SortFunc(parts, bytes.Compare)
	return bytes.Join(parts, []byte{0})
}

// identity returns tok's mirror identity, checking its shape.
func identity(t *testing.T, tok *hsm.Token) []byte {
	t.Helper()
	pub, err := tok.MirrorIdentity(t.Context())
	if err != nil {
		t.Fatalf("MirrorIdentity: %v", err)
	}
	if len(pub) != 65 || pub[0] != 0x04 {
		t.Fatalf("MirrorIdentity = %d bytes starting %#x, want a 65-byte uncompressed point", len(pub), pub[:1])
	}
	return pub
}

// TestMirrorPairing pairs two appliances' tokens and moves keys between
// them through the pair KEK, in both directions.
func TestMirrorPairing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, _ := newApplianceToken(t)
	b, cfgB := newApplianceToken(t)
	pubA, pubB := identity(t, a), identity(t, b)
	if bytes.Equal(pubA, pubB) {
		t.Fatalf("two tokens have the same identity")
	}
	if again := identity(t, a); !bytes.Equal(again, pubA) {
		t.Fatalf("MirrorIdentity changed on the second call")
	}
	const labelInA, labelInB = hsm.PairKEKPrefix + "appliance-b", hsm.PairKEKPrefix + "appliance-a"
	pairing := pairingContext("appliance-a", "appliance-b", pubA, pubB)
	checkA, err := a.DerivePairKEK(ctx, labelInA, pubB, pairing)
	if err != nil {
		t.Fatalf("DerivePairKEK in A: %v", err)
	}
	checkB, err := b.DerivePairKEK(ctx, labelInB, pubA, pairing)
	if err != nil {
		t.Fatalf("DerivePairKEK in B: %v", err)
	}
	if len(checkA) != 8 || !bytes.Equal(checkA, checkB) {
		t.Fatalf("check values %x and %x; want equal 8-byte values", checkA, checkB)
	}
	if n, err := b.SessionObjects(); err != nil || n != 0 {
		t.Errorf("session objects left after DerivePairKEK: %d, %v", n, err)
	}

	// send moves a key generated in from to to through the pair KEK and
	// checks that both tokens digest the same value.
	send := func(t *testing.T, from, to *hsm.Token, fromLabel, toLabel string) {
		t.Helper()
		w, digest, err := from.Generate(ctx, 256)
		if err != nil {
			t.Fatal(err)
		}
		onWire, err := from.Rewrap(ctx, w, hsm.KindAES, fromLabel)
		if err != nil || onWire.KEK != fromLabel {
			t.Fatalf("Rewrap to the pair KEK = %v, %v", onWire, err)
		}
		// The receiver names the blob by its own label for the pair.
		onWire.KEK = toLabel
		got, err := to.Rewrap(ctx, onWire, hsm.KindAES, hsm.MasterLabel)
		if err != nil {
			t.Fatalf("Rewrap from the pair KEK: %v", err)
		}
		sum, err := to.Digest(ctx, hsm.Key{ID: "received", Kind: hsm.KindAES, Wrapped: got})
		if err != nil || !bytes.Equal(sum, digest) {
			t.Fatalf("Digest in the receiver = %x, %v; want the sender's %x", sum, err, digest)
		}
		if _, err := to.Digest(ctx, hsm.Key{ID: "foreign", Kind: hsm.KindAES, Wrapped: w}); !errors.Is(err, hsm.ErrBadCiphertext) {
			t.Fatalf("the receiver unwrapped the sender's master blob: %v", err)
		}
	}
	t.Run("A to B", func(t *testing.T) { send(t, a, b, labelInA, labelInB) })
	t.Run("B to A", func(t *testing.T) { send(t, b, a, labelInB, labelInA) })

	t.Run("key templates", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			class uint
			label string
			want  map[uint]bool
		}{
			{"pair KEK", pkcs11.CKO_SECRET_KEY, labelInA, map[uint]bool{
				pkcs11.CKA_TOKEN: true, pkcs11.CKA_PRIVATE: true, pkcs11.CKA_SENSITIVE: true,
				pkcs11.CKA_EXTRACTABLE: false, pkcs11.CKA_WRAP: true, pkcs11.CKA_UNWRAP: true,
				pkcs11.CKA_ENCRYPT: false, pkcs11.CKA_DECRYPT: false, pkcs11.CKA_DERIVE: false,
			}},
			{"identity private key", pkcs11.CKO_PRIVATE_KEY, hsm.MirrorIdentityLabel, map[uint]bool{
				pkcs11.CKA_TOKEN: true, pkcs11.CKA_PRIVATE: true, pkcs11.CKA_SENSITIVE: true,
				pkcs11.CKA_EXTRACTABLE: false, pkcs11.CKA_DERIVE: true, pkcs11.CKA_SIGN: false,
				pkcs11.CKA_DECRYPT: false, pkcs11.CKA_UNWRAP: false,
			}},
			{"identity public key", pkcs11.CKO_PUBLIC_KEY, hsm.MirrorIdentityLabel, map[uint]bool{
				pkcs11.CKA_TOKEN: true, pkcs11.CKA_PRIVATE: false,
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				types := make([]uint, 0, len(tc.want))
				for ty := range tc.want {
					types = append(types, ty)
				}
				got, err := a.KeyAttrs(tc.class, tc.label, types...)
				if err != nil {
					t.Fatal(err)
				}
				for ty, want := range tc.want {
					if got[ty] != want {
						t.Errorf("attribute %#x = %v, want %v", ty, got[ty], want)
					}
				}
			})
		}
	})

	t.Run("context binds the KEK", func(t *testing.T) {
		other, err := b.DerivePairKEK(ctx, labelInB, pubA, append(bytes.Clone(pairing), 'x'))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(other, checkA) {
			t.Fatalf("another context gives the same check value")
		}
		// B replaced its KEK under the same label: the cached handle must
		// not serve the old one, so A's blobs no longer open in B.
		w, _, err := a.Generate(ctx, 128)
		if err != nil {
			t.Fatal(err)
		}
		onWire, err := a.Rewrap(ctx, w, hsm.KindAES, labelInA)
		if err != nil {
			t.Fatal(err)
		}
		onWire.KEK = labelInB
		if _, err := b.Rewrap(ctx, onWire, hsm.KindAES, hsm.MasterLabel); !errors.Is(err, hsm.ErrBadCiphertext) {
			t.Fatalf("Rewrap under a KEK from another context: %v, want ErrBadCiphertext", err)
		}
		again, err := b.DerivePairKEK(ctx, labelInB, pubA, pairing)
		if err != nil || !bytes.Equal(again, checkA) {
			t.Fatalf("deriving with the agreed context again = %x, %v; want %x", again, err, checkA)
		}
		if _, err := b.Rewrap(ctx, onWire, hsm.KindAES, hsm.MasterLabel); err != nil {
			t.Fatalf("Rewrap after deriving the agreed KEK again: %v", err)
		}
	})

	t.Run("identity and KEK survive reopening", func(t *testing.T) {
		b2 := openToken(t, cfgB)
		if got := identity(t, b2); !bytes.Equal(got, pubB) {
			t.Fatalf("identity after reopening differs")
		}
		send(t, a, b2, labelInA, labelInB)
	})

	t.Run("another Token replaces the KEK", func(t *testing.T) {
		// b2 caches B's KEK handle; b then replaces the key. b2 may fail once
		// (ErrTokenUnavailable: the handle is gone) and must then find the new key.
		b2 := openToken(t, cfgB)
		send(t, a, b2, labelInA, labelInB)
		if _, err := b.DerivePairKEK(ctx, labelInB, pubA, pairing); err != nil {
			t.Fatal(err)
		}
		w, _, err := a.Generate(ctx, 256)
		if err != nil {
			t.Fatal(err)
		}
		onWire, err := a.Rewrap(ctx, w, hsm.KindAES, labelInA)
		if err != nil {
			t.Fatal(err)
		}
		onWire.KEK = labelInB
		if _, err := b2.Rewrap(ctx, onWire, hsm.KindAES, hsm.MasterLabel); err != nil && !errors.Is(err, hsm.ErrTokenUnavailable) {
			t.Fatalf("first Rewrap with a replaced KEK: %v, want success or ErrTokenUnavailable", err)
		}
		if _, err := b2.Rewrap(ctx, onWire, hsm.KindAES, hsm.MasterLabel); err != nil {
			t.Fatalf("second Rewrap with a replaced KEK: %v", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		w, _, err := a.Generate(ctx, 128)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Rewrap(ctx, w, hsm.KindAES, labelInA); err != nil {
			t.Fatal(err)
		}
		for range 2 { // deleting an absent key is not an error
			if err := a.DeletePairKEK(ctx, labelInA); err != nil {
				t.Fatalf("DeletePairKEK: %v", err)
			}
		}
		if _, err := a.Rewrap(ctx, w, hsm.KindAES, labelInA); !errors.Is(err, hsm.ErrNotFound) {
			t.Fatalf("Rewrap to a deleted pair KEK: %v, want ErrNotFound", err)
		}
		if _, err := a.Rewrap(ctx, w, hsm.KindAES, hsm.MasterLabel); err != nil {
			t.Fatalf("the master stopped working after DeletePairKEK: %v", err)
		}
	})
}

func TestDerivePairKEKRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tok, _ := newApplianceToken(t)
	peer, _ := newApplianceToken(t)
	pub := identity(t, peer)
	identity(t, tok)
	offCurve := bytes.Clone(pub)
	offCurve[64] ^= 1
	infinity := append([]byte{0x04}, make([]byte, 64)...)
	compressed := append([]byte{0x02 | pub[64]&1}, pub[1:33]...)
	const label = hsm.PairKEKPrefix + "peer"
	for _, tc := range []struct {
		name    string
		label   string
		pub     []byte
		context []byte
	}{
		{"master label", hsm.MasterLabel, pub, []byte("c")},
		{"backup label", hsm.BackupKEKPrefix + "1", pub, []byte("c")},
		{"bare prefix", hsm.PairKEKPrefix, pub, []byte("c")},
		{"point off the curve", label, offCurve, []byte("c")},
		{"point at infinity", label, infinity, []byte("c")},
		{"compressed point", label, compressed, []byte("c")},
		{"no point", label, nil, []byte("c")},
		{"empty context", label, pub, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tok.DerivePairKEK(ctx, tc.label, tc.pub, tc.context); !errors.Is(err, hsm.ErrInvalidInput) {
				t.Fatalf("DerivePairKEK: %v, want ErrInvalidInput", err)
			}
		})
	}
	for _, l := range []string{hsm.MasterLabel, hsm.PairKEKPrefix, "hsmkms-pair"} {
		if err := tok.DeletePairKEK(ctx, l); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("DeletePairKEK(%q): %v, want ErrInvalidInput", l, err)
		}
	}
	if _, _, err := tok.Generate(ctx, 256); err != nil {
		t.Fatalf("the master stopped working after the refusals: %v", err)
	}

	// A token without an identity cannot derive.
	bare, _ := newApplianceToken(t)
	if _, err := bare.DerivePairKEK(ctx, label, pub, []byte("c")); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("DerivePairKEK without an identity: %v, want ErrNotFound", err)
	}
}

// childEnv carries the Config of the token that TestMirrorIdentityProcesses'
// child processes open (paths only: the PIN stays in its file).
const childEnv = "HSMKMS_TEST_IDENTITY_CHILD"

// TestMirrorIdentityProcesses creates the identity from several processes at
// once: all must get the same, single key pair. Not parallel: SoftHSM2 2.6.1
// fails C_GetTokenInfo now and then while another process writes a token,
// which would break other tests' Open.
func TestMirrorIdentityProcesses(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("in a child process")
	}
	tok, cfg := newApplianceToken(t)
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const children = 4
	outs := make([][]byte, children)
	errs := make([]error, children)
	var wg sync.WaitGroup
	for i := range children {
		wg.Go(func() {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestMirrorIdentityChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), childEnv+"="+string(js))
			outs[i], errs[i] = cmd.CombinedOutput()
		})
	}
	wg.Wait()
	want := hex.EncodeToString(identity(t, tok))
	for i := range children {
		if errs[i] != nil || !bytes.Contains(outs[i], []byte("identity="+want)) {
			t.Errorf("child %d: %v, want identity %s; output:\n%s", i, errs[i], want, outs[i])
		}
	}
	for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
		if _, err := tok.KeyAttrs(class, hsm.MirrorIdentityLabel, pkcs11.CKA_TOKEN); err != nil {
			t.Errorf("identity objects of class %d: %v (want exactly one)", class, err)
		}
	}
}

// TestMirrorIdentityChild is TestMirrorIdentityProcesses' child.
func TestMirrorIdentityChild(t *testing.T) {
	js := os.Getenv(childEnv)
	if js == "" {
		t.Skip("only run by TestMirrorIdentityProcesses")
	}
	var cfg hsm.Config
	if err := json.Unmarshal([]byte(js), &cfg); err != nil {
		t.Fatal(err)
	}
	// SoftHSM2 2.6.1 may fail C_Initialize or C_Login while other processes
	// write the token (it reads half-written files): try again until a deadline.
	var (
		tok *hsm.Token
		err error
	)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if tok, err = hsm.Open(t.Context(), cfg); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("open token %s: %v", cfg.TokenLabel, err)
	}
	defer tok.Close()
	fmt.Printf("identity=%x\n", identity(t, tok))
}

// TestMirrorIdentityConcurrent creates the identity from many goroutines on
// one Token: everyone must get the same, single key pair. (Two Tokens in one
// process share one SoftHSM2 instance, whose concurrent writes of token
// objects misbehave, SoftHSMv2 issue 573; separate processes, the real case,
// are TestMirrorIdentityProcesses.)
func TestMirrorIdentityConcurrent(t *testing.T) {
	t.Parallel()
	tok, _ := newApplianceToken(t)
	var wg sync.WaitGroup
	got := make([][]byte, 8)
	errs := make([]error, len(got))
	for i := range got {
		wg.Go(func() { got[i], errs[i] = tok.MirrorIdentity(t.Context()) })
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || !bytes.Equal(got[i], got[0]) {
			t.Fatalf("MirrorIdentity %d = %x, %v; want %x", i, got[i], errs[i], got[0])
		}
	}
	for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
		if _, err := tok.KeyAttrs(class, hsm.MirrorIdentityLabel, pkcs11.CKA_TOKEN); err != nil {
			t.Errorf("identity objects of class %d: %v (want exactly one)", class, err)
		}
	}
}
