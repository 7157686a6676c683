package mirror

import "errors"

// Sentinels returned (wrapped) by the package; match them with errors.Is.
var (
	// ErrNotAcknowledged means write_ack peers did not apply a change in time.
	ErrNotAcknowledged = errors.New("mirror: not acknowledged by enough peers")
	// ErrRefused means the other appliance refused the connection or the
	// pairing (unpaired certificate, wrong invitation, key mismatch).
	ErrRefused = errors.New("mirror: refused")
)
