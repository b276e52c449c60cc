package llmgateway_test

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"strings"
	"testing"
	"time"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// openAIError is the wire shape of an OpenAI error.
type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// checkError asserts an OpenAI-shaped error body with the given type and code ("" = null).
func checkError(t *testing.T, body, wantType, wantCode string) {
	t.Helper()
	var e openAIError
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, body)
	}
	var raw map[string]map[string]json.RawMessage
	_ = json.Unmarshal([]byte(body), &raw)
	for _, field := range []string{"message", "type", "param", "code"} {
		if _, ok := raw["error"][field]; !ok {
			t.Errorf("error body lacks error.%s: %s", field, body)
		}
	}
	if e.Error.Message == "" {
		t.Errorf("error without a message: %s", body)
	}
	if e.Error.Type != wantType {
		t.Errorf("error type = %q, want %q: %s", e.Error.Type, wantType, body)
	}
	code := ""
	if e.Error.Code != nil {
		code = *e.Error.Code
	}
	if code != wantCode {
		t.Errorf("error code = %q, want %q", code, wantCode)
	}
}

func TestGatewayErrors(t *testing.T) {
	up := fake(t, "alpha")
	gw := startGateway(t, "", gatewaySite("max_request_body 1KiB",
		clientBlock("alpha", up.URL(), "match keyword gpt", "match exact whisper-1")))

	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	fw, _ := mw.CreateFormFile("file", "a.wav")
	fw.Write([]byte("audio"))
	mw.WriteField("language", "en")
	mw.Close()

	for _, tc := range []struct {
		name, path, contentType, body string
		status                        int
		typ, code                     string
	}{
		{"not JSON", "/v1/chat/completions", "application/json", `{"model":`, 400, "invalid_request_error", ""},
		{"JSON array", "/v1/chat/completions", "application/json", `[1,2]`, 400, "invalid_request_error", ""},
		{"model missing", "/v1/chat/completions", "application/json", `{"messages":[]}`, 400, "invalid_request_error", ""},
		{"model not a string", "/v1/embeddings", "application/json", `{"model":42,"input":"x"}`, 400, "invalid_request_error", ""},
		{"model not a string, generic path", "/v1/images/generations", "application/json", `{"model":["x"]}`, 400, "invalid_request_error", ""},
		{"body too large", "/v1/chat/completions", "application/json", `{"model":"gpt-4","pad":"` + strings.Repeat("x", 2048) + `"}`, 413, "invalid_request_error", "request_too_large"},
		{"no client for model", "/v1/chat/completions", "application/json", `{"model":"llama-3","messages":[]}`, 404, "invalid_request_error", "model_not_found"},
		{"multipart without model", "/v1/audio/transcriptions", mw.FormDataContentType(), form.String(), 400, "invalid_request_error", ""},
		{"audio not multipart", "/v1/audio/transcriptions", "application/json", `{"model":"whisper-1"}`, 400, "invalid_request_error", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := gw.post(tc.path, tc.contentType, tc.body)
			if status != tc.status {
				t.Errorf("status = %d, want %d: %s", status, tc.status, body)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			checkError(t, body, tc.typ, tc.code)
		})
	}
	if n := up.Requests(); n != 0 {
		t.Errorf("upstream saw %d requests for invalid input", n)
	}
}

func TestAllAttemptsFailedErrors(t *testing.T) {
	t.Run("last upstream body and status", func(t *testing.T) {
		a, b := fake(t, "a"), fake(t, "b")
		a.Update(func(s *fakeupstream.Settings) { s.Status = 503 })
		b.Update(func(s *fakeupstream.Settings) {
			s.Status = 429
			s.Headers = map[string]string{"Retry-After": "7", "X-Ratelimit-Remaining-Requests": "0"}
		})
		gw := startGateway(t, "", gatewaySite("",
			clientBlock("a", a.URL(), "match keyword gpt"),
			clientBlock("b", b.URL(), "match keyword gpt")))
		status, h, body := gw.chat("gpt-4")
		if status != 429 || !strings.Contains(body, "fake b status 429") {
			t.Fatalf("got %d %s, want the last upstream's 429 and body", status, body)
		}
		checkError(t, body, "upstream_error", "")
		if h.Get("Retry-After") != "7" || h.Get("X-Ratelimit-Remaining-Requests") != "0" {
			t.Errorf("upstream rate-limit headers not passed on: %v", h)
		}
		if h.Get("X-LLM-Gateway-Tried") != "a,b" {
			t.Errorf("tried = %q", h.Get("X-LLM-Gateway-Tried"))
		}
	})
	t.Run("connect", func(t *testing.T) {
		gw := startGateway(t, "", gatewaySite("", clientBlock("down", refusedURL(t), "match keyword gpt")))
		status, _, body := gw.chat("gpt-4")
		if status != 502 {
			t.Errorf("status = %d, want 502: %s", status, body)
		}
		checkError(t, body, "upstream_error", "upstream_connect_error")
	})
	t.Run("timeout", func(t *testing.T) {
		slow := fake(t, "slow")
		slow.Update(func(s *fakeupstream.Settings) { s.Delay = 10 * time.Second })
		gw := startGateway(t, "", gatewaySite("",
			clientBlock("slow", slow.URL(), "match keyword gpt", "transport http {\n\t\t\t\tresponse_header_timeout 200ms\n\t\t\t}")))
		status, _, body := gw.chat("gpt-4")
		if status != 504 {
			t.Errorf("status = %d, want 504: %s", status, body)
		}
		checkError(t, body, "upstream_error", "upstream_timeout")
	})
	t.Run("stream first byte timeout", func(t *testing.T) {
		slow := fake(t, "slow")
		slow.Update(func(s *fakeupstream.Settings) { s.Delay = 10 * time.Second })
		gw := startGateway(t, "", gatewaySite("stream_first_byte_timeout 200ms",
			clientBlock("slow", slow.URL(), "match keyword gpt")))
		status, _, body := gw.post("/v1/chat/completions", "application/json",
			`{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		if status != 504 {
			t.Errorf("status = %d, want 504: %s", status, body)
		}
		checkError(t, body, "upstream_error", "upstream_timeout")
	})
	t.Run("cooling down", func(t *testing.T) {
		a := fake(t, "a")
		a.Update(func(s *fakeupstream.Settings) { s.Status = 500 })
		gw := startGateway(t, "", gatewaySite("health_check {\n\t\t\tfailure_threshold 1\n\t\t\tcooldown 1m\n\t\t}",
			clientBlock("a", a.URL(), "match keyword gpt")))
		gw.chat("gpt-4")
		status, h, body := gw.chat("gpt-4")
		if status != 503 || h.Get("Retry-After") == "" {
			t.Errorf("got %d Retry-After=%q, want 503 with Retry-After", status, h.Get("Retry-After"))
		}
		checkError(t, body, "upstream_error", "upstream_cooling_down")
	})
}

func TestUntransformableFieldIsBadRequest(t *testing.T) {
	up := fake(t, "alpha")
	gw := startGateway(t, "", gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt", "max_tokens 100")))
	status, _, body := gw.post("/v1/chat/completions", "application/json",
		`{"model":"gpt-4","max_tokens":"lots","messages":[{"role":"user","content":"hi"}]}`)
	if status != 400 {
		t.Errorf("status = %d, want 400: %s", status, body)
	}
	checkError(t, body, "invalid_request_error", "")
	if n := up.Requests(); n != 0 {
		t.Errorf("upstream saw %d requests", n)
	}
}
