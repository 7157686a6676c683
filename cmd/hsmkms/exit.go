package main

import "errors"

// Exit statuses, documented in README. They tell a supervisor what kind of failure
// ended the process: the systemd unit retries a token or store failure (an HSM may be
// rebooting) but not a configuration error, which only an operator can fix.
const (
	exitFailure = 1 // anything not listed below
	exitConfig  = 2 // the configuration file, or a file or value it names, is wrong
	exitToken   = 3 // the token cannot be opened: module, label, PIN or master key
	exitStore   = 4 // the metadata database cannot be opened
)

// exitError gives an error the exit status the process ends with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withExit marks err (if any) to end the process with code.
func withExit(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// exitCode is the status err ends the process with: its outermost mark, else 1.
func exitCode(err error) int {
	if e, ok := errors.AsType[*exitError](err); ok {
		return e.code
	}
	return exitFailure
}
