package llmgateway_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// checkAnthropicError asserts Anthropic's error shape on the wire, exactly:
// {"type":"error","error":{"type":wantType,"message":…}} and nothing else, which is what the
// Anthropic SDKs parse into their typed errors.
func checkAnthropicError(t *testing.T, h http.Header, body, wantType string) {
	t.Helper()
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatalf("error body is not a JSON object: %v: %s", err, body)
	}
	var inner map[string]string
	if string(raw["type"]) != `"error"` || len(raw) != 2 || json.Unmarshal(raw["error"], &inner) != nil || len(inner) != 2 {
		t.Fatalf("not Anthropic's error shape: %s", body)
	}
	if inner["type"] != wantType || inner["message"] == "" {
		t.Errorf("error type %q message %q, want type %q and a message: %s", inner["type"], inner["message"], wantType, body)
	}
}

// TestMessagesErrorsAreAnthropicShaped checks the gateway's own errors on /v1/messages: same
// statuses as elsewhere, Anthropic's shape, the type following the status (SPEC §9).
func TestMessagesErrorsAreAnthropicShaped(t *testing.T) {
	up := fake(t, "alpha")
	empty500 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(empty500.Close)
	sse500 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("data: overloaded, try later\n\n"))
	}))
	t.Cleanup(sse500.Close)
	cooling := fake(t, "cooling")
	cooling.Update(func(s *fakeupstream.Settings) { s.Status = 500 })
	gw := startGateway(t, "", gatewaySite("max_request_body 1KiB\n\t\thealth_check {\n\t\t\tfailure_threshold 1\n\t\t\tcooldown 1m\n\t\t}",
		clientBlock("alpha", up.URL(), "match keyword claude"),
		clientBlock("down", refusedURL(t), "match exact down-model"),
		clientBlock("empty", empty500.URL+"/v1", "match exact empty-model"),
		clientBlock("sse", sse500.URL+"/v1", "match exact sse-model"),
		clientBlock("cooling", cooling.URL(), "match exact cooling-model")))
	// Open the breaker of "cooling": its next call is refused with 503 without being tried. The
	// upstream's own error passes through as it sent it.
	status, _, body := gw.post("/v1/messages", "application/json", `{"model":"cooling-model","max_tokens":8,"messages":[]}`)
	if status != 500 || !strings.Contains(body, `"fake cooling status 500"`) {
		t.Errorf("upstream error not passed through: %d %s", status, body)
	}

	msg := func(model string) string {
		return `{"model":"` + model + `","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
	}
	for _, tc := range []struct {
		name, path, body string
		status           int
		typ              string
	}{
		{"not JSON", "/v1/messages", `{"model":`, 400, "invalid_request_error"},
		{"model missing", "/v1/messages", `{"max_tokens":8,"messages":[]}`, 400, "invalid_request_error"},
		{"model not a string", "/v1/messages", `{"model":7}`, 400, "invalid_request_error"},
		{"body too large", "/v1/messages", `{"model":"claude-3","pad":"` + strings.Repeat("x", 2048) + `"}`, 413, "invalid_request_error"},
		{"no client for model", "/v1/messages", msg("gpt-4o"), 404, "not_found_error"},
		{"no client, count_tokens", "/v1/messages/count_tokens", msg("gpt-4o"), 404, "not_found_error"},
		{"upstream unreachable", "/v1/messages", msg("down-model"), 502, "api_error"},
		{"upstream 500 without a body", "/v1/messages", msg("empty-model"), 500, "api_error"},
		{"upstream SSE error that is not JSON", "/v1/messages", `{"model":"sse-model","stream":true,"max_tokens":8,"messages":[]}`, 500, "api_error"},
		{"cooling down", "/v1/messages", msg("cooling-model"), 503, "overloaded_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := gw.post(tc.path, "application/json", tc.body, "anthropic-version", "2023-06-01")
			if status != tc.status {
				t.Errorf("status = %d, want %d: %s", status, tc.status, body)
			}
			checkAnthropicError(t, h, body, tc.typ)
		})
	}
	if n := up.Requests(); n != 0 {
		t.Errorf("upstream saw %d requests for invalid input", n)
	}

	// Other paths keep OpenAI's shape.
	status, _, body = gw.post("/v1/chat/completions", "application/json", `{"model":"gpt-4o","messages":[]}`)
	if status != 404 {
		t.Errorf("chat: status %d", status)
	}
	checkError(t, body, "invalid_request_error", "model_not_found")
}

// TestKeyErrorsAreAnthropicShapedOnMessages checks the gateway-key refusals on /v1/messages:
// the statuses of the OpenAI endpoints, in Anthropic's shape (what the Anthropic SDKs send the
// key as: x-api-key).
func TestKeyErrorsAreAnthropicShapedOnMessages(t *testing.T) {
	up := fake(t, "alpha")
	gw := startGateway(t, "", gatewaySite(keysBlock(
		keyBlock("team", "secret sk-team-0123456789abcdef", "models claude-haiku*", "rpm 1")),
		clientBlock("alpha", up.URL(), "match keyword claude")))
	msg := func(model string) string {
		return `{"model":"` + model + `","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
	}
	for _, tc := range []struct {
		name, key, model string
		status           int
		typ              string
	}{
		{"no key", "", "claude-haiku-4", 401, "authentication_error"},
		{"unknown key", "sk-nobody-0123456789abcdef", "claude-haiku-4", 401, "authentication_error"},
		{"model not allowed", "sk-team-0123456789abcdef", "claude-opus-4", 403, "permission_error"},
		{"admitted", "sk-team-0123456789abcdef", "claude-haiku-4", 200, ""},
		{"rate limited", "sk-team-0123456789abcdef", "claude-haiku-4", 429, "rate_limit_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			header := []string{"anthropic-version", "2023-06-01"}
			if tc.key != "" {
				header = append(header, "x-api-key", tc.key)
			}
			status, h, body := gw.post("/v1/messages", "application/json", msg(tc.model), header...)
			if status != tc.status {
				t.Fatalf("status = %d, want %d: %s", status, tc.status, body)
			}
			if tc.typ != "" {
				checkAnthropicError(t, h, body, tc.typ)
			}
		})
	}
	if n := up.Requests(); n != 1 {
		t.Errorf("upstream saw %d requests, want only the admitted one", n)
	}
}
