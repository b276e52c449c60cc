package llmgateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

func TestRequestForwardedByteForByte(t *testing.T) {
	up := fake(t, "alpha")
	gw := startGateway(t, "", gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt", "strip_think off")))
	// Odd spacing, key order, unknown vendor fields and a think block: nothing applies, so the
	// upstream must see exactly these bytes.
	body := `{ "top_p":0.3,"model" : "gpt-4","messages":[{"role":"assistant","content":"<think>x</think> a"},{"role":"user","content":"hi","name":"bob"}],` +
		`"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"tool_choice":"auto","n":2,"seed":7,"x_vendor":{"k":[1,2]}}`
	if status, _, resp := gw.post("/v1/chat/completions", "application/json", body); status != 200 {
		t.Fatalf("chat: %d %s", status, resp)
	}
	if got := string(up.LastRequest().Body); got != body {
		t.Errorf("upstream body changed:\n got %s\nwant %s", got, body)
	}
}

func TestRequestTransforms(t *testing.T) {
	up := fake(t, "alpha")
	gw := startGateway(t, "", gatewaySite("", clientBlock("alpha", up.URL(),
		"match keyword gpt",
		"upstream_model real-model",
		`stop "<|end|>" "###"`,
		"max_tokens 100",
		"extra_body `{\"frequency_penalty\":1,\"top_p\":0.9}`",
	)))
	body := `{"model":"gpt-4","top_p":0.3,"stop":"###","max_tokens":500,"x_vendor":true,` +
		`"messages":[{"role":"assistant","content":"<think>\nplan\n</think>\n answer "},{"role":"user","content":"<think>keep</think>"}]}`
	if status, _, resp := gw.post("/v1/chat/completions", "application/json", body); status != 200 {
		t.Fatalf("chat: %d %s", status, resp)
	}
	sent := up.LastRequest().Body
	var got struct {
		Model            string   `json:"model"`
		TopP             float64  `json:"top_p"`
		Stop             []string `json:"stop"`
		MaxTokens        int      `json:"max_tokens"`
		FrequencyPenalty float64  `json:"frequency_penalty"`
		XVendor          bool     `json:"x_vendor"`
		Messages         []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(sent, &got); err != nil {
		t.Fatalf("upstream body is not JSON: %v: %s", err, sent)
	}
	if got.Model != "real-model" {
		t.Errorf("model = %q, want the upstream_model", got.Model)
	}
	if got.TopP != 0.3 || !got.XVendor {
		t.Errorf("request fields not kept: top_p=%v x_vendor=%v", got.TopP, got.XVendor)
	}
	if strings.Join(got.Stop, ",") != "<|end|>,###" {
		t.Errorf("stop = %q, want the client's words then the request's new ones", got.Stop)
	}
	if got.MaxTokens != 100 {
		t.Errorf("max_tokens = %d, want the cap 100", got.MaxTokens)
	}
	if got.FrequencyPenalty != 1 {
		t.Errorf("extra_body key not added: %s", sent)
	}
	if got.Messages[0].Content != "answer" {
		t.Errorf("assistant think block not stripped: %q", got.Messages[0].Content)
	}
	if got.Messages[1].Content != "<think>keep</think>" {
		t.Errorf("user message changed: %q", got.Messages[1].Content)
	}
	// Unedited fields keep their place: top_p still precedes stop.
	if strings.Index(string(sent), `"top_p"`) > strings.Index(string(sent), `"stop"`) {
		t.Errorf("field order changed: %s", sent)
	}
}

func TestUpstreamAuthAndHeaders(t *testing.T) {
	keyed, open := fake(t, "keyed"), fake(t, "open")
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("keyed", keyed.URL(), "match exact with-key", "api_key sk-client-secret", "header X-Org-Id acme"),
		clientBlock("open", open.URL(), "match exact no-key claude-x")))

	chat := `{"model":"MODEL","messages":[{"role":"user","content":"hi"}]}`
	send := func(model string, header ...string) {
		t.Helper()
		h := append([]string{"X-Forwarded-For", "10.1.2.3", "Via", "1.1 proxy", "Cookie", "session=1", "Connection", "X-Hop", "X-Hop", "1", "OpenAI-Organization", "org-1"}, header...)
		status, _, body := gw.post("/v1/chat/completions", "application/json", strings.Replace(chat, "MODEL", model, 1), h...)
		if status != 200 {
			t.Fatalf("%s: %d %s", model, status, body)
		}
	}
	check := func(h http.Header, name, want string) {
		t.Helper()
		if got := h.Get(name); got != want {
			t.Errorf("upstream %s = %q, want %q", name, got, want)
		}
	}

	send("with-key", "Authorization", "Bearer sk-caller", "X-Api-Key", "sk-caller-2")
	h := keyed.LastRequest().Header
	check(h, "Authorization", "Bearer sk-client-secret")
	check(h, "X-Api-Key", "")
	check(h, "X-Org-Id", "acme")
	check(h, "X-Forwarded-For", "")
	check(h, "Via", "")
	check(h, "Cookie", "")
	check(h, "X-Hop", "")
	check(h, "OpenAI-Organization", "org-1")
	check(h, "Content-Type", "application/json")

	send("no-key", "Authorization", "bearer sk-caller")
	check(open.LastRequest().Header, "Authorization", "Bearer sk-caller")

	send("no-key", "X-Api-Key", "sk-from-x-api-key")
	check(open.LastRequest().Header, "Authorization", "Bearer sk-from-x-api-key")

	// Anthropic Messages also get x-api-key, and anthropic-version is kept.
	status, _, body := gw.post("/v1/messages", "application/json",
		`{"model":"claude-x","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Api-Key", "sk-ant", "Anthropic-Version", "2023-06-01")
	if status != 200 {
		t.Fatalf("messages: %d %s", status, body)
	}
	h = open.LastRequest().Header
	check(h, "X-Api-Key", "sk-ant")
	check(h, "Anthropic-Version", "2023-06-01")
}

func TestUnsetAPIKeyVariableIsAConfigError(t *testing.T) {
	g := newGateway(t)
	cf := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n}\n:%d {\n%s}\n", g.port, gatewaySite("",
		clientBlock("keyed", "http://127.0.0.1:1/v1", "match keyword gpt", "api_key {env.LLMGW_TEST_SURELY_UNSET}")))
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = caddy.Load(cfgJSON, true)
	if err == nil || !strings.Contains(err.Error(), "expands to an empty key") {
		t.Fatalf("loading a client whose api_key variable is unset: %v, want an error (the caller's key must not be sent instead)", err)
	}
}
