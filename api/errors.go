package api

import (
	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/allocator"
)

// Codes the API produces itself, beside the allocator's.
const (
	codeUnauthenticated  = "unauthenticated"
	codePermissionDenied = "permission_denied"
	codePayloadTooLarge  = "payload_too_large"
	codeUnavailable      = "unavailable"
	codeMethodNotAllowed = "method_not_allowed"
)

// statusOf maps an allocator code to its HTTP status per the contract.
func statusOf(c allocator.Code) int {
	switch c {
	case allocator.OK:
		return fasthttp.StatusOK
	case allocator.InvalidArgument:
		return fasthttp.StatusBadRequest
	case allocator.NotFound:
		return fasthttp.StatusNotFound
	case allocator.SoldOut, allocator.BuyerLimit, allocator.NotOpen, allocator.Expired,
		allocator.InvalidState, allocator.VersionConflict, allocator.IdempotencyMismatch:
		return fasthttp.StatusConflict
	}
	return fasthttp.StatusInternalServerError
}

// apiError is an error response: {"error": {"code", "message", "details"}}.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Details any    `json:"details,omitempty"`
}

func badRequest(msg string) *apiError {
	return &apiError{Status: fasthttp.StatusBadRequest, Code: allocator.InvalidArgument.String(), Message: msg}
}

func unavailable(msg string) *apiError {
	return &apiError{Status: fasthttp.StatusServiceUnavailable, Code: codeUnavailable, Message: msg}
}

func notFound(msg string) *apiError {
	return &apiError{Status: fasthttp.StatusNotFound, Code: allocator.NotFound.String(), Message: msg}
}

func fromDomain(e *allocator.Error, details any) *apiError {
	return &apiError{Status: statusOf(e.Code), Code: e.Code.String(), Message: e.Message, Details: details}
}
