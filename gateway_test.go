package llmgateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// clientBlock renders one client block of the Caddyfile.
func clientBlock(name, baseURL string, lines ...string) string {
	return fmt.Sprintf("\t\tclient %s {\n\t\t\tbase_url %s\n\t\t\t%s\n\t\t}\n", name, baseURL, strings.Join(lines, "\n\t\t\t"))
}

// gatewaySite renders an llm_gateway block with options and client blocks.
func gatewaySite(options string, clients ...string) string {
	return "\tllm_gateway {\n" + options + "\n" + strings.Join(clients, "") + "\t}\n"
}

func TestEndpointsWithOfficialClient(t *testing.T) {
	up := fake(t, "alpha")
	up.Update(func(s *fakeupstream.Settings) { s.Models = []string{"gpt-4o", "gpt-4o-mini", "unrelated-model"} })
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("alpha", up.URL(), "match keyword gpt", "match exact whisper-1 text-embedding-3-small davinci-002")))
	client := gw.client()
	ctx := context.Background()

	var resp *http.Response
	chat, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	}, option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if got := chat.Choices[0].Message.Content; got != "hello from alpha" {
		t.Errorf("chat content = %q", got)
	}
	if chat.Usage.TotalTokens == 0 {
		t.Errorf("chat usage missing: %+v", chat.Usage)
	}
	if b := resp.Header.Get("X-LLM-Gateway-Backend"); b != "alpha" {
		t.Errorf("X-LLM-Gateway-Backend = %q", b)
	}
	if tried := resp.Header.Get("X-LLM-Gateway-Tried"); tried != "alpha" {
		t.Errorf("X-LLM-Gateway-Tried = %q", tried)
	}
	if auth := up.LastRequest().Header.Get("Authorization"); auth != "Bearer sk-caller-key-123456" {
		t.Errorf("caller key not passed through: Authorization = %q", auth)
	}

	comp, err := client.Completions.New(ctx, openai.CompletionNewParams{
		Model:  "davinci-002",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon")},
	})
	if err != nil {
		t.Fatalf("completions: %v", err)
	}
	if len(comp.Choices) == 0 || comp.Choices[0].Text == "" {
		t.Errorf("completion has no text: %+v", comp)
	}

	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "text-embedding-3-small",
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("embed me")},
	})
	if err != nil {
		t.Fatalf("embeddings: %v", err)
	}
	if len(emb.Data) == 0 || len(emb.Data[0].Embedding) == 0 {
		t.Errorf("embedding empty: %+v", emb)
	}

	tr, err := client.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{
		Model: "whisper-1",
		File:  openai.File(bytes.NewReader([]byte("RIFF....WAVEfmt fake audio")), "speech.wav", "audio/wav"),
	})
	if err != nil {
		t.Fatalf("transcription: %v", err)
	}
	if tr.Text == "" {
		t.Errorf("transcription text empty")
	}
	if p := up.LastRequest().Path; p != "/v1/audio/transcriptions" {
		t.Errorf("upstream path = %q", p)
	}

	page, err := client.Models.List(ctx)
	if err != nil {
		t.Fatalf("models: %v", err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	want := []string{"gpt-4o", "gpt-4o-mini", "whisper-1", "text-embedding-3-small", "davinci-002"}
	if strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Errorf("models = %v, want %v (upstream list filtered by match rules, then exact names)", ids, want)
	}
}

func TestModelsCacheAndHealth(t *testing.T) {
	up := fake(t, "alpha")
	up.Update(func(s *fakeupstream.Settings) { s.Models = []string{"m-1"} })
	gw := startGateway(t, "", gatewaySite("models_cache_ttl 1h",
		clientBlock("alpha", up.URL(), "match keyword m-")))
	for i := 0; i < 3; i++ {
		status, _, body := gw.get("/v1/models")
		if status != 200 || !strings.Contains(body, `"m-1"`) {
			t.Fatalf("models: %d %s", status, body)
		}
	}
	if n := up.Count("/v1/models"); n != 1 {
		t.Errorf("upstream /models fetched %d times, want 1 (cached)", n)
	}
	status, _, body := gw.get("/health")
	if status != 200 || body != `{"status":"ok","clients":{"alpha":{"state":"closed"}}}` {
		t.Errorf("health: %d %s", status, body)
	}
}

func TestFallThroughToNextHandler(t *testing.T) {
	up := fake(t, "alpha")
	// respond sorts before llm_gateway in Caddy's directive order; a route keeps them in order.
	gw := startGateway(t, "", "\troute {\n"+gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt"))+"\trespond \"next handler\" 299\n\t}\n")
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/", ""},
		{"GET", "/v1/other", ""},
		{"POST", "/v1/unknown", `{"no_model":true}`},
		{"POST", "/static/file", `{"model":"gpt-4"}`},
	} {
		req, _ := http.NewRequest(tc.method, gw.URL+tc.path, strings.NewReader(tc.body))
		status, _, body := gw.do(req)
		if status != 299 || body != "next handler" {
			t.Errorf("%s %s = %d %q, want the next handler", tc.method, tc.path, status, body)
		}
	}
	if n := up.Requests(); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
	// A generic /v1/ path with a model is routed.
	status, _, body := gw.post("/v1/images/generations", "application/json", `{"model":"gpt-image","prompt":"cat"}`)
	if status != 200 || up.LastRequest().Path != "/v1/images/generations" {
		t.Errorf("generic route: %d %s, upstream path %q", status, body, up.LastRequest().Path)
	}
}

func TestWeightedRandomShares(t *testing.T) {
	a, b := fake(t, "a"), fake(t, "b")
	gw := startGateway(t, "", gatewaySite("strategy random",
		clientBlock("a", a.URL(), "match keyword gpt", "priority 3"),
		clientBlock("b", b.URL(), "match keyword gpt", "priority 1")))
	const n = 600
	for i := 0; i < n; i++ {
		if status, _, body := gw.chat("gpt-4"); status != 200 {
			t.Fatalf("chat: %d %s", status, body)
		}
	}
	share := float64(a.Requests()) / n
	// Expected 0.75; the binomial standard deviation at n=600 is 0.018, so ±0.07 is ~4σ.
	if share < 0.68 || share > 0.82 {
		t.Errorf("client a got %.3f of %d requests, want 0.75±0.07", share, n)
	}
	if a.Requests()+b.Requests() != n {
		t.Errorf("requests a=%d b=%d, want %d in all", a.Requests(), b.Requests(), n)
	}
}

func TestDeterministicAffinity(t *testing.T) {
	a, b, c := fake(t, "a"), fake(t, "b"), fake(t, "c")
	gw := startGateway(t, "", gatewaySite("strategy deterministic",
		clientBlock("a", a.URL(), "match keyword gpt", "priority 1"),
		clientBlock("b", b.URL(), "match keyword gpt", "priority 1"),
		clientBlock("c", c.URL(), "match keyword gpt", "priority 1")))
	backends := map[string]bool{}
	for p := 0; p < 30; p++ {
		prompt := fmt.Sprintf("conversation number %d about something", p)
		body := `{"model":"gpt-4","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"` + prompt + `"}]}`
		var first string
		for i := 0; i < 5; i++ {
			status, h, resp := gw.post("/v1/chat/completions", "application/json", body)
			if status != 200 {
				t.Fatalf("chat: %d %s", status, resp)
			}
			got := h.Get("X-LLM-Gateway-Backend")
			if i == 0 {
				first = got
			} else if got != first {
				t.Fatalf("prompt %d went to %s then %s: affinity broken", p, first, got)
			}
		}
		backends[first] = true
	}
	if len(backends) < 2 {
		t.Errorf("30 prompts all went to %v: keys do not spread", backends)
	}
}

func TestLeastConnections(t *testing.T) {
	slow, fast := fake(t, "slow"), fake(t, "fast")
	release := make(chan struct{})
	slow.Update(func(s *fakeupstream.Settings) { s.Delay = 20 * time.Second })
	gw := startGateway(t, "", gatewaySite("strategy least_connections",
		clientBlock("slow", slow.URL(), "match keyword gpt", "priority 1"),
		clientBlock("fast", fast.URL(), "match keyword gpt", "priority 1")))

	// With both idle, config order decides: the first request goes to the slow client and
	// stays in flight there.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gw.URL+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4","messages":[{"role":"user","content":"slow"}]}`))
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
		close(release)
	}()
	waitCtx, waitCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer waitCancel()
	if err := slow.WaitInFlight(waitCtx, 1); err != nil {
		t.Fatalf("slow upstream never got its request: %v", err)
	}
	for i := 0; i < 10; i++ {
		status, h, body := gw.chat("gpt-4")
		if status != 200 || h.Get("X-LLM-Gateway-Backend") != "fast" {
			t.Fatalf("request %d: %d backend %q %s, want fast (slow has one in flight)", i, status, h.Get("X-LLM-Gateway-Backend"), body)
		}
	}
	cancel()
	<-release
	wg.Wait()
}

func TestFailover(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) string // returns the first client's base URL
	}{
		{"503", func(t *testing.T) string {
			s := fake(t, "first")
			s.Update(func(st *fakeupstream.Settings) { st.Status = 503 })
			return s.URL()
		}},
		{"429", func(t *testing.T) string {
			s := fake(t, "first")
			s.Update(func(st *fakeupstream.Settings) { st.Status = 429 })
			return s.URL()
		}},
		{"refused", func(t *testing.T) string { return refusedURL(t) }},
		{"hangup", func(t *testing.T) string {
			s := fake(t, "first")
			s.Update(func(st *fakeupstream.Settings) { st.Hangup = true })
			return s.URL()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			firstURL := tc.setup(t)
			second := fake(t, "second")
			gw := startGateway(t, "", gatewaySite("",
				clientBlock("first", firstURL, "match keyword gpt"),
				clientBlock("second", second.URL(), "match keyword gpt")))
			status, h, body := gw.chat("gpt-4")
			if status != 200 || !strings.Contains(body, "hello from second") {
				t.Fatalf("got %d %s, want the second client's answer", status, body)
			}
			if tried := h.Get("X-LLM-Gateway-Tried"); tried != "first,second" {
				t.Errorf("X-LLM-Gateway-Tried = %q, want first,second", tried)
			}
			if b := h.Get("X-LLM-Gateway-Backend"); b != "second" {
				t.Errorf("X-LLM-Gateway-Backend = %q", b)
			}
		})
	}
}

func TestFinalStatusesAreNotRetried(t *testing.T) {
	for _, status := range []int{400, 401} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			first, second := fake(t, "first"), fake(t, "second")
			first.Update(func(s *fakeupstream.Settings) { s.Status = status })
			gw := startGateway(t, "", gatewaySite("",
				clientBlock("first", first.URL(), "match keyword gpt"),
				clientBlock("second", second.URL(), "match keyword gpt")))
			got, h, body := gw.chat("gpt-4")
			if got != status || !strings.Contains(body, "fake first status") {
				t.Errorf("got %d %s, want the upstream's %d as sent", got, body, status)
			}
			if second.Requests() != 0 {
				t.Errorf("second client was tried after a final %d", status)
			}
			if h.Get("X-LLM-Gateway-Tried") != "first" {
				t.Errorf("tried = %q", h.Get("X-LLM-Gateway-Tried"))
			}
		})
	}
}

func TestModelFallback(t *testing.T) {
	primary, backup, named := fake(t, "primary"), fake(t, "backup"), fake(t, "named")
	primary.Update(func(s *fakeupstream.Settings) { s.Status = 500 })
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("primary", primary.URL(), "match exact gpt-4", "fallback gpt-4-backup"),
		clientBlock("backup", backup.URL(), "match exact gpt-4-backup"),
		clientBlock("named", named.URL(), "match exact other"),
		clientBlock("to-client", refusedURL(t), "match exact byname", "fallback named")))

	status, h, body := gw.chat("gpt-4")
	if status != 200 || !strings.Contains(body, "hello from backup") {
		t.Fatalf("fallback by model: %d %s", status, body)
	}
	if h.Get("X-LLM-Gateway-Tried") != "primary,backup" {
		t.Errorf("tried = %q", h.Get("X-LLM-Gateway-Tried"))
	}
	var sent struct{ Model string }
	_ = json.Unmarshal(backup.LastRequest().Body, &sent)
	if sent.Model != "gpt-4-backup" {
		t.Errorf("backup received model %q, want the fallback model", sent.Model)
	}

	status, h, body = gw.chat("byname")
	if status != 200 || !strings.Contains(body, "hello from named") || h.Get("X-LLM-Gateway-Tried") != "to-client,named" {
		t.Fatalf("fallback by client name: %d %s tried=%q", status, body, h.Get("X-LLM-Gateway-Tried"))
	}
}

func TestFallbackCycleEnds(t *testing.T) {
	a, b := fake(t, "a"), fake(t, "b")
	a.Update(func(s *fakeupstream.Settings) { s.Status = 502 })
	b.Update(func(s *fakeupstream.Settings) { s.Status = 502 })
	gw := startGateway(t, "", gatewaySite("max_fallback_hops 10\n\t\thealth_check {\n\t\t\tfailure_threshold 100\n\t\t}",
		clientBlock("a", a.URL(), "match exact model-a", "fallback model-b"),
		clientBlock("b", b.URL(), "match exact model-b", "fallback model-a")))
	done := make(chan struct{})
	var status int
	var h http.Header
	var body string
	go func() {
		defer close(done)
		status, h, body = gw.chat("model-a")
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("fallback cycle did not end")
	}
	if status != 502 || !strings.Contains(body, "fake b status 502") {
		t.Errorf("got %d %s, want the last upstream's 502", status, body)
	}
	if h.Get("X-LLM-Gateway-Tried") != "a,b" {
		t.Errorf("tried = %q, want a,b (each once)", h.Get("X-LLM-Gateway-Tried"))
	}
}

func TestBreakerOpensProbesAndCloses(t *testing.T) {
	up, other := fake(t, "flaky"), fake(t, "other")
	up.Update(func(s *fakeupstream.Settings) { s.Status = 500 })
	gw := startGateway(t, "", gatewaySite("health_check {\n\t\t\tfailure_threshold 2\n\t\t\tcooldown 300ms\n\t\t\tmax_cooldown 1s\n\t\t\tbackoff 2\n\t\t}",
		clientBlock("flaky", up.URL(), "match exact m"),
		clientBlock("other", other.URL(), "match exact n")))
	health := func() string {
		_, _, body := gw.get("/health")
		var v struct {
			Clients map[string]struct{ State string }
		}
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("health body %q: %v", body, err)
		}
		return v.Clients["flaky"].State
	}

	for i := 0; i < 2; i++ {
		if status, _, _ := gw.chat("m"); status != 500 {
			t.Fatalf("attempt %d: status %d, want the upstream's 500", i, status)
		}
	}
	if s := health(); s != "open" {
		t.Fatalf("after 2 failures state = %s, want open", s)
	}
	status, h, body := gw.chat("m")
	if status != 503 || h.Get("Retry-After") == "" || !strings.Contains(body, "cooling down") {
		t.Fatalf("while open: %d Retry-After=%q %s, want 503 with Retry-After", status, h.Get("Retry-After"), body)
	}
	if n := up.Requests(); n != 2 {
		t.Errorf("upstream saw %d requests while open, want 2", n)
	}

	// After the cooldown the breaker lets one probe through.
	deadline := time.Now().Add(5 * time.Second)
	for health() != "half_open" {
		if time.Now().After(deadline) {
			t.Fatal("breaker never became half_open")
		}
		time.Sleep(20 * time.Millisecond) // waiting out a cooldown is waiting for time itself
	}
	up.Update(func(s *fakeupstream.Settings) { s.Status = 0 })
	if status, _, body := gw.chat("m"); status != 200 {
		t.Fatalf("probe: %d %s", status, body)
	}
	if s := health(); s != "closed" {
		t.Errorf("after a successful probe state = %s, want closed", s)
	}
}
