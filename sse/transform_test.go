package sse

import (
	"strings"
	"testing"

	"github.com/goccy/go-json"
)

// chatChunk builds a chat chunk whose choice-0 delta is the given members.
func chatChunk(delta string) string {
	return `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{` + delta + `},"finish_reason":null}]}`
}

// step is one Transform call: in, the expected output ("" means the input
// itself, same bytes), and whether the chunk must be dropped.
type step struct {
	in, want string
	drop     bool
}

func runSteps(t *testing.T, tr *ChunkTransformer, steps []step) {
	t.Helper()
	for i, st := range steps {
		in := []byte(st.in)
		out, fwd := tr.Transform(in)
		if fwd == st.drop {
			t.Fatalf("step %d: forward = %v, want %v", i, fwd, !st.drop)
		}
		if st.drop {
			continue
		}
		if st.want == "" {
			if len(in) > 0 && &out[0] != &in[0] || len(out) != len(in) {
				t.Fatalf("step %d: input was rewritten to %s", i, out)
			}
			continue
		}
		if string(out) != st.want {
			t.Fatalf("step %d:\n got %s\nwant %s", i, out, st.want)
		}
		if !json.Valid(out) {
			t.Fatalf("step %d: output is not valid JSON: %s", i, out)
		}
	}
}

func TestTransformPassthrough(t *testing.T) {
	tr := NewChunkTransformer(Options{})
	runSteps(t, tr, []step{
		{in: chatChunk(`"role":"assistant","content":""`)},
		{in: chatChunk(`"content":"<think>x</think>y"`)},
		{in: chatChunk(`"reasoning_content":"R"`)},
		{in: `not json at all`},
		{in: ``},
	})
	if _, ok := tr.Usage(); ok {
		t.Error("usage recorded without any")
	}
}

func TestTransformPrefix(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		steps []step
	}{
		{"chat: once, in the first chunk with content",
			Options{Prefix: "<think>"},
			[]step{
				{in: chatChunk(`"role":"assistant","content":""`)},
				{in: chatChunk(`"content":null,"reasoning":"r"`)},
				{in: chatChunk(`"content":"Hi"`), want: chatChunk(`"content":"<think>Hi"`)},
				{in: chatChunk(`"content":"Hi"`)},
			}},
		{"chat: escaped",
			Options{Prefix: "say \"x\"\n"},
			[]step{{in: chatChunk(`"content":"\u00e9"`), want: chatChunk(`"content":"say \"x\"\n\u00e9"`)}}},
		{"chat: tool-call deltas untouched",
			Options{Prefix: "P"},
			[]step{
				{in: chatChunk(`"tool_calls":[{"index":0,"function":{"arguments":"{\"content\":\"x\"}"}}]`)},
				{in: chatChunk(`"content":"A"`), want: chatChunk(`"content":"PA"`)},
			}},
		{"chat: only choice 0",
			Options{Prefix: "P"},
			[]step{
				{in: `{"choices":[{"index":1,"delta":{"content":"B"}}]}`},
				{in: `{"choices":[{"index":0,"delta":{"content":"A"}}]}`, want: `{"choices":[{"index":0,"delta":{"content":"PA"}}]}`},
			}},
		{"chat: whitespace and unknown fields kept",
			Options{Prefix: "P"},
			[]step{{
				in:   "{ \"x\" : [1, {\"y\":\"}\"}],\n \"choices\" : [ { \"delta\" : { \"content\" : \"A\" , \"z\":1} } ] }",
				want: "{ \"x\" : [1, {\"y\":\"}\"}],\n \"choices\" : [ { \"delta\" : { \"content\" : \"PA\" , \"z\":1} } ] }",
			}}},
		{"completion",
			Options{Kind: Completion, Prefix: "P"},
			[]step{
				{in: `{"choices":[{"text":"","index":0}]}`},
				{in: `{"choices":[{"text":"A","index":0}]}`, want: `{"choices":[{"text":"PA","index":0}]}`},
				{in: `{"choices":[{"text":"B","index":0}]}`},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSteps(t, NewChunkTransformer(tt.opts), tt.steps)
		})
	}
}

func TestTransformThinking(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		steps []step
		flush string
	}{
		{"reasoning: rename reasoning_content",
			Options{Thinking: Reasoning},
			[]step{
				{in: chatChunk(`"role":"assistant","content":null,"reasoning_content":"R"`),
					want: chatChunk(`"role":"assistant","content":null,"reasoning":"R"`)},
				{in: chatChunk(`"content":"A","reasoning_content":null`)},
			}, ""},
		{"reasoning: reasoning wins over reasoning_content",
			Options{Thinking: Reasoning},
			[]step{{in: chatChunk(`"reasoning_content":"X","reasoning":"R"`), want: chatChunk(`"reasoning":"R"`)}}, ""},
		{"reasoning_content: target written in place of existing target member",
			Options{Thinking: ReasoningContent},
			[]step{{in: chatChunk(`"reasoning_content":"X","content":"","reasoning":"R"`), want: chatChunk(`"reasoning_content":"R","content":""`)}}, ""},
		{"reasoning: already in target is untouched",
			Options{Thinking: Reasoning},
			[]step{{in: chatChunk(`"reasoning":"R","content":"<think>"`)}}, ""},
		{"reasoning: tags in content",
			Options{Thinking: Reasoning},
			[]step{
				{in: chatChunk(`"role":"assistant","content":""`)},
				{in: chatChunk(`"content":"<thi"`), want: chatChunk(`"content":""`)},
				{in: chatChunk(`"content":"nk>Let"`), want: chatChunk(`"content":"","reasoning":"Let"`)},
				{in: chatChunk(`"content":" me</think>\n\nHi"`), want: chatChunk(`"content":"\n\nHi","reasoning":" me"`)},
				{in: chatChunk(`"content":"!"`)},
			}, ""},
		{"reasoning_content: escaped tags",
			Options{Thinking: ReasoningContent},
			[]step{{in: chatChunk(`"content":"\u003cthink\u003eR\u003c/think\u003eA"`), want: chatChunk(`"content":"A","reasoning_content":"R"`)}}, ""},
		{"reasoning: held text flushed before DONE",
			Options{Thinking: Reasoning},
			[]step{{in: chatChunk(`"content":"<think>R</th"`), want: chatChunk(`"content":"","reasoning":"R"`)}},
			`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"reasoning":"</th"}}]}`},
		{"reasoning: held content flushed",
			Options{Thinking: Reasoning},
			[]step{{in: chatChunk(`"content":"a <"`), want: chatChunk(`"content":"a "`)}},
			`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"<"}}]}`},
		{"reasoning: prefix applied before thinking",
			Options{Thinking: Reasoning, Prefix: "<think>"},
			[]step{
				{in: chatChunk(`"role":"assistant","content":""`)},
				{in: chatChunk(`"content":"R"`), want: chatChunk(`"content":"","reasoning":"R"`)},
				{in: chatChunk(`"content":"</think>A"`), want: chatChunk(`"content":"A"`)},
			}, ""},
		{"reasoning: null content and tool calls untouched inside think",
			Options{Thinking: Reasoning},
			[]step{
				{in: chatChunk(`"content":"<think>R"`), want: chatChunk(`"content":"","reasoning":"R"`)},
				{in: chatChunk(`"content":null,"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":\"<think>\"}"}}]`)},
				{in: chatChunk(`"tool_calls":[{"index":0,"function":{"arguments":"}"}}]`)},
			}, ""},
		{"think_tag: reasoning moved into content",
			Options{Thinking: ThinkTag},
			[]step{
				{in: chatChunk(`"role":"assistant","content":"","reasoning_content":"R1"`), want: chatChunk(`"role":"assistant","content":"<think>R1"`)},
				{in: chatChunk(`"reasoning_content":"R2"`), want: chatChunk(`"content":"R2"`)},
				{in: chatChunk(`"content":null,"reasoning_content":null`)},
				{in: chatChunk(`"content":"A","reasoning_content":null`), want: chatChunk(`"content":"</think>A","reasoning_content":null`)},
				{in: chatChunk(`"content":"B"`)},
			}, ""},
		{"think_tag: content placed where reasoning was",
			Options{Thinking: ThinkTag},
			[]step{{in: chatChunk(`"role":"assistant","reasoning":"R","x":1`), want: chatChunk(`"role":"assistant","content":"<think>R","x":1`)}},
			`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"</think>"}}]}`},
		{"think_tag: tool calls while thinking untouched",
			Options{Thinking: ThinkTag},
			[]step{
				{in: chatChunk(`"reasoning":"R"`), want: chatChunk(`"content":"<think>R"`)},
				{in: chatChunk(`"tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":""}}]`)},
			},
			`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"</think>"}}]}`},
		{"thinking ignored for completions",
			Options{Kind: Completion, Thinking: Reasoning},
			[]step{{in: `{"choices":[{"text":"<think>R</think>","index":0}]}`}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewChunkTransformer(tt.opts)
			runSteps(t, tr, tt.steps)
			if got := string(tr.Flush()); got != tt.flush {
				t.Fatalf("Flush:\n got %s\nwant %s", got, tt.flush)
			}
			if got := tr.Flush(); got != nil {
				t.Fatalf("second Flush = %s, want nil", got)
			}
		})
	}
}

// TestTransformThinkingSplitEverywhere streams a reasoning model's content
// cut at every position into chunks and checks that the reasoning and the
// answer come out whole.
func TestTransformThinkingSplitEverywhere(t *testing.T) {
	const text = "<think>I \"should\" add</think>\n\nIt is <b>4</b>"
	wantC, wantR := refSplit(text)
	for _, format := range []Format{Reasoning, ReasoningContent} {
		for i := 0; i <= len(text); i++ {
			for j := i; j <= len(text); j++ {
				tr := NewChunkTransformer(Options{Thinking: format})
				var gotC, gotR strings.Builder
				collect := func(data []byte) {
					var c struct {
						Choices []struct {
							Delta map[string]*string `json:"delta"`
						} `json:"choices"`
					}
					if err := json.Unmarshal(data, &c); err != nil {
						t.Fatalf("invalid output %s: %v", data, err)
					}
					for k, v := range c.Choices[0].Delta {
						switch {
						case v == nil:
						case k == "content":
							gotC.WriteString(*v)
						case k == format.String():
							gotR.WriteString(*v)
						default:
							t.Fatalf("unexpected field %q in %s", k, data)
						}
					}
				}
				for _, part := range []string{text[:i], text[i:j], text[j:]} {
					in, _ := json.Marshal(part)
					out, _ := tr.Transform([]byte(`{"choices":[{"index":0,"delta":{"content":` + string(in) + `}}]}`))
					collect(out)
				}
				if f := tr.Flush(); f != nil {
					collect(f)
				}
				if gotC.String() != wantC || gotR.String() != wantR {
					t.Fatalf("%v split %d,%d: got %q/%q, want %q/%q", format, i, j, gotC.String(), gotR.String(), wantC, wantR)
				}
			}
		}
	}
}

func TestTransformUsage(t *testing.T) {
	usageOnly := `{"id":"c1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}`
	tests := []struct {
		name   string
		opts   Options
		steps  []step
		usage  Usage
		ok     bool
		finish string
	}{
		{"usage-only chunk dropped",
			Options{DropUsageOnlyChunk: true},
			[]step{
				{in: chatChunk(`"content":"A"`)},
				{in: `{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`},
				{in: usageOnly, drop: true},
			}, Usage{9, 4, 13}, true, "stop"},
		{"usage-only chunk forwarded when the caller asked",
			Options{},
			[]step{{in: usageOnly}}, Usage{9, 4, 13}, true, ""},
		{"usage with non-empty choices forwarded",
			Options{DropUsageOnlyChunk: true},
			[]step{{in: `{"choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`}},
			Usage{1, 2, 3}, true, "length"},
		{"last usage wins",
			Options{DropUsageOnlyChunk: true},
			[]step{
				{in: `{"choices":[{"index":0,"delta":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`},
				{in: usageOnly, drop: true},
			}, Usage{9, 4, 13}, true, ""},
		{"null usage everywhere",
			Options{DropUsageOnlyChunk: true},
			[]step{
				{in: `{"choices":[{"index":0,"delta":{"content":"\"usage\": 1"},"finish_reason":null}],"usage":null}`},
				{in: `{"choices":[],"usage":null}`},
			}, Usage{}, false, ""},
		{"usage recorded with transforms on",
			Options{Prefix: "P", Thinking: Reasoning, DropUsageOnlyChunk: true},
			[]step{{in: usageOnly, drop: true}}, Usage{9, 4, 13}, true, ""},
		{"finish reason with escapes",
			Options{},
			[]step{{in: `{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`}, {in: `{"choices":[{"index":0,"finish_reason":"a\"b"}]}`}},
			Usage{}, false, `a"b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewChunkTransformer(tt.opts)
			runSteps(t, tr, tt.steps)
			if u, ok := tr.Usage(); u != tt.usage || ok != tt.ok {
				t.Errorf("Usage() = %+v, %v; want %+v, %v", u, ok, tt.usage, tt.ok)
			}
			if got := tr.FinishReason(); got != tt.finish {
				t.Errorf("FinishReason() = %q, want %q", got, tt.finish)
			}
		})
	}
}

func TestTransformFirstContent(t *testing.T) {
	tests := []struct {
		name   string
		kind   Kind
		chunks []string
		first  int // index of the chunk that is first content, -1 for none
	}{
		{"content after role", Chat, []string{
			chatChunk(`"role":"assistant","content":""`), chatChunk(`"content":null`), chatChunk(`"content":"A"`), chatChunk(`"content":"B"`)}, 2},
		{"reasoning counts", Chat, []string{chatChunk(`"role":"assistant"`), chatChunk(`"reasoning_content":"R"`), chatChunk(`"content":"A"`)}, 1},
		{"tool call counts", Chat, []string{chatChunk(`"role":"assistant","content":null`), chatChunk(`"tool_calls":[{"index":0}]`)}, 1},
		{"logprobs content is not content", Chat, []string{`{"choices":[{"index":0,"delta":{},"logprobs":{"content":[]}}]}`}, -1},
		{"completion text", Completion, []string{`{"choices":[{"text":""}]}`, `{"choices":[{"text":"A"}]}`}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewChunkTransformer(Options{Kind: tt.kind})
			for i, c := range tt.chunks {
				tr.Transform([]byte(c))
				if got := tr.FirstContent(); got != (i == tt.first) {
					t.Errorf("chunk %d: FirstContent() = %v", i, got)
				}
			}
		})
	}
}
