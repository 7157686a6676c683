//go:build e2e

// Package test holds the end-to-end suites that run the real hsmkms binary: the
// mongod and Percona byte-level clients, bad input, the OASIS vectors and the
// no-plaintext-at-rest check.
package test

import (
	"fmt"
	"os"
	"testing"

	"github.com/hsmkms/hsmkms/test/framework"
)

// hsmkmsBin is the binary under test, built once (or $HSMKMS_BIN).
var hsmkmsBin string

func TestMain(m *testing.M) {
	bin, cleanup, err := framework.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hsmkmsBin = bin
	code := m.Run()
	cleanup()
	os.Exit(code)
}
