package llmgateway_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// TestRetrieveModel drives GET /v1/models/{model} with the official SDK: answered from the
// aggregated list (and its cache), never proxied, 404 model_not_found otherwise.
func TestRetrieveModel(t *testing.T) {
	up := fake(t, "alpha")
	up.Update(func(s *fakeupstream.Settings) {
		s.Models = []string{"gpt-4o", "meta-llama/Llama-3-8B", "unrelated-model"}
	})
	// The next handler answers 299: a retrieve call must never reach it.
	gw := startGateway(t, "", "\troute {\n"+gatewaySite("models_cache_ttl 1h",
		clientBlock("alpha", up.URL(), "match keyword gpt llama", "match exact whisper-1"))+"\trespond \"next handler\" 299\n\t}\n")
	client := gw.client()
	ctx := context.Background()

	for _, id := range []string{"gpt-4o", "meta-llama/Llama-3-8B", "whisper-1"} {
		m, err := client.Models.Get(ctx, id)
		if err != nil {
			t.Fatalf("retrieve %s: %v", id, err)
		}
		if m.ID != id || m.Object != "model" {
			t.Errorf("retrieve %s = %+v", id, m)
		}
	}
	// An upstream model the client's match rules reject is not the gateway's to serve.
	for _, id := range []string{"unrelated-model", "gpt-5-nonexistent"} {
		_, err := client.Models.Get(ctx, id)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "model_not_found" || apiErr.Type != "invalid_request_error" {
			t.Errorf("retrieve %s: err %v, want 404 model_not_found", id, err)
		}
	}
	// Unescaped, as curl sends it; with the SDK's key, so the cached list answers.
	req, _ := http.NewRequest(http.MethodGet, gw.URL+"/v1/models/meta-llama/Llama-3-8B", nil)
	req.Header.Set("Authorization", "Bearer sk-caller-key-123456")
	status, _, body := gw.do(req)
	if status != http.StatusOK || !strings.Contains(body, `"id":"meta-llama/Llama-3-8B"`) {
		t.Errorf("unescaped slash: %d %s", status, body)
	}

	if n := up.Count("/v1/models"); n != 1 {
		t.Errorf("upstream /models fetched %d times, want 1 (the cached list answers retrieve calls)", n)
	}
	if n := up.Requests(); n != 1 {
		t.Errorf("upstream saw %d requests, want only the list: retrieve is never proxied", n)
	}
}
