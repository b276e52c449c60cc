package sse_test

import (
	"fmt"
	"io"
	"strings"

	"github.com/llmgw/caddy-llm-gateway/sse"
)

// A stream from a model that writes its reasoning in <think> tags,
// normalised into a reasoning field. The gateway added include_usage, so
// the usage-only chunk is recorded but not forwarded.
func Example() {
	upstream := strings.NewReader("" +
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"<think>2+2\"}}]}\n\n" +
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"</think>4\"},\"finish_reason\":\"stop\"}]}\n\n" +
		": keep-alive\n\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\n" +
		"data: [DONE]\n\n")

	r := sse.NewReader(upstream)
	t := sse.NewChunkTransformer(sse.Options{Thinking: sse.Reasoning, DropUsageOnlyChunk: true})
	var out []byte
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		switch {
		case ev.Comment:
			out = sse.AppendComment(out, ev.Data)
		case sse.IsDone(ev.Data):
			if f := t.Flush(); f != nil {
				out = sse.AppendEvent(out, nil, f)
			}
			out = append(out, sse.DoneEvent...)
		default:
			if data, ok := t.Transform(ev.Data); ok {
				out = sse.AppendEvent(out, nil, data)
			}
		}
	}
	fmt.Print(string(out))
	u, _ := t.Usage()
	fmt.Printf("usage %+v, finish %s\n", u, t.FinishReason())
	// Output:
	// data: {"choices":[{"index":0,"delta":{"content":"","reasoning":"2+2"}}]}
	//
	// data: {"choices":[{"index":0,"delta":{"content":"4"},"finish_reason":"stop"}]}
	//
	// : keep-alive
	//
	// data: [DONE]
	//
	// usage {PromptTokens:5 CompletionTokens:3 TotalTokens:8}, finish stop
}
