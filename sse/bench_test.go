package sse

import (
	"testing"
)

// A typical mid-stream chunk of an upstream that was asked for usage, so
// that it carries "usage":null like OpenAI's.
var benchChunk = []byte(`{"id":"chatcmpl-9a8b7c","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],"usage":null}`)

func BenchmarkTransformFastPath(b *testing.B) {
	tr := NewChunkTransformer(Options{DropUsageOnlyChunk: true})
	tr.Transform(benchChunk) // past the first-content check
	b.ReportAllocs()
	b.SetBytes(int64(len(benchChunk)))
	for b.Loop() {
		if out, fwd := tr.Transform(benchChunk); !fwd || len(out) != len(benchChunk) {
			b.Fatal("chunk changed")
		}
	}
}

func BenchmarkTransformThinking(b *testing.B) {
	tr := NewChunkTransformer(Options{Thinking: Reasoning})
	chunk := []byte(chatChunk(`"content":"<think>"`))
	tr.Transform(chunk) // now inside a think block: every chunk is rewritten
	b.ReportAllocs()
	b.SetBytes(int64(len(benchChunk)))
	for b.Loop() {
		tr.Transform(benchChunk)
	}
}

func BenchmarkReader(b *testing.B) {
	ev := AppendEvent(nil, nil, benchChunk)
	r := NewReader(&loopReader{b: ev, n: 4 * len(ev)})
	b.ReportAllocs()
	b.SetBytes(int64(len(ev)))
	for b.Loop() {
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTransformFastPathNoAllocs pins the benchmark's promise in a test.
func TestTransformFastPathNoAllocs(t *testing.T) {
	for _, opts := range []Options{{}, {DropUsageOnlyChunk: true}, {Prefix: "P", Thinking: ThinkTag}} {
		tr := NewChunkTransformer(opts)
		tr.Transform([]byte(chatChunk(`"content":"A"`)))
		if n := testing.AllocsPerRun(100, func() { tr.Transform(benchChunk) }); n != 0 {
			t.Errorf("%+v: %v allocs per chunk, want 0", opts, n)
		}
	}
}
