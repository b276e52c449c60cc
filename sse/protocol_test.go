package sse

import (
	"testing"
)

func TestAppendStreamError(t *testing.T) {
	tests := []struct {
		name string
		p    Protocol
		msg  string
		want string
	}{
		{"openai", OpenAI, "cut",
			`data: {"error":{"code":"upstream_error","message":"cut"},"choices":[{"index":0,"delta":{},"finish_reason":"error"}]}` + "\n\n"},
		{"responses", Responses, "cut",
			"event: error\n" + `data: {"code":"upstream_error","message":"cut","param":null,"type":"error"}` + "\n\n"},
		{"anthropic", Anthropic, "cut",
			"event: error\n" + `data: {"error":{"message":"cut","type":"api_error"},"type":"error"}` + "\n\n"},
		{"escaped", Responses, "a \"quoted\"\nline",
			"event: error\n" + `data: {"code":"upstream_error","message":"a \"quoted\"\nline","param":null,"type":"error"}` + "\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(AppendStreamError([]byte("x"), tt.p, tt.msg))
			if got != "x"+tt.want {
				t.Errorf("got  %q\nwant %q", got, "x"+tt.want)
			}
		})
	}
}

func TestEventUsage(t *testing.T) {
	start := Usage{PromptTokens: 7, CompletionTokens: 1, TotalTokens: 8}
	tests := []struct {
		name, event, data string
		want              Usage
	}{
		{"responses completed", "response.completed",
			`{"type":"response.completed","response":{"usage":{"input_tokens":10,"output_tokens":5,"total_tokens":16}}}`,
			Usage{10, 5, 16}},
		{"responses completed without total", "response.completed",
			`{"response":{"usage":{"input_tokens":10,"output_tokens":5}}}`,
			Usage{10, 5, 15}},
		{"responses completed malformed", "response.completed", `{"response":`, start},
		{"message_start", "message_start",
			`{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}`,
			Usage{12, 1, 13}},
		{"message_delta", "message_delta", `{"type":"message_delta","usage":{"output_tokens":30}}`,
			Usage{7, 30, 37}},
		{"message_delta without output", "message_delta", `{"type":"message_delta","usage":{}}`, start},
		{"other event", "content_block_delta", `{"usage":{"output_tokens":99}}`, start},
		{"unnamed", "", `{"usage":{"prompt_tokens":99}}`, start},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EventUsage(start, []byte(tt.event), []byte(tt.data)); got != tt.want {
				t.Errorf("EventUsage = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestErrorJSON(t *testing.T) {
	tests := []struct {
		name, body, want string
		ok               bool
	}{
		{"first object", "data: {\"error\":{\"message\":\"busy\"}}\n\n", `{"error":{"message":"busy"}}`, true},
		{"skips comments and text", ": {\"c\":1}\n\ndata: not json\n\nevent: error\ndata:  {\"e\":2} \n\n", `{"e":2}`, true},
		{"invalid object", "data: {\"e\":\n\n", "", false},
		{"array", "data: [1]\n\n", "", false},
		{"plain text", "overloaded", "", false},
		{"empty", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ErrorJSON([]byte(tt.body))
			if ok != tt.ok || string(got) != tt.want {
				t.Errorf("ErrorJSON = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
