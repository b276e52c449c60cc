package llmgateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// getWithKey sends GET path with the caller credential key as a bearer token.
func (g *gateway) getWithKey(path, key string) (int, http.Header, string) {
	g.t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.URL+path, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	return g.do(req)
}

// TestUpstreamURLKeepsBaseQuery checks that every upstream call is built by one URL builder: a
// base_url with a query (Azure's api-version) reaches the upstream as base path + endpoint path
// with the query intact, for /v1/models as for chat, and a caller's query follows the base's.
func TestUpstreamURLKeepsBaseQuery(t *testing.T) {
	up := fake(t, "azure")
	const query = "api-version=2024-02-01"
	gw := startGateway(t, "", gatewaySite("\t\tmodels_cache_ttl 0",
		clientBlock("azure", up.URL()+"?"+query, "match keyword azure")))

	status, _, body := gw.get("/v1/models")
	if status != http.StatusOK || !strings.Contains(body, `"azure-model"`) {
		t.Errorf("GET /v1/models: %d %s; want the upstream's azure-model listed", status, body)
	}
	if last := up.LastRequest(); last.Path != "/v1/models" || last.RawQuery != query {
		t.Errorf("models call reached the upstream as path %q query %q; want /v1/models with %q", last.Path, last.RawQuery, query)
	}

	for _, tc := range []struct{ path, wantQuery string }{
		{"/v1/chat/completions", query},
		{"/v1/chat/completions?trace=on", query + "&trace=on"},
	} {
		status, _, body := gw.post(tc.path, "application/json", `{"model":"azure-model","messages":[{"role":"user","content":"hi"}]}`)
		if status != http.StatusOK {
			t.Errorf("POST %s: %d %s", tc.path, status, body)
		}
		if last := up.LastRequest(); last.Path != "/v1/chat/completions" || last.RawQuery != tc.wantQuery {
			t.Errorf("POST %s reached the upstream as path %q query %q; want /v1/chat/completions with %q",
				tc.path, last.Path, last.RawQuery, tc.wantQuery)
		}
	}
}

// TestModelsCacheKeyedOnSentCredential checks that /v1/models answers are cached on the
// credential each upstream call sends: callers with distinct (junk) keys share one fetch from a
// client that has its own api_key, while a client that passes the caller's key through is asked
// once per caller, so no caller is ever served a list fetched with another caller's key.
func TestModelsCacheKeyedOnSentCredential(t *testing.T) {
	own, pass := fake(t, "mc-own"), fake(t, "mc-pass")
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("mc-own", own.URL(), "api_key sk-operator-key", "match keyword mc-own"),
		clientBlock("mc-pass", pass.URL(), "match keyword mc-pass")))

	const callers = 20
	for i := range callers {
		key := fmt.Sprintf("junk-key-%d", i)
		status, _, body := gw.getWithKey("/v1/models", key)
		if status != http.StatusOK || !strings.Contains(body, `"mc-own-model"`) || !strings.Contains(body, `"mc-pass-model"`) {
			t.Fatalf("GET /v1/models as %s: %d %s; want both clients' models", key, status, body)
		}
		if got := pass.LastRequest().Header.Get("Authorization"); got != "Bearer "+key {
			t.Errorf("pass-through client got Authorization %q; want the caller's %q", got, "Bearer "+key)
		}
	}
	if n := own.Count("/v1/models"); n != 1 {
		t.Errorf("client with its own key was asked for /models %d times by %d callers; want 1", n, callers)
	}
	if got := own.LastRequest().Header.Get("Authorization"); got != "Bearer sk-operator-key" {
		t.Errorf("own-key client got Authorization %q", got)
	}
	if n := pass.Count("/v1/models"); n != callers {
		t.Errorf("pass-through client was asked for /models %d times by %d callers; want one per caller", n, callers)
	}
}

// wantOpenAIError checks that body is an OpenAI-shaped error with the given code.
func wantOpenAIError(t *testing.T, what string, status int, body string, wantStatus int, wantCode string) {
	t.Helper()
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if status != wantStatus || json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != wantCode || e.Error.Message == "" {
		t.Errorf("%s: %d %s; want %d with an OpenAI error coded %s", what, status, body, wantStatus, wantCode)
	}
}

// TestNonStreamResponseHeaderTimeout checks that a non-stream upstream that accepts the call and
// never answers is timed out after response_header_timeout: the call fails over to the next
// client, the breaker counts the failure, and with no other client the caller gets a 504.
func TestNonStreamResponseHeaderTimeout(t *testing.T) {
	hang, good := fake(t, "rh-hang"), fake(t, "rh-good")
	hang.Update(func(s *fakeupstream.Settings) { s.Delay = time.Hour })
	gw := startGateway(t, "", gatewaySite("\t\tresponse_header_timeout 200ms\n\t\thealth_check {\n\t\t\tfailure_threshold 1\n\t\t}",
		clientBlock("rh-hang", hang.URL(), "match exact both-model"),
		clientBlock("rh-good", good.URL(), "match exact both-model"),
		clientBlock("rh-alone", hang.URL(), "match exact alone-model")))

	// No priorities: clients are tried in config order, the hanging one first.
	status, h, body := gw.chat("both-model")
	if status != http.StatusOK || !strings.Contains(body, "hello from rh-good") {
		t.Fatalf("chat: %d %s; want the second client's answer", status, body)
	}
	if tried := h.Get("X-LLM-Gateway-Tried"); tried != "rh-hang,rh-good" {
		t.Errorf("X-LLM-Gateway-Tried = %q; want rh-hang,rh-good", tried)
	}
	if _, _, health := gw.get("/health"); !strings.Contains(health, `"rh-hang":{"state":"open"}`) {
		t.Errorf("health %s; want rh-hang's breaker open after its timeout", health)
	}

	status, _, body = gw.chat("alone-model")
	wantOpenAIError(t, "chat with a single hanging client", status, body, http.StatusGatewayTimeout, "upstream_timeout")
	if !strings.Contains(body, "response_header_timeout") {
		t.Errorf("504 body %s does not name response_header_timeout", body)
	}

	// The gateway hung up on both attempts: the upstream saw them cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hang.WaitCancelled(ctx, 2); err != nil {
		t.Error(err)
	}
}

// stallingUpstream answers every request with 200 headers and the start of a JSON body, then
// sends nothing more until the caller goes away or the test ends.
func stallingUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"stalled","object":"chat.completion","choices":[`)
		_ = http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		close(done)
		srv.Close()
	})
	return "http://" + ln.Addr().String() + "/v1"
}

// TestNonStreamBodyStallTimesOut checks that a non-stream answer whose body stops arriving is
// timed out too: nothing was sent to the caller yet, so the call fails over, or ends in a 504.
func TestNonStreamBodyStallTimesOut(t *testing.T) {
	stall := stallingUpstream(t)
	good := fake(t, "bs-good")
	gw := startGateway(t, "", gatewaySite("\t\tresponse_header_timeout 200ms",
		clientBlock("bs-stall", stall, "match exact both-model"),
		clientBlock("bs-good", good.URL(), "match exact both-model"),
		clientBlock("bs-alone", stall, "match exact alone-model")))

	status, h, body := gw.chat("both-model")
	if status != http.StatusOK || !strings.Contains(body, "hello from bs-good") {
		t.Fatalf("chat: %d %s; want the second client's answer", status, body)
	}
	if tried := h.Get("X-LLM-Gateway-Tried"); tried != "bs-stall,bs-good" {
		t.Errorf("X-LLM-Gateway-Tried = %q; want bs-stall,bs-good", tried)
	}
	status, _, body = gw.chat("alone-model")
	wantOpenAIError(t, "chat with a single stalling client", status, body, http.StatusGatewayTimeout, "upstream_timeout")
}
