package llmgateway

import (
	"net/http"
	"strconv"

	"github.com/goccy/go-json"
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

// apiError is an error answered to the caller in OpenAI's JSON shape.
type apiError struct {
	status  int
	typ     string
	code    string // empty encodes as null
	message string
}

func (e *apiError) Error() string { return e.message }

// errorBody is the wire shape: {"error":{"message":…,"type":…,"param":null,"code":…}}.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// marshalError encodes an OpenAI-shaped error body.
func marshalError(typ, code, message string) []byte {
	var b errorBody
	b.Error.Message = message
	b.Error.Type = typ
	if code != "" {
		b.Error.Code = &code
	}
	out, _ := json.Marshal(&b) // cannot fail: only strings
	return out
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
