package hsmtest

import (
	"testing"

	"github.com/hsmkms/hsmkms/hsm"
)

// Config returns the configuration of the shared token (provisioning it if needed),
// for tests of functions that take an hsm.Config, such as hsm.Probe.
func Config(t testing.TB) hsm.Config {
	t.Helper()
	_, cfg := acquire(t)
	return cfg
}
