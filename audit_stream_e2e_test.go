package llmgateway_test

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// generatedID matches the ids the fake upstream numbers per answer; normalizeAudit keeps their prefix.
var generatedID = regexp.MustCompile(`^(chatcmpl-|cmpl-|resp_|msg_)[0-9]+$`)

// normalizeAudit decodes a stored Response and drops what differs from run to run: the
// timestamps, and the number of the fake's generated ids.
func normalizeAudit(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Errorf("stored Response is not JSON: %v\n%s", err, s)
		return nil
	}
	var walk func(any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			delete(x, "created")
			delete(x, "created_at")
			for k, e := range x {
				if id, ok := e.(string); ok && k == "id" {
					if m := generatedID.FindStringSubmatch(id); m != nil {
						x[k] = m[1]
					}
					continue
				}
				x[k] = walk(e)
			}
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		}
		return v
	}
	return walk(v)
}

// TestAuditStreamObjects checks the contract of SPEC §8 for streams, end to end: the Response
// column holds the one response object the stream amounts to, as the origin stored it, never
// the transcript; for chat (reasoning, and tool calls merged by index), completions, the
// Responses API and Anthropic Messages (input_tokens kept), and for streams cut by the upstream
// (what arrived so far, the cut in Error).
func TestAuditStreamObjects(t *testing.T) {
	chatUp, plainUp, cutUp := fake(t, "as-chat"), fake(t, "as-plain"), fake(t, "as-cut")
	chatUp.Update(func(s *fakeupstream.Settings) {
		s.Content, s.Reasoning, s.Chunks = "Hello, \"world\"!", "let me think", 3
		s.ToolCalls = []fakeupstream.ToolCall{
			{Name: "get_weather", Arguments: `{"city":"Paris"}`},
			{Name: "get_time", Arguments: `{}`},
		}
	})
	plainUp.Update(func(s *fakeupstream.Settings) { s.Content, s.Chunks = "Once upon a time", 4 })
	cutUp.Update(func(s *fakeupstream.Settings) { s.Content, s.Chunks, s.BreakAfter = "abcdefgh", 4, 2 })

	dbPath := filepath.Join(t.TempDir(), "record.db")
	site := gatewaySite("",
		clientBlock("as-chat", chatUp.URL(), "match exact chat-model"),
		clientBlock("as-plain", plainUp.URL(), "match exact plain-model"),
		clientBlock("as-cut", cutUp.URL(), "match exact cut-model"))
	gw := startGateway(t, auditGlobals(dbPath), site)

	chat := func(model string) string {
		return `{"model":"` + model + `","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	}
	messages := func(model string) string {
		return `{"model":"` + model + `","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`
	}
	tests := []struct {
		id, path, body string
		errPart        string // "" means the Error column must be empty
		want           string // the stored Response, normalised
	}{
		{
			"chat", "/v1/chat/completions", chat("chat-model"), "",
			`{"id":"chatcmpl-","object":"chat.completion","model":"chat-model","system_fingerprint":"fp_fake",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello, \"world\"!","reasoning_content":"let me think","tool_calls":[` +
				`{"index":0,"id":"call_0","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},` +
				`{"index":1,"id":"call_1","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":"tool_calls"}],` +
				`"usage":{"prompt_tokens":11,"completion_tokens":12,"total_tokens":23}}`,
		},
		{
			"completions", "/v1/completions", `{"model":"plain-model","stream":true,"prompt":"once"}`, "",
			`{"id":"cmpl-","object":"text_completion","model":"plain-model","choices":[{"index":0,"text":"Once upon a time","finish_reason":"stop"}],` +
				`"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}`,
		},
		{
			"responses", "/v1/responses", `{"model":"plain-model","stream":true,"input":"hi"}`, "",
			`{"id":"resp_","object":"response","status":"completed","model":"plain-model","output":[{"type":"message","id":"msg_","status":"completed","role":"assistant",` +
				`"content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Once upon a time"}]}],"usage":{"input_tokens":11,"output_tokens":4,"total_tokens":15}}`,
		},
		{
			"messages", "/v1/messages", messages("plain-model"), "",
			`{"id":"msg_","type":"message","role":"assistant","model":"plain-model","stop_reason":"end_turn","stop_sequence":null,` +
				`"content":[{"type":"text","text":"Once upon a time"}],"usage":{"input_tokens":11,"output_tokens":4}}`,
		},
		{
			"chat-cut", "/v1/chat/completions", chat("cut-model"), "upstream stream interrupted",
			`{"id":"chatcmpl-","object":"chat.completion","model":"cut-model","system_fingerprint":"fp_fake",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"abcd"},"finish_reason":null}],"usage":null}`,
		},
		{
			"messages-cut", "/v1/messages", messages("cut-model"), "upstream stream interrupted",
			`{"id":"msg_","type":"message","role":"assistant","model":"cut-model","stop_reason":null,"stop_sequence":null,` +
				`"content":[{"type":"text","text":"abcd"}],"usage":{"input_tokens":11,"output_tokens":1}}`,
		},
	}
	for _, tc := range tests {
		if status, _, body := gw.post(tc.path, "application/json", tc.body, "X-Request-Id", tc.id); status != 200 {
			t.Fatalf("%s: status %d: %s", tc.id, status, body)
		}
	}

	gw.reload("", site, false)
	awaitCallsEnded(t)
	byID := rowsByRequestID(t, readAuditRows(t, dbPath))
	for _, tc := range tests {
		r, ok := byID[tc.id]
		switch {
		case !ok:
			t.Errorf("%s: no audit row", tc.id)
			continue
		case r.Response == nil:
			t.Errorf("%s: Response is NULL", tc.id)
			continue
		case tc.errPart == "" && r.Error != "", tc.errPart != "" && !strings.Contains(r.Error, tc.errPart):
			t.Errorf("%s: Error %q, want %q", tc.id, r.Error, tc.errPart)
		case strings.Contains(*r.Response, "data:"):
			t.Errorf("%s: Response holds the transcript, want the response object: %s", tc.id, *r.Response)
		}
		got, want := normalizeAudit(t, *r.Response), normalizeAudit(t, tc.want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: stored Response\n got %s\nwant %s", tc.id, *r.Response, tc.want)
		}
	}
}
