package llmgateway_test

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// TestHostileGatewayKeys sends keys and credentials in the shapes a careless or hostile caller
// might: every one is refused with the 401 of SPEC §12 (no panic, no echo of what was sent),
// and the gateway key never reaches an upstream, on any endpoint or header.
func TestHostileGatewayKeys(t *testing.T) {
	useClock(t)
	up := fake(t, "hk-up")
	const good = "sk-hostile-good-0123456789"
	gw := startGateway(t, "", gatewaySite(keysBlock(keyBlock("good", "secret "+good, "models gpt-4o whisper-1 claude-*", "concurrency 1")),
		clientBlock("hk-up", up.URL(), "match keyword gpt", "match exact whisper-1", "match keyword claude")))
	chat := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	for _, tc := range []struct {
		name    string
		headers []string
	}{
		{"no credential", nil},
		{"empty bearer", []string{"Authorization", "Bearer "}},
		{"basic scheme", []string{"Authorization", "Basic " + good}},
		{"bearer without space", []string{"Authorization", "Bearer" + good}},
		{"prefix of the key", []string{"Authorization", "Bearer " + good[:len(good)-1]}},
		{"key plus a byte", []string{"Authorization", "Bearer " + good + "x"}},
		{"other case", []string{"Authorization", "Bearer " + strings.ToUpper(good)}},
		{"invalid UTF-8", []string{"X-Api-Key", "sk-\xff\xfe"}},
		{"huge key", []string{"Api-Key", strings.Repeat("k", 16<<10)}},
		{"hash instead of key", []string{"Authorization", "Bearer sha256:" + strings.Repeat("0", 64)}},
		// The bearer token is the caller's key when there is one: a right key elsewhere does not
		// rescue a wrong bearer token.
		{"wrong bearer, right x-api-key", []string{"Authorization", "Bearer sk-wrong", "X-Api-Key", good}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := gw.post("/v1/chat/completions", "application/json", chat, tc.headers...)
			if code != http.StatusUnauthorized || !strings.Contains(body, `"code":"invalid_api_key"`) {
				t.Fatalf("%d %s, want 401 invalid_api_key", code, body)
			}
			for i := 1; i < len(tc.headers); i += 2 {
				if v := strings.TrimPrefix(tc.headers[i], "Bearer "); len(v) > 3 && strings.Contains(body, v) {
					t.Errorf("the error echoes what the caller sent: %s", body)
				}
			}
		})
	}
	if n := up.Requests(); n != 0 {
		t.Fatalf("refused calls reached the upstream %d times", n)
	}

	// Admitted on every API shape, and the gateway key is never forwarded: not on chat, not on
	// Anthropic's /v1/messages (x-api-key), not on a multipart upload.
	noCredential := func(what string) {
		t.Helper()
		h := up.LastRequest().Header
		for _, name := range []string{"Authorization", "X-Api-Key", "Api-Key"} {
			if v := h.Get(name); v != "" {
				t.Errorf("%s: upstream got %s %q", what, name, v)
			}
		}
	}
	if code, _, body := gw.post("/v1/chat/completions", "application/json", chat, "Authorization", "bearer "+good); code != http.StatusOK {
		t.Fatalf("lower-case bearer: %d %s", code, body)
	}
	noCredential("chat")
	if code, _, body := gw.post("/v1/messages", "application/json",
		`{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, "X-Api-Key", good, "Anthropic-Version", "2023-06-01"); code != http.StatusOK {
		t.Fatalf("messages: %d %s", code, body)
	}
	noCredential("messages")
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("model", "whisper-1")
	fw, _ := mw.CreateFormFile("file", "a.wav")
	_, _ = fw.Write([]byte("RIFF fake"))
	_ = mw.Close()
	if code, _, body := gw.post("/v1/audio/transcriptions", mw.FormDataContentType(), buf.String(), "Api-Key", good); code != http.StatusOK {
		t.Fatalf("multipart: %d %s", code, body)
	}
	noCredential("multipart")

	// A model outside the globs is refused whatever the body's shape: a multipart model too.
	buf.Reset()
	mw = multipart.NewWriter(&buf)
	_ = mw.WriteField("model", "whisper-2")
	_ = mw.Close()
	if code, _, body := gw.post("/v1/audio/transcriptions", mw.FormDataContentType(), buf.String(), "Api-Key", good); code != http.StatusForbidden || !strings.Contains(body, "model_not_allowed") {
		t.Fatalf("multipart model not allowed: %d %s", code, body)
	}

	// A stream the upstream cuts releases its concurrency slot: the next call is admitted.
	up.Update(func(s *fakeupstream.Settings) { s.Chunks, s.BreakAfter = 4, 2 })
	if code, _, _ := gw.post("/v1/chat/completions", "application/json",
		`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`, "Authorization", "Bearer "+good); code != http.StatusOK {
		t.Fatalf("cut stream: %d", code)
	}
	up.Update(func(s *fakeupstream.Settings) { s.BreakAfter = 0 })
	if code, _, body := gw.post("/v1/chat/completions", "application/json", chat, "Authorization", "Bearer "+good); code != http.StatusOK {
		t.Fatalf("after a cut stream: %d %s (its concurrency slot was not released)", code, body)
	}
}
