package backup

import "errors"

// Sentinels; match them with errors.Is.
var (
	// ErrFormat means the file is not a complete, well-formed backup file:
	// wrong magic or version, a bad frame, bad JSON, wrong counts,
	// truncation or trailing bytes.
	ErrFormat = errors.New("backup: malformed backup file")
	// ErrSeal means the seal does not match the contents: the file was
	// changed after it was written (or changed during a restore).
	ErrSeal = errors.New("backup: seal mismatch")
	// ErrForeignKEK means the token does not hold the backup KEK the file
	// was made with.
	ErrForeignKEK = errors.New("backup: backup KEK not in this token")
	// ErrShare means a share file is malformed, its passphrase is wrong, or
	// the shares do not belong together.
	ErrShare = errors.New("backup: bad share")
	// ErrTooFewShares means fewer shares than the threshold were given.
	ErrTooFewShares = errors.New("backup: too few shares")
)
