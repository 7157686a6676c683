// Package hsmtest provides a real SoftHSM2 token for tests and Exercise, the
// behavioural contract every hsm.Token (SoftHSM2 or a vendor HSM) must meet.
//
// SoftHSM2 reads SOFTHSM2_CONF once per process at C_Initialize, so the
// package provisions one token per test process and shares it: Token hands
// out the shared *hsm.Token, Open a private *hsm.Token on the same SoftHSM2
// token that the test may close. The shared token is closed and its
// directory removed when the last test using it finishes; a later test
// provisions a fresh one.
//
// When libsofthsm2.so is missing, tests skip, unless HSMKMS_REQUIRE_SOFTHSM=1
// (set in CI), in which case they fail.
//
// Usage:
//
//	func TestContract(t *testing.T) { hsmtest.Exercise(t, hsmtest.Open(t)) } // Exercise closes it
//	tok := hsmtest.Token(t)                                                 // shared: do not close
package hsmtest
