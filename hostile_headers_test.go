package llmgateway_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestHostileHeaderPlaceholderValues feeds client header placeholders values no header may
// carry: the header is dropped, the call served, and the client's breaker untouched. A
// configured header name stays the operator's: the caller cannot send it instead.
func TestHostileHeaderPlaceholderValues(t *testing.T) {
	up := fake(t, "alpha")
	gw := startGateway(t, "", gatewaySite("health_check {\n\t\t\tfailure_threshold 1\n\t\t}",
		clientBlock("alpha", up.URL(), "match keyword gpt", "header X-Tag {http.request.uri.query.tag}")))
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	for _, tag := range []string{"%0D%0AX-Injected:%20yes", "a%00b", "%7F", ""} {
		req, _ := http.NewRequest(http.MethodPost, gw.URL+"/v1/chat/completions?tag="+tag, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Tag", "from-the-caller")
		status, _, resp := gw.do(req)
		if status != http.StatusOK {
			t.Fatalf("tag %q: %d %s", tag, status, resp)
		}
		h := up.LastRequest().Header
		if v, ok := h["X-Tag"]; ok || h.Get("X-Injected") != "" {
			t.Errorf("tag %q: upstream X-Tag %q X-Injected %q, want neither", tag, v, h.Get("X-Injected"))
		}
	}
	status, _, resp := gw.get("/health")
	if status != http.StatusOK || !strings.Contains(resp, `"alpha":{"state":"closed"}`) {
		t.Errorf("health after hostile values: %d %s", status, resp)
	}
	// A valid value is sent.
	status, _, _ = gw.post("/v1/chat/completions?tag=ok", "application/json", body)
	if status != http.StatusOK || up.LastRequest().Header.Get("X-Tag") != "ok" {
		t.Errorf("tag ok: %d, upstream X-Tag %q", status, up.LastRequest().Header.Get("X-Tag"))
	}
}
