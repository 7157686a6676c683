package hsm

import (
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// Sentinels. Errors from the token wrap one of these together with the
// original pkcs11.Error, so errors.Is matches the sentinel and the CKR name
// stays in the message and the chain.
var (
	// ErrNotFound means the token (by label), the master key or a KEK is missing.
	ErrNotFound = errors.New("hsm: not found")
	// ErrWrapDenied means the token refused to wrap, unwrap or reveal a key.
	ErrWrapDenied = errors.New("hsm: wrap denied")
	// ErrBadCiphertext means ciphertext, tag, padding or a wrapped blob failed
	// authentication or decoding.
	ErrBadCiphertext = errors.New("hsm: bad ciphertext")
	// ErrTokenUnavailable means a module, slot, session or device error; the
	// broken session is replaced, so a retry may succeed.
	ErrTokenUnavailable = errors.New("hsm: token unavailable")
	// ErrBusy means every session was in use until the context ended.
	ErrBusy = errors.New("hsm: all sessions busy")
	// ErrInvalidInput means a bad length, IV, alignment, mode or key kind.
	ErrInvalidInput = errors.New("hsm: invalid input")
	// ErrPIN means the token refused the PIN (wrong, expired or locked): only
	// an operator can fix it.
	ErrPIN = errors.New("hsm: PIN refused")
)

// errIdentityHalf marks a token holding half a mirror identity key pair,
// or several: another process may be creating it (see MirrorIdentity).
var errIdentityHalf = fmt.Errorf("identity key pair incomplete or duplicated: %w", ErrInvalidInput)

// ckrSentinel maps return values to sentinels. Codes not listed stay
// unmapped.
var ckrSentinel = map[pkcs11.Error]error{
	pkcs11.CKR_SESSION_HANDLE_INVALID:        ErrTokenUnavailable,
	pkcs11.CKR_SESSION_CLOSED:                ErrTokenUnavailable,
	pkcs11.CKR_SESSION_COUNT:                 ErrTokenUnavailable,
	pkcs11.CKR_DEVICE_REMOVED:                ErrTokenUnavailable,
	pkcs11.CKR_DEVICE_ERROR:                  ErrTokenUnavailable,
	pkcs11.CKR_DEVICE_MEMORY:                 ErrTokenUnavailable,
	pkcs11.CKR_TOKEN_NOT_PRESENT:             ErrTokenUnavailable,
	pkcs11.CKR_TOKEN_NOT_RECOGNIZED:          ErrTokenUnavailable,
	pkcs11.CKR_USER_NOT_LOGGED_IN:            ErrTokenUnavailable,
	pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:      ErrTokenUnavailable,
	pkcs11.CKR_SLOT_ID_INVALID:               ErrTokenUnavailable,
	pkcs11.CKR_GENERAL_ERROR:                 ErrTokenUnavailable,
	pkcs11.CKR_FUNCTION_FAILED:               ErrTokenUnavailable,
	pkcs11.CKR_HOST_MEMORY:                   ErrTokenUnavailable,
	pkcs11.CKR_OPERATION_ACTIVE:              ErrTokenUnavailable,
	pkcs11.CKR_OPERATION_NOT_INITIALIZED:     ErrTokenUnavailable,
	pkcs11.CKR_OBJECT_HANDLE_INVALID:         ErrTokenUnavailable,
	pkcs11.CKR_KEY_HANDLE_INVALID:            ErrTokenUnavailable,
	pkcs11.CKR_WRAPPING_KEY_HANDLE_INVALID:   ErrTokenUnavailable,
	pkcs11.CKR_UNWRAPPING_KEY_HANDLE_INVALID: ErrTokenUnavailable,

	pkcs11.CKR_KEY_NOT_WRAPPABLE:                ErrWrapDenied,
	pkcs11.CKR_KEY_UNEXTRACTABLE:                ErrWrapDenied,
	pkcs11.CKR_ATTRIBUTE_SENSITIVE:              ErrWrapDenied,
	pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED:       ErrWrapDenied,
	pkcs11.CKR_WRAPPING_KEY_TYPE_INCONSISTENT:   ErrWrapDenied,
	pkcs11.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT: ErrWrapDenied,
	pkcs11.CKR_WRAPPING_KEY_SIZE_RANGE:          ErrWrapDenied,
	pkcs11.CKR_UNWRAPPING_KEY_SIZE_RANGE:        ErrWrapDenied,

	pkcs11.CKR_ENCRYPTED_DATA_INVALID:   ErrBadCiphertext,
	pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE: ErrBadCiphertext,
	pkcs11.CKR_WRAPPED_KEY_INVALID:      ErrBadCiphertext,
	pkcs11.CKR_WRAPPED_KEY_LEN_RANGE:    ErrBadCiphertext,

	pkcs11.CKR_DATA_INVALID:            ErrInvalidInput,
	pkcs11.CKR_DATA_LEN_RANGE:          ErrInvalidInput,
	pkcs11.CKR_MECHANISM_INVALID:       ErrInvalidInput,
	pkcs11.CKR_MECHANISM_PARAM_INVALID: ErrInvalidInput,
	pkcs11.CKR_KEY_SIZE_RANGE:          ErrInvalidInput,
	pkcs11.CKR_KEY_TYPE_INCONSISTENT:   ErrInvalidInput,
	pkcs11.CKR_ATTRIBUTE_VALUE_INVALID: ErrInvalidInput,
	pkcs11.CKR_ATTRIBUTE_TYPE_INVALID:  ErrInvalidInput,
	pkcs11.CKR_TEMPLATE_INCOMPLETE:     ErrInvalidInput,
	pkcs11.CKR_TEMPLATE_INCONSISTENT:   ErrInvalidInput,
	pkcs11.CKR_ARGUMENTS_BAD:           ErrInvalidInput,

	pkcs11.CKR_PIN_INCORRECT: ErrPIN,
	pkcs11.CKR_PIN_INVALID:   ErrPIN,
	pkcs11.CKR_PIN_LEN_RANGE: ErrPIN,
	pkcs11.CKR_PIN_EXPIRED:   ErrPIN,
	pkcs11.CKR_PIN_LOCKED:    ErrPIN,
}

// deadSession lists codes after which the session handle itself is gone, so
// closing it could only hit a handle number the module has since reused.
var deadSession = map[pkcs11.Error]bool{
	pkcs11.CKR_SESSION_HANDLE_INVALID:   true,
	pkcs11.CKR_SESSION_CLOSED:           true,
	pkcs11.CKR_DEVICE_REMOVED:           true,
	pkcs11.CKR_TOKEN_NOT_PRESENT:        true,
	pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED: true,
}

// opKind tells mapErr whether a failure can be the data's fault.
type opKind int

const (
	opOther opKind = iota
	// opDecrypt covers C_Decrypt and C_UnwrapKey. SoftHSM2 2.6 reports a bad
	// GCM tag, bad CBC padding and a tampered wrapped blob as
	// CKR_GENERAL_ERROR, so there it means bad ciphertext, not a sick token.
	opDecrypt
)

// mapErr wraps a pkcs11.Error with its sentinel; other errors pass through.
func mapErr(err error, kind opKind) error {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return err
	}
	if kind == opDecrypt && rv == pkcs11.CKR_GENERAL_ERROR {
		return fmt.Errorf("%w: %w", ErrBadCiphertext, err)
	}
	if s, ok := ckrSentinel[rv]; ok {
		return fmt.Errorf("%w: %w", s, err)
	}
	return err
}

// sessionDead reports whether err says the session handle no longer exists.
func sessionDead(err error) bool {
	var rv pkcs11.Error
	return errors.As(err, &rv) && deadSession[rv]
}

// isCode reports whether err carries the return value rv.
func isCode(err error, rv uint) bool {
	return errors.Is(err, pkcs11.Error(rv))
}
