package sse

import "testing"

func TestParseUsage(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Usage
		ok   bool
	}{
		{"openai", `{"id":"x","choices":[{"message":{"content":"usage"}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`, Usage{10, 5, 15}, true},
		{"total missing is summed", `{"usage":{"prompt_tokens":10,"completion_tokens":5}}`, Usage{10, 5, 15}, true},
		{"total kept when given", `{"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":20}}`, Usage{10, 5, 20}, true},
		{"input/output names", `{"usage":{"input_tokens":7,"output_tokens":3}}`, Usage{7, 3, 10}, true},
		{"prompt wins over input", `{"usage":{"input_tokens":1,"prompt_tokens":7,"output_tokens":2,"completion_tokens":3}}`, Usage{7, 3, 10}, true},
		{"details ignored", `{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens":1}}`, Usage{3, 1, 4}, true},
		{"float tokens", `{"usage":{"prompt_tokens":3.0,"completion_tokens":1}}`, Usage{3, 1, 4}, true},
		{"whitespace", " {\n \"usage\" : { \"prompt_tokens\" : 2 } }", Usage{2, 0, 2}, true},
		{"stream usage-only chunk", `{"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}`, Usage{9, 4, 13}, true},
		{"responses completed event", `{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11}}}`, Usage{5, 6, 11}, true},
		{"anthropic message_start", `{"type":"message_start","message":{"usage":{"input_tokens":8,"output_tokens":1}}}`, Usage{8, 1, 9}, true},
		{"anthropic message_delta", `{"type":"message_delta","usage":{"output_tokens":12}}`, Usage{0, 12, 12}, true},
		{"null usage", `{"choices":[],"usage":null}`, Usage{}, false},
		{"no usage", `{"choices":[{"text":"\"usage\":{}"}]}`, Usage{}, false},
		{"nested usage elsewhere ignored", `{"choices":[{"usage":{"prompt_tokens":1}}]}`, Usage{}, false},
		{"not json", `usage`, Usage{}, false},
		{"empty", ``, Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseUsage([]byte(tt.body))
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseUsage = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
