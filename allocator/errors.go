package allocator

import "fmt"

// Code classifies an outcome. Every non-OK code maps to exactly one error code
// of the external contract (see Code.String), so the API layer never guesses.
type Code uint8

// Codes. The zero value is OK so a zero Result is a success.
const (
	OK Code = iota
	InvalidArgument
	NotFound
	SoldOut
	BuyerLimit
	NotOpen
	Expired
	InvalidState
	VersionConflict
	IdempotencyMismatch
	numCodes
)

var codeNames = [numCodes]string{
	OK:                  "ok",
	InvalidArgument:     "invalid_argument",
	NotFound:            "not_found",
	SoldOut:             "sold_out",
	BuyerLimit:          "buyer_limit",
	NotOpen:             "not_open",
	Expired:             "expired",
	InvalidState:        "invalid_state",
	VersionConflict:     "version_conflict",
	IdempotencyMismatch: "idempotency_mismatch",
}

// String returns the contract's error code, e.g. "sold_out".
func (c Code) String() string {
	if c < numCodes {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", uint8(c))
}

// Error is a domain error: a code from the contract, a human message and,
// for reservation refusals, what happened to each requested line.
type Error struct {
	Code    Code
	Message string
	// Lines holds per-line outcomes when a reservation was refused.
	Lines []LineView
}

// Error implements error.
func (e *Error) Error() string { return e.Code.String() + ": " + e.Message }

// MismatchError is the error for an idempotency key reused with a
// different request.
func MismatchError(key string) *Error {
	return errorf(IdempotencyMismatch, "idempotency key %q was used with a different request", key)
}

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
