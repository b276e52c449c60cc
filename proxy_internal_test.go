package llmgateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/llmgw/caddy-llm-gateway/router"
)

// TestGatewayHeaderKeysCanonical checks the canonical keys setGatewayHeaders sets the headers by.
func TestGatewayHeaderKeysCanonical(t *testing.T) {
	for name, canonical := range map[string]string{headerTried: canonicalTried, headerBackend: canonicalBackend} {
		if got := http.CanonicalHeaderKey(name); got != canonical {
			t.Errorf("CanonicalHeaderKey(%q) = %q, the constant says %q", name, got, canonical)
		}
	}
}

// TestForwardedCallerKey: a client without its own api_key sends the caller's key as
// "Bearer <key>" however the caller spelled it; the caller's value is sent as it is when it is
// already exactly that.
func TestForwardedCallerKey(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header http.Header
		shared bool // the caller's value slice is sent as it is
	}{
		{"canonical", http.Header{"Authorization": {"Bearer sk-k"}}, true},
		{"lower-case scheme", http.Header{"Authorization": {"bearer sk-k"}}, false},
		{"spaces", http.Header{"Authorization": {"Bearer  sk-k "}}, false},
		{"two values", http.Header{"Authorization": {"Bearer sk-k", "Bearer sk-other"}}, false},
		{"x-api-key", http.Header{"X-Api-Key": {" sk-k"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, _ := url.Parse("http://a.invalid/v1")
			uc := &upstreamClient{Client: &router.Client{Name: "a"}, baseURL: base}
			r, _ := http.NewRequest(http.MethodPost, "http://gw/v1/chat/completions", nil)
			r.Header = tc.header
			req := &apiRequest{r: r, ep: epChat, upPath: "/chat/completions"}
			up, _ := req.newUpstreamRequest(context.Background(), uc, nil)
			got := up.Header["Authorization"]
			if len(got) != 1 || got[0] != "Bearer sk-k" {
				t.Fatalf("Authorization %q, want [\"Bearer sk-k\"]", got)
			}
			sent := tc.header["Authorization"]
			if shared := len(sent) > 0 && &got[0] == &sent[0]; shared != tc.shared {
				t.Errorf("caller's value shared: %v, want %v", shared, tc.shared)
			}
		})
	}
}

// TestAnswerHeaderValuesApart: the values writeBuffered sets share one array; appending to one
// (as a later handler may) leaves the others as they were.
func TestAnswerHeaderValuesApart(t *testing.T) {
	uc := &upstreamClient{Client: &router.Client{Name: "a"}}
	w := httptest.NewRecorder()
	d := delivery{w: w, tried: []string{"a"}, backend: "a"}
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}}
	writeBuffered(d, &apiRequest{ep: epEmbeddings}, &attemptSpec{uc: uc}, resp, []byte(`{"ok":1}`))
	h := w.Header() // the handler's map, holding the slices writeBuffered set
	h[canonicalTried] = append(h[canonicalTried], "b")
	h[canonicalBackend] = append(h[canonicalBackend], "c")
	if got := h[canonicalTried]; len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("tried %q", got)
	}
	if got := h[canonicalBackend]; len(got) != 2 || got[0] != "a" || got[1] != "c" {
		t.Errorf("backend %q", got)
	}
	if got := h["Content-Length"]; len(got) != 1 || got[0] != "8" {
		t.Errorf("Content-Length %q, want [8]", got)
	}
}
