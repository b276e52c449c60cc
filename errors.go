package llmgateway

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/llmgw/caddy-llm-gateway/internal/apierr"
)

// OpenAI error types and codes used by the gateway's own answers.
const (
	errTypeInvalidRequest = "invalid_request_error"
	errTypeUpstream       = "upstream_error"

	errCodeModelNotFound   = "model_not_found"
	errCodeBodyTooLarge    = "request_too_large"
	errCodeUpstreamConnect = "upstream_connect_error"
	errCodeUpstreamTimeout = "upstream_timeout"
	errCodeAllCoolingDown  = "upstream_cooling_down"
)

// apiError is an error the gateway answers itself, in the JSON shape the caller's SDK expects
// (see encode).
type apiError struct {
	status  int
	typ     string
	code    string // empty encodes as null
	message string
}

func (e *apiError) Error() string { return e.message }

// marshalError encodes an OpenAI-shaped error body.
func marshalError(typ, code, message string) []byte { return apierr.OpenAI(typ, code, "", message) }

// encode returns the error's body for a request to path: Anthropic's shape on the Messages API
// (/v1/messages and the paths under it, such as count_tokens), OpenAI's everywhere else, so
// each SDK raises its own typed error with the gateway's message (SPEC §9).
func (e *apiError) encode(path string) []byte {
	if isAnthropicPath(path) {
		return apierr.Anthropic(anthropicErrorType(e.status), e.message)
	}
	return marshalError(e.typ, e.code, e.message)
}

// isAnthropicPath reports whether path belongs to the Anthropic Messages API.
func isAnthropicPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/v1/messages")
	return ok && (rest == "" || rest[0] == '/')
}

// anthropicErrorType maps a status to the Anthropic error type the SDKs key their error classes
// on, as Anthropic's API documents them.
func anthropicErrorType(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return "invalid_request_error"
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusServiceUnavailable, 529:
		return "overloaded_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// writeJSON writes a complete JSON answer.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func errInvalidRequest(msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: errTypeInvalidRequest, message: msg}
}
