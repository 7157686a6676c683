package ops

import (
	"time"

	"github.com/hsmkms/hsmkms/meta"
)

// Summary is an operator's view of an object: metadata only, never key material.
type Summary struct {
	ID           string
	Type         string // e.g. "SymmetricKey"
	State        string // e.g. "Active"
	Names        []string
	Algorithm    string // "" when none
	Length       int32
	Owner        string
	Created      time.Time
	Activation   time.Time // zero when unset
	Deactivation time.Time
	Destroyed    time.Time
	Attributes   []string // "Name: value" lines for every other attribute, human readable
}

// Describe summarises o for `hsmkms keys list|show`.
func Describe(o *meta.Object) Summary {
	panic("TODO(lead): implemented with the operations")
}
