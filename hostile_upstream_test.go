package llmgateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
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

// bigAnswer is a non-stream chat answer of size bytes whose usage object comes last, as
// OpenAI's does.
func bigAnswer(size int) []byte {
	const head = `{"id":"big","object":"chat.completion","model":"big-model","choices":[{"index":0,"message":{"role":"assistant","content":"`
	const tail = `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`
	b := make([]byte, 0, size)
	b = append(b, head...)
	for len(b) < size-len(tail) {
		b = append(b, "abcdefghijklmnopqrstuvwxyz"[len(b)%26])
	}
	return append(b, tail...)
}

// gatedUpstream answers every call with answer: it sends the first split bytes, then waits until
// the test closes gate (or the call or test ends) before it sends the rest. With withLength it
// declares the answer's Content-Length, else the answer is chunked.
func gatedUpstream(t *testing.T, answer []byte, split int, withLength bool, gate <-chan struct{}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if withLength {
			w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		}
		if _, err := w.Write(answer[:split]); err != nil {
			return
		}
		_ = http.NewResponseController(w).Flush()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		case <-done:
			return
		}
		_, _ = w.Write(answer[split:])
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		close(done)
		srv.Close()
	})
	return "http://" + ln.Addr().String() + "/v1"
}

// TestLargeAnswerRelayedPastBufferBound checks that a non-stream answer larger than
// max_buffered_response is relayed as it arrives instead of being held whole: the upstream sends
// one byte more than the bound and then waits until the caller has received part of the answer,
// which only a gateway that stopped buffering at the bound lets happen. The caller gets the
// answer byte for byte (untransformed: no special_prefix), the access log still has its usage,
// read from the answer's end, and says the answer was passed through. An answer within the bound
// is still transformed.
func TestLargeAnswerRelayedPastBufferBound(t *testing.T) {
	for _, tc := range []struct {
		name       string
		option     string
		bound      int
		withLength bool
	}{
		{"default bound", "", 4 << 20, false},
		{"configured bound", "\t\tmax_buffered_response 64KiB", 64 << 10, false},
		{"configured bound, Content-Length over it", "\t\tmax_buffered_response 64KiB", 64 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer := bigAnswer(tc.bound + 256<<10)
			split := tc.bound + 1
			if tc.withLength {
				// The declared length alone must start the relay: a quarter of the bound (more
				// than the server's write buffer) must reach the caller.
				split = tc.bound / 4
			}
			gate := make(chan struct{})
			big := gatedUpstream(t, answer, split, tc.withLength, gate)
			small := fake(t, "small")
			logPath := filepath.Join(t.TempDir(), "access.log")
			gw := startGateway(t, "", fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}\n", logPath)+
				gatewaySite(tc.option,
					clientBlock("big", big, "match exact big-model", "special_prefix PFX:"),
					clientBlock("small", small.URL(), "match exact small-model", "special_prefix PFX:")))

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, gw.URL+"/v1/chat/completions",
				strings.NewReader(`{"model":"big-model","messages":[{"role":"user","content":"hi"}]}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("the gateway sent no headers while the upstream had sent %d bytes of a %d-byte answer: %v", split, len(answer), err)
			}
			defer resp.Body.Close()
			first := make([]byte, 1)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("reading the first byte: %v", err)
			}
			close(gate)
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			got := append(first, rest...)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(got, answer) {
				t.Fatalf("answer: status %d, %d bytes; want 200 and the upstream's %d bytes unchanged", resp.StatusCode, len(got), len(answer))
			}

			var e accessLogEntry
			eventually(t, "access log line", func() (bool, string) {
				var ok bool
				e, ok = findAccessLog(t, logPath, "/v1/chat/completions")
				return ok, "no access log line for the call"
			})
			if e.LLM == nil || e.LLM.TotalTokens != 12 || e.LLM.PromptTokens != 5 {
				t.Errorf("access log llm = %+v; want the answer's usage (5 prompt, 12 total)", e.LLM)
			}
			if data, _ := os.ReadFile(logPath); !bytes.Contains(data, []byte("max_buffered_response")) {
				t.Errorf("access log does not say the answer was relayed past max_buffered_response:\n%s", data)
			}

			status, _, body := gw.chat("small-model")
			if status != http.StatusOK || !strings.Contains(body, `"content":"PFX:hello from small"`) {
				t.Errorf("small answer: %d %s; want it transformed (special_prefix)", status, body)
			}
		})
	}
}
