package meta

import "errors"

// Sentinels returned (wrapped) by Store and Tx methods; match them with errors.Is.
var (
	// ErrNotFound means no object has the given ID.
	ErrNotFound = errors.New("meta: object not found")
	// ErrExists means an object with the given ID already exists.
	ErrExists = errors.New("meta: object already exists")
	// ErrConflict means the write contradicts itself or the stored data, e.g.
	// two attribute instances with the same name and index.
	ErrConflict = errors.New("meta: conflicting write")
	// ErrInvalid means the caller passed an unusable value (nil object, empty ID).
	ErrInvalid = errors.New("meta: invalid argument")
	// ErrReadOnly means a write was attempted inside View.
	ErrReadOnly = errors.New("meta: read-only transaction")
	// ErrFull means SQLite reported SQLITE_FULL: the disk (or the configured
	// page limit) is full. Nothing of the failed write was committed; the
	// store keeps working once space returns.
	ErrFull = errors.New("meta: storage full")
	// ErrBusy means another process held the database lock for longer than
	// Options.BusyTimeout.
	ErrBusy = errors.New("meta: database busy")
	// ErrClosed means the Store was closed.
	ErrClosed = errors.New("meta: store closed")
	// ErrAuditDisabled means an audit method was called on a Store opened
	// without Options.Audit.
	ErrAuditDisabled = errors.New("meta: audit trail disabled")
)
