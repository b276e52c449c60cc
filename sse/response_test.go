package sse

import (
	"testing"

	"github.com/goccy/go-json"
)

// chatResponse builds a chat response with one choice per message.
func chatResponse(messages ...string) string {
	s := `{"id":"r1","object":"chat.completion","choices":[`
	for i, m := range messages {
		if i > 0 {
			s += ","
		}
		s += `{"index":` + string(rune('0'+i)) + `,"message":{` + m + `},"finish_reason":"stop"}`
	}
	return s + `],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3},"x_vendor":{"k":[1]}}`
}

func TestTransformResponse(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		kind   Kind
		prefix string
		format Format
		want   string // "" means unchanged, same slice
	}{
		{"nothing configured", chatResponse(`"role":"assistant","content":"<think>R</think>A"`), Chat, "", Passthrough, ""},
		{"prefix every string content, empty included",
			chatResponse(`"role":"assistant","content":"A"`, `"content":""`, `"content":null`, `"content":[{"type":"text","text":"x"}]`), Chat, "<p>", Passthrough,
			chatResponse(`"role":"assistant","content":"<p>A"`, `"content":"<p>"`, `"content":null`, `"content":[{"type":"text","text":"x"}]`)},
		{"prefix escaped", chatResponse(`"content":"A"`), Chat, "\"\n", Passthrough, chatResponse(`"content":"\"\nA"`)},
		{"prefix completions",
			`{"choices":[{"text":"A","index":0},{"text":"B","index":1},{"index":2}]}`, Completion, "P", Reasoning,
			`{"choices":[{"text":"PA","index":0},{"text":"PB","index":1},{"index":2}]}`},
		{"reasoning: tags extracted",
			chatResponse(`"role":"assistant","content":"<think>R1</think>mid<think>R2</think>\nA"`), Chat, "", Reasoning,
			chatResponse(`"role":"assistant","content":"mid\nA","reasoning":"R1\nR2"`)},
		{"reasoning: field renamed, tags still stripped",
			chatResponse(`"content":"<think>T</think>A","reasoning_content":"R"`), Chat, "", Reasoning,
			chatResponse(`"content":"A","reasoning":"R"`)},
		{"reasoning_content: reasoning wins over reasoning_content",
			chatResponse(`"content":"A","reasoning":"R","reasoning_content":"X"`), Chat, "", ReasoningContent,
			chatResponse(`"content":"A","reasoning_content":"R"`)},
		{"reasoning: prefix then tags", chatResponse(`"content":"R</think>A"`), Chat, "<think>", Reasoning,
			chatResponse(`"content":"A","reasoning":"R"`)},
		{"reasoning: already normal", chatResponse(`"content":"A","reasoning":"R","reasoning_content":null`), Chat, "", Reasoning, ""},
		{"reasoning: null content kept for tool calls",
			chatResponse(`"content":null,"reasoning_content":"R","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{}"}}]`), Chat, "", Reasoning,
			chatResponse(`"content":null,"reasoning":"R","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{}"}}]`)},
		{"reasoning: unclosed tag left in content", chatResponse(`"content":"<think>R"`), Chat, "", Reasoning, ""},
		{"think_tag: field into content", chatResponse(`"role":"assistant","content":"A","reasoning_content":"R"`), Chat, "", ThinkTag,
			chatResponse(`"role":"assistant","content":"<think>R</think>A"`)},
		{"think_tag: null content gets reasoning", chatResponse(`"content":null,"reasoning":"R"`), Chat, "", ThinkTag,
			chatResponse(`"content":"<think>R</think>"`)},
		{"think_tag: missing content added in place", chatResponse(`"role":"assistant","reasoning":"R","x":1`), Chat, "", ThinkTag,
			chatResponse(`"role":"assistant","content":"<think>R</think>","x":1`)},
		{"think_tag: content tags normalised, empty blocks dropped", chatResponse(`"content":"<think></think>A<think>R</think>"`), Chat, "", ThinkTag,
			chatResponse(`"content":"<think>R</think>A"`)},
		{"think_tag: already normal", chatResponse(`"content":"<think>R</think>A"`), Chat, "", ThinkTag, ""},
		{"think_tag: array content kept, reasoning dropped",
			chatResponse(`"content":[{"type":"text","text":"A"}],"reasoning":"R"`), Chat, "", ThinkTag,
			chatResponse(`"content":[{"type":"text","text":"A"}]`)},
		{"no choices", `{"object":"list","data":[]}`, Chat, "P", Reasoning, ""},
		{"choices not an array", `{"choices":null}`, Chat, "P", Reasoning, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.body)
			got, err := TransformResponse(in, tt.kind, tt.prefix, tt.format)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" {
				if &got[0] != &in[0] || len(got) != len(in) {
					t.Fatalf("body was rewritten:\n%s", got)
				}
				return
			}
			if string(got) != tt.want {
				t.Fatalf("\n got %s\nwant %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Fatalf("invalid JSON: %s", got)
			}
		})
	}
}

func TestTransformResponseInvalid(t *testing.T) {
	for _, body := range []string{``, `[]`, `{"choices":[{"message":`, `nope`} {
		if _, err := TransformResponse([]byte(body), Chat, "P", Passthrough); err == nil {
			t.Errorf("TransformResponse(%q) succeeded", body)
		}
	}
}
