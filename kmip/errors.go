package kmip

import (
	"context"
	"errors"
	"fmt"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// Error is a failure a client should see as it is: a result reason and a message.
type Error struct {
	Reason  kmip14.ResultReason
	Message string
	// Payload, if set, is sent with the failure: KMIP Check answers a failed check
	// with the fields that failed it.
	Payload *msg.Node
}

func (e *Error) Error() string { return fmt.Sprintf("kmip: %v: %s", e.Reason, e.Message) }

// Errorf builds an *Error.
func Errorf(reason kmip14.ResultReason, format string, args ...any) error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("kmip: server closed")

// reasonTable maps the sentinels of the packages below kmip to result reasons. It is
// the only place that decides what a client learns from an internal error; the message
// is written for the client and never includes the wrapped chain, which may name
// internal paths (the chain goes to the log instead).
var reasonTable = []struct {
	err     error
	reason  kmip14.ResultReason
	message string
}{
	{meta.ErrNotFound, kmip14.ResultReasonItemNotFound, "object not found"},
	{meta.ErrExists, kmip14.ResultReasonIllegalOperation, "an object with this identifier already exists"},
	{meta.ErrFull, kmip14.ResultReasonGeneralFailure, "the key store is out of space; nothing was written"},
	{hsm.ErrBadCiphertext, kmip14.ResultReasonCryptographicFailure, "decryption failed: bad padding, tag or ciphertext"},
	{hsm.ErrInvalidInput, kmip14.ResultReasonInvalidField, "the HSM rejected the input (length, IV or alignment)"},
	{hsm.ErrWrapDenied, kmip14.ResultReasonPermissionDenied, "the HSM refused to wrap this key"},
	{hsm.ErrTokenUnavailable, kmip14.ResultReasonGeneralFailure, "the HSM is unavailable; retry later"},
	{hsm.ErrBusy, kmip14.ResultReasonGeneralFailure, "the HSM is busy; retry later"},
	{hsm.ErrNotFound, kmip14.ResultReasonGeneralFailure, "a key the server needs is missing from the HSM"},
	{context.DeadlineExceeded, kmip14.ResultReasonGeneralFailure, "the request timed out"},
	{context.Canceled, kmip14.ResultReasonOperationCanceledByRequester, "the request was cancelled"},
}

// ReasonFor maps err to the result reason and message a client sees. known is false
// when err matched nothing: the caller logs the whole chain and the client gets General
// Failure.
func ReasonFor(err error) (reason kmip14.ResultReason, message string, known bool) {
	var ke *Error
	if errors.As(err, &ke) {
		return ke.Reason, ke.Message, true
	}
	var pe *msg.ProtocolError
	if errors.As(err, &pe) {
		return pe.Reason, pe.Message, true
	}
	if errors.Is(err, msg.ErrMalformed) {
		return kmip14.ResultReasonInvalidMessage, err.Error(), true
	}
	for _, row := range reasonTable {
		if errors.Is(err, row.err) {
			return row.reason, row.message, true
		}
	}
	return kmip14.ResultReasonGeneralFailure, "internal error", false
}
