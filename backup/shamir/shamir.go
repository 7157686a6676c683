package shamir

import (
	"errors"
	"fmt"
	"io"
)

// Sentinels.
var (
	// ErrInvalid means bad parameters: threshold, share count, lengths or
	// coordinates.
	ErrInvalid = errors.New("shamir: invalid input")
)

// Share is one point of every byte's polynomial: X is the coordinate (1 to
// 255), Y[i] the value of byte i's polynomial at X.
type Share struct {
	X byte
	Y []byte
}

// Split returns n shares of secret, any k of which rebuild it (2 <= k <= n
// <= 255). Coefficients are read from random, which must be a CSPRNG.
func Split(secret []byte, n, k int, random io.Reader) ([]Share, error) {
	if len(secret) == 0 {
		return nil, fmt.Errorf("split empty secret: %w", ErrInvalid)
	}
	if k < 2 || k > n || n > 255 {
		return nil, fmt.Errorf("split into %d shares with threshold %d (want 2 <= threshold <= shares <= 255): %w", n, k, ErrInvalid)
	}
	// coef[j][i] is the coefficient of x^(j+1) in byte i's polynomial.
	coef := make([][]byte, k-1)
	for j := range coef {
		coef[j] = make([]byte, len(secret))
		if _, err := io.ReadFull(random, coef[j]); err != nil {
			return nil, fmt.Errorf("split secret: read randomness: %w", err)
		}
	}
	defer func() {
		for _, c := range coef {
			clear(c)
		}
	}()
	shares := make([]Share, n)
	for s := range shares {
		x := byte(s + 1)
		y := make([]byte, len(secret))
		for i := range secret {
			// Horner: ((c[k-2] x + c[k-3]) x + ... + c[0]) x + secret.
			var acc byte
			for j := k - 2; j >= 0; j-- {
				acc = mul(acc^coef[j][i], x)
			}
			y[i] = acc ^ secret[i]
		}
		shares[s] = Share{X: x, Y: y}
	}
	return shares, nil
}

// Combine rebuilds the secret from shares by Lagrange interpolation at 0.
// Give at least the threshold: fewer yield a wrong value, not an error.
func Combine(shares []Share) ([]byte, error) {
	if len(shares) < 2 {
		return nil, fmt.Errorf("combine %d shares (want at least 2): %w", len(shares), ErrInvalid)
	}
	size := len(shares[0].Y)
	seen := make(map[byte]bool, len(shares))
	for _, s := range shares {
		if s.X == 0 || seen[s.X] {
			return nil, fmt.Errorf("combine shares: coordinate %d is zero or repeated: %w", s.X, ErrInvalid)
		}
		if len(s.Y) != size || size == 0 {
			return nil, fmt.Errorf("combine shares: lengths differ or are zero: %w", ErrInvalid)
		}
		seen[s.X] = true
	}
	secret := make([]byte, size)
	for a, sa := range shares {
		// Lagrange basis at 0: prod over b != a of x_b / (x_b - x_a); minus
		// is xor in GF(2^8).
		l := byte(1)
		for b, sb := range shares {
			if a != b {
				l = mul(l, div(sb.X, sb.X^sa.X))
			}
		}
		for i := range secret {
			secret[i] ^= mul(l, sa.Y[i])
		}
	}
	return secret, nil
}

// mul multiplies in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1 (AES), without
// branches on the values.
func mul(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= a & -(b & 1)
		hi := -(a >> 7)
		a = a<<1 ^ 0x1b&hi
		b >>= 1
	}
	return p
}

// inv returns a^254 = a^-1 (0 for 0).
func inv(a byte) byte {
	r := a
	for range 6 {
		r = mul(r, r)
		r = mul(r, a)
	}
	return mul(r, r)
}

// div returns a / b; b is never 0 here (distinct coordinates).
func div(a, b byte) byte { return mul(a, inv(b)) }
