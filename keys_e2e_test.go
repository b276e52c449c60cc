package llmgateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	dto "github.com/prometheus/client_model/go"

	llmgateway "github.com/llmgw/caddy-llm-gateway"
	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
	"github.com/llmgw/caddy-llm-gateway/keys"
)

// These tests check gateway keys (SPEC §12) end to end, with the official OpenAI SDK raising
// the typed errors. Rate-limit windows are crossed by moving an injected clock
// (llmgateway.UseKeyClock), never by waiting a minute.

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := new(fakeClock)
	c.ns.Store(time.Date(2026, 11, 15, 12, 0, 0, 0, time.Local).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Add(d time.Duration)     { c.ns.Add(int64(d)) }
func (c *fakeClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) Since(t time.Time) int64 { return c.ns.Load() - t.UnixNano() }

// useClock installs a fake clock for the gateway keys' counters for the test's duration.
func useClock(t *testing.T) *fakeClock {
	t.Helper()
	c := newFakeClock()
	release, err := llmgateway.UseKeyClock(c.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return c
}

// keysBlock renders a keys block of key blocks.
func keysBlock(lines ...string) string {
	return "\t\tkeys {\n\t\t\t" + strings.Join(lines, "\n\t\t\t") + "\n\t\t}\n"
}

// keyBlock renders one key block.
func keyBlock(name string, lines ...string) string {
	return "key " + name + " {\n\t\t\t\t" + strings.Join(lines, "\n\t\t\t\t") + "\n\t\t\t}"
}

// apiError returns err as the SDK's typed error, failing the test when it is not one.
func apiError(t *testing.T, err error, status int, typ, code string) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want *openai.Error", err, err)
	}
	if e.StatusCode != status || e.Type != typ || e.Code != code {
		t.Fatalf("error status %d type %q code %q, want %d %q %q (%s)", e.StatusCode, e.Type, e.Code, status, typ, code, e.RawJSON())
	}
	return e
}

func TestKeysErrorsWithOfficialClient(t *testing.T) {
	clock := useClock(t)
	up := fake(t, "k-up")
	up.Update(func(s *fakeupstream.Settings) {
		s.Usage = fakeupstream.Usage{PromptTokens: 60, CompletionTokens: 40}
		s.Headers = map[string]string{"X-Ratelimit-Limit-Tokens": "999", "X-Ratelimit-Limit-Requests": "777"}
	})
	gw := startGateway(t, "", "\tmetrics /metrics\n\theader >X-Key {http.llm.key}\n"+gatewaySite(keysBlock(
		keyBlock("team-a", "secret sk-team-a-0123456789", "models gpt-4o*", "rpm 2"),
		keyBlock("team-b", "hash "+keys.FormatHash("sk-team-b-0123456789"), "budget 150 tokens monthly"),
		keyBlock("old", "secret sk-old-0123456789", "expires 2026-01-01"),
		keyBlock("hdr", "secret sk-hdr-0123456789"),
	), clientBlock("k-up", up.URL(), "match keyword gpt", "match exact o3")))
	ctx := context.Background()

	// Missing, unknown and expired keys: 401 invalid_request_error / invalid_api_key.
	code, _, body := gw.chat("gpt-4o")
	if code != http.StatusUnauthorized || !strings.Contains(body, `"code":"invalid_api_key"`) || !strings.Contains(body, `"type":"invalid_request_error"`) {
		t.Fatalf("no key: %d %s", code, body)
	}
	for _, key := range []string{"sk-nobody-0123456789", "sk-old-0123456789"} {
		c := gw.client(option.WithAPIKey(key))
		_, err := c.Chat.Completions.New(ctx, chatParams("gpt-4o"))
		apiError(t, err, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key")
	}
	if n := up.Requests(); n != 0 {
		t.Fatalf("refused calls reached the upstream %d times", n)
	}

	// A model outside the key's globs: 403 permission_error / model_not_allowed.
	a := gw.client(option.WithAPIKey("sk-team-a-0123456789"))
	_, err := a.Chat.Completions.New(ctx, chatParams("o3"))
	apiError(t, err, http.StatusForbidden, "permission_error", "model_not_allowed")

	// Admitted: the gateway key is not forwarded (the client has no api_key of its own), and
	// the x-ratelimit-*-requests headers are the key's, the -tokens ones the upstream's.
	var resp *http.Response
	for i, want := range []string{"1", "0"} {
		if _, err := a.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"), option.WithResponseInto(&resp)); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		h := resp.Header
		if got := h.Get("X-Ratelimit-Limit-Requests"); got != "2" {
			t.Errorf("x-ratelimit-limit-requests = %q, want the key's 2", got)
		}
		if got := h.Get("X-Ratelimit-Remaining-Requests"); got != want {
			t.Errorf("call %d: x-ratelimit-remaining-requests = %q, want %s (the current call counted)", i, got, want)
		}
		if got := h.Get("X-Ratelimit-Reset-Requests"); got != "1m0s" {
			t.Errorf("x-ratelimit-reset-requests = %q, want 1m0s (the clock stands still)", got)
		}
		if got := h.Get("X-Key"); got != "team-a" {
			t.Errorf("{http.llm.key} = %q, want team-a", got)
		}
		if got := h.Get("X-Ratelimit-Limit-Tokens"); got != "999" {
			t.Errorf("x-ratelimit-limit-tokens = %q, want the upstream's 999 (the key has no tpm)", got)
		}
		last := up.LastRequest().Header
		for _, name := range []string{"Authorization", "X-Api-Key", "Api-Key"} {
			if v := last.Get(name); v != "" {
				t.Errorf("upstream got %s: %q; the gateway key must not be forwarded", name, v)
			}
		}
	}

	// Over rpm: 429 rate_limit_exceeded with Retry-After in whole seconds.
	clock.Add(30 * time.Second)
	_, err = a.Chat.Completions.New(ctx, chatParams("gpt-4o"), option.WithResponseInto(&resp))
	e := apiError(t, err, http.StatusTooManyRequests, "requests", "rate_limit_exceeded")
	if ra := e.Response.Header.Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After = %q, want 30", ra)
	}
	if got := e.Response.Header.Get("X-Ratelimit-Remaining-Requests"); got != "0" {
		t.Errorf("429: x-ratelimit-remaining-requests = %q, want 0", got)
	}
	clock.Add(30 * time.Second)
	if _, err := a.Chat.Completions.New(ctx, chatParams("gpt-4o")); err != nil {
		t.Fatalf("after the window moved: %v", err)
	}

	// Metrics carry the key's name (counters are process-wide: at least this test's calls).
	fams := gw.scrape()
	for _, tc := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"caddy_llm_gateway_requests_total", map[string]string{"key": "team-a", "code": "200"}, 3},
		{"caddy_llm_gateway_requests_total", map[string]string{"key": "team-a", "code": "429"}, 1},
		{"caddy_llm_gateway_requests_total", map[string]string{"key": "none", "code": "401"}, 1},
		{"caddy_llm_gateway_tokens_total", map[string]string{"key": "team-a", "type": "prompt"}, 180},
	} {
		if got := seriesSum(fams, tc.name, tc.labels); got < tc.min {
			t.Errorf("%s%v = %v, want at least %v", tc.name, tc.labels, got, tc.min)
		}
	}

	// A spent budget: 429 with type and code insufficient_quota, until the next month.
	b := gw.client(option.WithAPIKey("sk-team-b-0123456789"))
	for i := 0; i < 2; i++ {
		if _, err := b.Chat.Completions.New(ctx, chatParams("gpt-4o")); err != nil {
			t.Fatalf("team-b call %d: %v", i, err)
		}
	}
	_, err = b.Chat.Completions.New(ctx, chatParams("gpt-4o"))
	e = apiError(t, err, http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota")
	if e.Response.Header.Get("Retry-After") != "" {
		t.Error("insufficient_quota carries a Retry-After")
	}
	y, m, _ := clock.Now().Date()
	clock.Set(time.Date(y, m+1, 1, 0, 0, 0, 0, time.Local))
	if _, err := b.Chat.Completions.New(ctx, chatParams("gpt-4o")); err != nil {
		t.Fatalf("team-b next month: %v", err)
	}

	// The Anthropic and Azure SDKs' headers carry keys too.
	for _, h := range []string{"X-Api-Key", "Api-Key"} {
		code, _, body := gw.post("/v1/chat/completions", "application/json", `{"model":"gpt-4o","messages":[]}`, h, "sk-hdr-0123456789")
		if code != http.StatusOK {
			t.Errorf("key in %s: %d %s", h, code, body)
		}
	}
}

// TestKeysSDKRetryHonoursRetryAfter: the SDK's own retry of a 429 succeeds once the window
// frees. The clock moves by the Retry-After the gateway sent whenever the SDK gets a 429, so the
// retry it makes after waiting that long (one real second here) lands in the freed window.
func TestKeysSDKRetryHonoursRetryAfter(t *testing.T) {
	clock := useClock(t)
	up := fake(t, "k-retry")
	gw := startGateway(t, "", gatewaySite(keysBlock(keyBlock("solo", "secret sk-solo-0123456789", "rpm 1")),
		clientBlock("k-retry", up.URL(), "match keyword gpt")))
	ctx := context.Background()
	var attempts, refused atomic.Int32
	moveOn429 := func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		attempts.Add(1)
		resp, err := next(req)
		if err == nil && resp.StatusCode == http.StatusTooManyRequests {
			refused.Add(1)
			secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			clock.Add(time.Duration(secs) * time.Second)
		}
		return resp, err
	}
	c := gw.client(option.WithAPIKey("sk-solo-0123456789"), option.WithMaxRetries(2), option.WithMiddleware(moveOn429))
	if _, err := c.Chat.Completions.New(ctx, chatParams("gpt-4o")); err != nil {
		t.Fatal(err)
	}
	clock.Add(59500 * time.Millisecond) // the window frees in 0.5 s: Retry-After 1
	if _, err := c.Chat.Completions.New(ctx, chatParams("gpt-4o")); err != nil {
		t.Fatalf("the SDK's retry did not succeed: %v", err)
	}
	if a, r := attempts.Load(), refused.Load(); a != 3 || r != 1 {
		t.Fatalf("%d attempts with %d refused, want 3 and 1", a, r)
	}
}

// seriesSum sums the counters of every series of name whose labels include want.
func seriesSum(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	fam := fams[name]
	if fam == nil {
		return 0
	}
next:
	for _, m := range fam.GetMetric() {
		have := make(map[string]string, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		sum += m.GetCounter().GetValue()
	}
	return sum
}

// keyedPost sends a chat call with a gateway key and returns the status; safe from goroutines.
func keyedPost(url, key string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestKeysHammerRPM: 32 callers hammer one key with rpm 600 over a simulated minute: exactly
// 600 are admitted, every other call gets 429, and the next minute admits again.
func TestKeysHammerRPM(t *testing.T) {
	clock := useClock(t)
	up := fake(t, "k-hammer")
	gw := startGateway(t, "", gatewaySite(keysBlock(keyBlock("busy", "secret sk-busy-0123456789", "rpm 600")),
		clientBlock("k-hammer", up.URL(), "match keyword gpt")))
	const callers, each = 32, 32 // 1024 calls, 50 ms of simulated time apart: 51.2 s
	start := clock.Now()
	var ok, limited, other atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				clock.Add(50 * time.Millisecond)
				code, err := keyedPost(gw.URL, "sk-busy-0123456789")
				switch {
				case err != nil:
					t.Error(err)
					return
				case code == http.StatusOK:
					ok.Add(1)
				case code == http.StatusTooManyRequests:
					limited.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if clock.Since(start) >= int64(time.Minute) {
		t.Fatal("the simulated calls spanned more than a minute")
	}
	if ok.Load() != 600 || limited.Load() != callers*each-600 || other.Load() != 0 {
		t.Fatalf("admitted %d, limited %d, other %d; want exactly 600 admitted", ok.Load(), limited.Load(), other.Load())
	}
	clock.Set(start.Add(2 * time.Minute))
	if code, err := keyedPost(gw.URL, "sk-busy-0123456789"); err != nil || code != http.StatusOK {
		t.Fatalf("next minute: %d %v", code, err)
	}
}

// TestKeysConcurrencyAndStreams: an open stream holds its key's concurrency slot until its last
// byte, and its tokens are settled before the handler returns, so the caller's next call sees
// them.
func TestKeysConcurrencyAndStreams(t *testing.T) {
	useClock(t)
	up := fake(t, "k-stream")
	up.Update(func(s *fakeupstream.Settings) {
		s.Chunks = 3
		s.Usage = fakeupstream.Usage{PromptTokens: 70, CompletionTokens: 30}
	})
	gw := startGateway(t, "", gatewaySite(keysBlock(keyBlock("one", "secret sk-one-0123456789", "concurrency 1", "tpm 150")),
		clientBlock("k-stream", up.URL(), "match keyword gpt")))
	c := gw.client(option.WithAPIKey("sk-one-0123456789"))
	ctx := context.Background()

	up.Update(func(s *fakeupstream.Settings) { s.Linger = true }) // the stream stays open
	stream := c.Chat.Completions.NewStreaming(ctx, chatParams("gpt-4o"))
	if !stream.Next() {
		t.Fatalf("stream: %v", stream.Err())
	}
	_, err := c.Chat.Completions.New(ctx, chatParams("gpt-4o"))
	apiError(t, err, http.StatusTooManyRequests, "requests", "rate_limit_exceeded")
	stream.Close()
	up.Update(func(s *fakeupstream.Settings) { s.Linger = false })

	// The stream's call ends once the caller left and releases the slot; the usage it had
	// sent (100 tokens) is settled. The next call is admitted at 100 < 150 and brings the
	// window to 200, so the one after is refused.
	eventually(t, "the stream's slot to be released", func() (bool, string) {
		_, err := c.Chat.Completions.New(ctx, chatParams("gpt-4o"))
		return err == nil, fmt.Sprint(err)
	})
	var resp *http.Response
	_, err = c.Chat.Completions.New(ctx, chatParams("gpt-4o"), option.WithResponseInto(&resp))
	e := apiError(t, err, http.StatusTooManyRequests, "tokens", "rate_limit_exceeded")
	h := e.Response.Header
	if h.Get("X-Ratelimit-Limit-Tokens") != "150" || h.Get("X-Ratelimit-Remaining-Tokens") != "0" || h.Get("Retry-After") != "60" {
		t.Errorf("tokens refusal headers: limit %q remaining %q retry-after %q", h.Get("X-Ratelimit-Limit-Tokens"), h.Get("X-Ratelimit-Remaining-Tokens"), h.Get("Retry-After"))
	}
}

// TestKeysFileReloadAndModels: keys of a watched keys file and inline keys combine; an invalid
// edit is logged with file and line and keeps the previous keys; counters survive a caddy reload
// and a keys-file edit, whose changed limit applies to them at once; /v1/models lists only the
// key's models.
func TestKeysFileReloadAndModels(t *testing.T) {
	useClock(t)
	up := fake(t, "k-file")
	up.Update(func(s *fakeupstream.Settings) { s.Models = []string{"gpt-4o", "gpt-4o-mini", "o3"} })
	dir := t.TempDir()
	file := filepath.Join(dir, "keys.yaml")
	logPath := filepath.Join(dir, "caddy.log")
	writeFileAtomic(t, file, "keys:\n  - name: filed\n    secret: sk-filed-0123456789\n    models: [gpt-4o-mini]\n    rpm: 1\n")
	globals := "\tlog {\n\t\toutput file " + logPath + "\n\t\tformat json\n\t}"
	site := gatewaySite(keysBlock("file "+file, keyBlock("inline", "secret sk-inline-0123456789", "models gpt-4o o3")),
		clientBlock("k-file", up.URL(), "match keyword gpt", "match exact o3"))
	gw := startGateway(t, globals, site)
	ctx := context.Background()
	filed := gw.client(option.WithAPIKey("sk-filed-0123456789"))
	inline := gw.client(option.WithAPIKey("sk-inline-0123456789"))

	models := func(c openai.Client) string {
		page, err := c.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		return strings.Join(ids, " ")
	}
	if got := models(filed); got != "gpt-4o-mini" {
		t.Errorf("filed's models: %q", got)
	}
	if got := models(inline); got != "gpt-4o o3" {
		t.Errorf("inline's models: %q", got)
	}
	if code, _, _ := gw.get("/v1/models"); code != http.StatusUnauthorized {
		t.Errorf("/v1/models without a key: %d", code)
	}
	if auth := up.LastRequest().Header.Get("Authorization"); auth != "" {
		t.Errorf("/models upstream got Authorization %q: the gateway key must not be forwarded", auth)
	}

	if _, err := filed.Chat.Completions.New(ctx, chatParams("gpt-4o-mini")); err != nil {
		t.Fatal(err)
	}
	// Counters belong to the key's name: a reload keeps the window.
	gw.reload(globals, site, true)
	_, err := filed.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"))
	apiError(t, err, http.StatusTooManyRequests, "requests", "rate_limit_exceeded")

	// An invalid edit (here a name the inline keys use) is logged with file and line; the
	// running keys keep working.
	writeFileAtomic(t, file, "keys:\n  - name: filed\n    secret: sk-filed-0123456789\n    rpm: lots\n")
	var logged string
	eventually(t, "the rejected keys file to be logged", func() (bool, string) {
		data, _ := os.ReadFile(logPath)
		if i := strings.Index(string(data), "keys file rejected"); i >= 0 {
			logged = string(data[i:])
			logged = logged[:strings.IndexByte(logged, '\n')]
			return true, ""
		}
		return false, "no log line"
	})
	if !strings.Contains(logged, file+":4") || !strings.Contains(logged, "key filed") || !strings.Contains(logged, "rpm") {
		t.Errorf("log line lacks file:line, key or field: %s", logged)
	}
	_, err = filed.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"))
	apiError(t, err, http.StatusTooManyRequests, "requests", "rate_limit_exceeded")
	if _, err := inline.Chat.Completions.New(ctx, chatParams("o3")); err != nil {
		t.Fatal(err)
	}

	// A valid edit applies: the raised limit counts the call already in the window.
	writeFileAtomic(t, file, "keys:\n  - name: filed\n    secret: sk-filed-0123456789\n    rpm: 2\n")
	eventually(t, "the edited keys file to apply", func() (bool, string) {
		_, err := filed.Chat.Completions.New(ctx, chatParams("gpt-4o"))
		return err == nil, fmt.Sprint(err)
	})
	_, err = filed.Chat.Completions.New(ctx, chatParams("gpt-4o"))
	apiError(t, err, http.StatusTooManyRequests, "requests", "rate_limit_exceeded")
}

// TestKeysAuditCostAndRestart: audit rows name the key and its cost, llm-audit groups by key,
// and month-to-date totals survive a restart by being read back from the audit database.
func TestKeysAuditCostAndRestart(t *testing.T) {
	up := fake(t, "k-audit")
	up.Update(func(s *fakeupstream.Settings) {
		s.Usage = fakeupstream.Usage{PromptTokens: 1000, CompletionTokens: 500}
	})
	path := filepath.Join(t.TempDir(), "record.db")
	site := gatewaySite(keysBlock(keyBlock("payer", "secret sk-payer-0123456789", "budget 0.01 usd monthly"))+
		"\t\tprices {\n\t\t\tgpt-4o input 2.50 output 10.00\n\t\t}\n",
		clientBlock("k-audit", up.URL(), "match keyword gpt"))
	gw := startGateway(t, auditGlobals(path), site)
	c := gw.client(option.WithAPIKey("sk-payer-0123456789"))
	ctx := context.Background()
	// 1000 × 2.5 + 500 × 10 = 7500 USD per 1M: $0.0075 a call. Two calls spend $0.015.
	for i := 0; i < 2; i++ {
		if _, err := c.Chat.Completions.New(ctx, chatParams("gpt-4o"), option.WithHeader("X-Request-Id", fmt.Sprint("pay-", i))); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	_, err := c.Chat.Completions.New(ctx, chatParams("gpt-4o"))
	apiError(t, err, http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota")

	// "Restart": a config without keys drops the counters, and without llm_audit closes the
	// database.
	gw.reload("", gatewaySite("", clientBlock("k-audit", up.URL(), "match keyword gpt")), true)
	awaitCallsEnded(t)
	sum, err := audit.Summarize([]string{path}, audit.SummaryOptions{By: audit.ByKey})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Groups) != 1 || sum.Groups[0].Key != "payer" || sum.Groups[0].Requests != 3 || sum.Groups[0].TotalTokens != 3000 ||
		sum.Groups[0].CostUSD < 0.01499 || sum.Groups[0].CostUSD > 0.01501 {
		t.Fatalf("summary by key: %+v", sum.Groups)
	}
	for _, r := range readAuditRows(t, path) {
		if strings.Contains(r.Headers, "sk-payer-0123456789") {
			t.Errorf("audit Headers hold the gateway key in clear: %s", r.Headers)
		}
	}

	gw.reload(auditGlobals(path), site, true)
	_, err = c.Chat.Completions.New(ctx, chatParams("gpt-4o"))
	apiError(t, err, http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota")
}

// TestKeysExample runs examples/keys.Caddyfile with its keys file: the inline key (from the
// environment) and the file's hashed key are admitted to their models, a call without a key is
// refused.
func TestKeysExample(t *testing.T) {
	t.Setenv("TEAM_A_KEY", "sk-team-a-example-key-0123456789")
	upstream := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // the example serves its fake there
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join("examples", "keys.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "examples"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "examples", "keys.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	gw := startExample(t, filepath.Join("examples", "keys.Caddyfile"), upstream, dir)
	ctx := context.Background()
	teamA := gw.client(option.WithAPIKey("sk-team-a-example-key-0123456789"))
	if _, err := teamA.Chat.Completions.New(ctx, chatParams("gpt-4o")); err != nil {
		t.Errorf("team-a: %v", err)
	}
	interns := gw.client(option.WithAPIKey("sk-interns-example-key-0123456789"))
	if _, err := interns.Chat.Completions.New(ctx, chatParams("gpt-4o-mini")); err != nil {
		t.Errorf("interns: %v", err)
	}
	_, err = interns.Chat.Completions.New(ctx, chatParams("gpt-4o"))
	apiError(t, err, http.StatusForbidden, "permission_error", "model_not_allowed")
	if code, _, _ := gw.chat("gpt-4o"); code != http.StatusUnauthorized {
		t.Errorf("no key: %d, want 401", code)
	}
}

// TestKeysReloadDuringStream: a stream admitted under one config and ending after a reload still
// settles into the shared counters and releases its concurrency slot.
func TestKeysReloadDuringStream(t *testing.T) {
	useClock(t)
	up := fake(t, "k-reload")
	up.Update(func(s *fakeupstream.Settings) { s.Linger = true })
	site := gatewaySite(keysBlock(keyBlock("one", "secret sk-one-0123456789", "concurrency 1")),
		clientBlock("k-reload", up.URL(), "match keyword gpt"))
	gw := startGateway(t, "", site)
	c := gw.client(option.WithAPIKey("sk-one-0123456789"))
	ctx := context.Background()
	stream := c.Chat.Completions.NewStreaming(ctx, chatParams("gpt-4o"))
	if !stream.Next() {
		t.Fatalf("stream: %v", stream.Err())
	}
	gw.reload("", site, true)
	_, err := c.Chat.Completions.New(ctx, chatParams("gpt-4o"))
	apiError(t, err, http.StatusTooManyRequests, "requests", "rate_limit_exceeded") // the slot is the stream's
	stream.Close()
	up.Update(func(s *fakeupstream.Settings) { s.Linger = false })
	eventually(t, "the stream's slot to be released after the reload", func() (bool, string) {
		_, err := c.Chat.Completions.New(ctx, chatParams("gpt-4o"))
		return err == nil, fmt.Sprint(err)
	})
}

// TestKeyModelsBoundFallbacks: a key's models bound the models its calls reach, not only the one
// they ask for. A caller who can make every candidate fail must not reach a model outside its key
// through the operator's fallback; a key that may use the fallback model gets its answer.
func TestKeyModelsBoundFallbacks(t *testing.T) {
	primary, backup := fake(t, "kf-primary"), fake(t, "kf-backup")
	primary.Update(func(s *fakeupstream.Settings) { s.Status = http.StatusUnprocessableEntity }) // retryable (SPEC §4)
	gw := startGateway(t, "", gatewaySite(keysBlock(
		keyBlock("narrow", "secret sk-narrow-0123456789", "models gpt-4o*"),
		keyBlock("wide", "secret sk-wide-0123456789", "models gpt-4o* premium-*"),
	), clientBlock("kf-primary", primary.URL(), "match exact gpt-4o", "fallback premium-model"),
		clientBlock("kf-backup", backup.URL(), "match exact premium-model")))
	ctx := context.Background()

	var resp *http.Response
	wide := gw.client(option.WithAPIKey("sk-wide-0123456789"))
	got, err := wide.Chat.Completions.New(ctx, chatParams("gpt-4o"), option.WithResponseInto(&resp))
	if err != nil || !strings.Contains(got.Choices[0].Message.Content, "kf-backup") {
		t.Fatalf("wide key: %v %+v", err, got)
	}
	if tried := resp.Header.Get("X-LLM-Gateway-Tried"); tried != "kf-primary,kf-backup" {
		t.Errorf("wide key: tried %q, want kf-primary,kf-backup", tried)
	}

	before := backup.Requests()
	narrow := gw.client(option.WithAPIKey("sk-narrow-0123456789"))
	_, err = narrow.Chat.Completions.New(ctx, chatParams("gpt-4o"), option.WithResponseInto(&resp))
	var e *openai.Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("narrow key: error %v, want the primary's 422", err)
	}
	if tried := e.Response.Header.Get("X-LLM-Gateway-Tried"); tried != "kf-primary" {
		t.Errorf("narrow key: tried %q, want kf-primary alone", tried)
	}
	if n := backup.Requests() - before; n != 0 {
		t.Errorf("the narrow key's call reached the fallback model's upstream %d times", n)
	}
}
