// Package shamir splits a secret into n shares of which any k rebuild it and
// k-1 reveal nothing (Shamir's secret sharing over GF(2^8), byte by byte).
// It is pure Go with no dependencies; the key ceremony of `hsmkms kek`
// uses it for the backup secret.
//
// Invariants:
//   - share X coordinates are 1..n, never 0 (X = 0 is the secret itself);
//   - field arithmetic takes the same time whatever the values, so timing
//     does not reveal share bytes;
//   - Combine needs k shares with distinct X and equal lengths; it cannot
//     tell a wrong share from a right one, so callers check the result
//     (hsmkms compares a fingerprint).
//
// Usage:
//
//	shares, err := shamir.Split(secret, 5, 3, rand.Reader)
//	secret, err := shamir.Combine(shares[1:4])
package shamir
