package llmgateway_test

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// rawUpstream is an upstream for wire-level cases the fake does not produce; it records the
// last request URI it saw.
func rawUpstream(t *testing.T, handler http.HandlerFunc) (baseURL string, lastURI func() string) {
	t.Helper()
	var mu = make(chan string, 1)
	mu <- ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-mu
		mu <- r.RequestURI
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1", func() string { s := <-mu; mu <- s; return s }
}

func TestLastAnsweringUpstreamDecidesTheFinalError(t *testing.T) {
	a := fake(t, "a")
	a.Update(func(s *fakeupstream.Settings) { s.Status = 500 })
	gw := startGateway(t, "", gatewaySite("strategy random",
		clientBlock("a", a.URL(), "match keyword gpt", "priority 0"),
		clientBlock("down", refusedURL(t), "match keyword gpt", "priority 0")))
	status, h, body := gw.chat("gpt-4")
	if h.Get("X-LLM-Gateway-Tried") != "a,down" {
		t.Fatalf("tried = %q, want a,down", h.Get("X-LLM-Gateway-Tried"))
	}
	if status != 500 || !strings.Contains(body, "fake a status 500") {
		t.Errorf("got %d %s, want a's 500: an upstream's answer beats a later refused connection", status, body)
	}
}

func TestStreamingErrorSentAsSSEBecomesJSON(t *testing.T) {
	base, _ := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte("data: {\"error\":{\"message\":\"bad temperature\",\"type\":\"invalid_request_error\"}}\n\n"))
	})
	gw := startGateway(t, "", gatewaySite("", clientBlock("sse-errors", base, "match keyword gpt")))
	status, h, body := gw.post("/v1/chat/completions", "application/json",
		`{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if status != 400 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q, want 400 application/json", status, h.Get("Content-Type"))
	}
	if !strings.Contains(body, `"message":"bad temperature"`) || strings.Contains(body, "data:") {
		t.Errorf("body = %s, want the upstream's JSON error without SSE framing", body)
	}
}

func TestBaseURLQueryIsKept(t *testing.T) {
	base, lastURI := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"object":"chat.completion","choices":[]}`))
	})
	gw := startGateway(t, "", gatewaySite("", clientBlock("azure", base+"?api-version=2024-02-01", "match keyword gpt")))
	if status, _, body := gw.post("/v1/chat/completions?trace=1", "application/json", `{"model":"gpt-4","messages":[]}`); status != 200 {
		t.Fatalf("chat: %d %s", status, body)
	}
	if got := lastURI(); got != "/v1/chat/completions?api-version=2024-02-01&trace=1" {
		t.Errorf("upstream request URI = %q, want the base's query then the caller's", got)
	}
}

func TestPlaceholdersInDeferredHeaders(t *testing.T) {
	up := fake(t, "alpha")
	gw := startGateway(t, "", "\theader >X-Routed {http.llm.backend}/{http.llm.model}\n"+
		gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt")))
	status, h, body := gw.chat("gpt-4")
	if status != 200 {
		t.Fatalf("chat: %d %s", status, body)
	}
	if got := h.Get("X-Routed"); got != "alpha/gpt-4" {
		t.Errorf("X-Routed = %q, want alpha/gpt-4", got)
	}
}

func TestClientNeedingImpossibleEditIsSkipped(t *testing.T) {
	capped, plain := fake(t, "capped"), fake(t, "plain")
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("capped", capped.URL(), "match keyword gpt", "max_tokens 100"),
		clientBlock("plain", plain.URL(), "match keyword gpt")))
	status, h, body := gw.post("/v1/chat/completions", "application/json",
		`{"model":"gpt-4","max_tokens":"lots","messages":[{"role":"user","content":"hi"}]}`)
	if status != 200 || h.Get("X-LLM-Gateway-Tried") != "plain" {
		t.Errorf("got %d tried=%q %s, want plain to serve (capped cannot edit max_tokens and is not tried)", status, h.Get("X-LLM-Gateway-Tried"), body)
	}
	if capped.Requests() != 0 {
		t.Errorf("capped saw %d requests", capped.Requests())
	}
}

func TestUploadWithoutModelGoesToNextHandler(t *testing.T) {
	up := fake(t, "alpha")
	gw := startGateway(t, "", "\troute {\n"+gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt"))+"\trespond \"next handler\" 299\n\t}\n")
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "batch.jsonl")
	fw.Write([]byte("{}\n"))
	mw.Close()
	status, _, body := gw.post("/v1/files", mw.FormDataContentType(), form.String())
	if status != 299 || body != "next handler" {
		t.Errorf("POST /v1/files without a model = %d %q, want the next handler", status, body)
	}
}
