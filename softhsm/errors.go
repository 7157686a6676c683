package softhsm

import "errors"

var (
	// ErrExists means Provision found a configuration already in the directory;
	// re-provisioning would orphan the token (and its keys) behind new PINs.
	ErrExists = errors.New("softhsm: token directory already provisioned")
	// ErrNotFound means Load found no provisioned token in the directory.
	ErrNotFound = errors.New("softhsm: token directory not provisioned")
	// ErrModuleNotFound means no libsofthsm2.so was found in the usual places.
	ErrModuleNotFound = errors.New("softhsm: libsofthsm2.so not found (install it with `apt-get install softhsm2`)")
)
