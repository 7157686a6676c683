package shamir

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func TestMulInv(t *testing.T) {
	t.Parallel()
	// 0x53 * 0xCA = 1 in the AES field (FIPS 197, 4.2).
	if got := mul(0x53, 0xca); got != 1 {
		t.Fatalf("mul(0x53, 0xca) = %#x, want 1", got)
	}
	if got := mul(0x57, 0x83); got != 0xc1 {
		t.Fatalf("mul(0x57, 0x83) = %#x, want 0xc1", got)
	}
	for a := 1; a < 256; a++ {
		if got := mul(byte(a), inv(byte(a))); got != 1 {
			t.Fatalf("a * inv(a) = %#x for a = %#x", got, a)
		}
	}
}

func TestSplitCombine(t *testing.T) {
	t.Parallel()
	secret := make([]byte, 64)
	rand.Read(secret)
	for _, tc := range []struct {
		name string
		n, k int
		use  []int // indexes of the shares combined
		ok   bool
	}{
		{"3 of 5, first three", 5, 3, []int{0, 1, 2}, true},
		{"3 of 5, last three", 5, 3, []int{4, 3, 2}, true},
		{"3 of 5, all five", 5, 3, []int{0, 1, 2, 3, 4}, true},
		{"3 of 5, two", 5, 3, []int{0, 4}, false},
		{"2 of 2", 2, 2, []int{1, 0}, true},
		{"5 of 5, four", 5, 5, []int{0, 1, 2, 3}, false},
		{"255 shares", 255, 7, []int{0, 50, 100, 150, 200, 250, 254}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shares, err := Split(secret, tc.n, tc.k, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if len(shares) != tc.n {
				t.Fatalf("%d shares, want %d", len(shares), tc.n)
			}
			var use []Share
			for _, i := range tc.use {
				use = append(use, shares[i])
			}
			got, err := Combine(use)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(got, secret) != tc.ok {
				t.Fatalf("combined == secret is %v, want %v", !tc.ok, tc.ok)
			}
		})
	}
}

func TestInvalid(t *testing.T) {
	t.Parallel()
	s := []byte("secret")
	shares, err := Split(s, 3, 2, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    func() error
	}{
		{"threshold 1", func() error { _, err := Split(s, 3, 1, rand.Reader); return err }},
		{"threshold above n", func() error { _, err := Split(s, 3, 4, rand.Reader); return err }},
		{"256 shares", func() error { _, err := Split(s, 256, 2, rand.Reader); return err }},
		{"empty secret", func() error { _, err := Split(nil, 3, 2, rand.Reader); return err }},
		{"one share", func() error { _, err := Combine(shares[:1]); return err }},
		{"repeated share", func() error { _, err := Combine([]Share{shares[0], shares[0]}); return err }},
		{"zero X", func() error { _, err := Combine([]Share{{X: 0, Y: shares[0].Y}, shares[1]}); return err }},
		{"length mismatch", func() error { _, err := Combine([]Share{shares[0], {X: 2, Y: []byte("x")}}); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.f(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

// TestThresholdHides checks the defining property on one byte: with k-1
// shares fixed, every secret value is equally consistent, so k-1 shares
// reveal nothing.
func TestThresholdHides(t *testing.T) {
	t.Parallel()
	shares, err := Split([]byte{0x42}, 3, 2, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[byte]bool{}
	for y := range 256 {
		got, err := Combine([]Share{shares[0], {X: 2, Y: []byte{byte(y)}}})
		if err != nil {
			t.Fatal(err)
		}
		seen[got[0]] = true
	}
	if len(seen) != 256 {
		t.Fatalf("one share plus a guessed second yields %d secrets, want all 256", len(seen))
	}
}
