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

// TestParseUsageAbsurd checks that counts beyond int64 saturate rather than vanish, and that a
// missing total does not wrap around, so Clamp sees every lie for what it is.
func TestParseUsageAbsurd(t *testing.T) {
	const maxInt = 1<<63 - 1
	tests := []struct {
		name string
		body string
		want Usage
	}{
		{"max int64", `{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775807}}`, Usage{maxInt, maxInt, maxInt}},
		{"exponent", `{"usage":{"prompt_tokens":1e30,"completion_tokens":2E3}}`, Usage{maxInt, 2000, maxInt}},
		{"beyond int64", `{"usage":{"prompt_tokens":99999999999999999999,"completion_tokens":1}}`, Usage{maxInt, 1, maxInt}},
		{"beyond float64", `{"usage":{"prompt_tokens":1e999,"completion_tokens":-1e999}}`, Usage{maxInt, -maxInt - 1, -1}},
		{"negative", `{"usage":{"prompt_tokens":-5,"completion_tokens":-7,"total_tokens":-12}}`, Usage{-5, -7, -12}},
		{"not a number", `{"usage":{"prompt_tokens":"lots","completion_tokens":Infinity,"total_tokens":0x10}}`, Usage{0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := ParseUsage([]byte(tt.body))
			if got != tt.want {
				t.Errorf("ParseUsage = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestUsageClamp(t *testing.T) {
	const maxInt = 1<<63 - 1
	tests := []struct {
		name    string
		in      Usage
		want    Usage
		clamped bool
	}{
		{"sane", Usage{10, 5, 15}, Usage{10, 5, 15}, false},
		{"at the bound", Usage{MaxTokens, 0, MaxTokens}, Usage{MaxTokens, 0, MaxTokens}, false},
		{"negative", Usage{-5, -7, -12}, Usage{0, 0, 0}, true},
		{"huge", Usage{maxInt, maxInt, maxInt}, Usage{MaxTokens, MaxTokens, MaxTokens}, true},
		{"wrapped total", Usage{maxInt, 3, -maxInt + 1}, Usage{MaxTokens, 3, MaxTokens}, true},
		{"negative total only", Usage{10, 5, -1}, Usage{10, 5, 15}, true},
		{"huge total only", Usage{10, 5, MaxTokens + 1}, Usage{10, 5, 15}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, clamped := tt.in.Clamp()
			if got != tt.want || clamped != tt.clamped {
				t.Errorf("Clamp(%+v) = %+v, %v; want %+v, %v", tt.in, got, clamped, tt.want, tt.clamped)
			}
		})
	}
}
