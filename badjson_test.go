package llmgateway_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestBadJSONMessage checks that the 400 for a body that is not a JSON object says so once,
// with the reason.
func TestBadJSONMessage(t *testing.T) {
	up := fake(t, "alpha")
	gw := startGateway(t, "", gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt")))
	for _, body := range []string{`{"model":`, `[1,2]`, `{"model":"gpt-4o"} x`} {
		status, _, resp := gw.post("/v1/chat/completions", "application/json", body)
		checkError(t, resp, "invalid_request_error", "")
		var e openAIError
		_ = json.Unmarshal([]byte(resp), &e)
		msg := e.Error.Message
		if status != 400 || !strings.HasPrefix(msg, "request body is not a JSON object") || strings.Count(msg, "JSON object") != 1 {
			t.Errorf("body %q: %d message %q, want one \"request body is not a JSON object\" and the reason", body, status, msg)
		}
	}
}
