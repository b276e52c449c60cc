package jsonspan

import (
	"strings"
	"testing"
)

// benchChunk is a typical streamed chat chunk; benchBody a ~2 KB chat request.
var (
	benchChunk = []byte(`{"id":"chatcmpl-AbCdEf0123456789","object":"chat.completion.chunk","created":1732000000,` +
		`"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0123456789","choices":[{"index":0,` +
		`"delta":{"content":" consensus"},"logprobs":null,"finish_reason":null}]}`)
	benchBody = func() []byte {
		var sb strings.Builder
		sb.WriteString(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant that answers concisely."}`)
		for sb.Len() < 1900 {
			sb.WriteString(`,{"role":"user","content":"Please summarise the following paragraph about the history of distributed systems and consensus protocols."}`)
			sb.WriteString(`,{"role":"assistant","content":"Distributed consensus lets replicas agree on one value despite failures; Paxos and Raft are the classic protocols."}`)
		}
		sb.WriteString(`],"temperature":0.7,"top_p":1,"stream":true,"stream_options":{"include_usage":true},"user":"bench"}`)
		return []byte(sb.String())
	}()
)

// BenchmarkWalk walks every member of a document at each depth.
func BenchmarkWalk(b *testing.B) {
	for _, bc := range []struct {
		name string
		doc  []byte
		mode Mode
	}{
		{"chunk/Loose", benchChunk, Loose},
		{"chunk/Strict", benchChunk, Strict},
		{"body/Loose", benchBody, Loose},
		{"body/Strict", benchBody, Strict},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.doc)))
			for b.Loop() {
				obj, _ := NewObject(bc.doc, 0, bc.mode)
				for obj.Next() {
				}
				if obj.Err != nil {
					b.Fatal(obj.Err)
				}
			}
		})
	}
}

// BenchmarkChunkContent finds choices[0].delta.content of a chunk, as the prefix transform does.
func BenchmarkChunkContent(b *testing.B) {
	b.SetBytes(int64(len(benchChunk)))
	for b.Loop() {
		c := benchChunk
		choices, _ := FindMember(c, 0, "choices")
		arr, _ := NewArray(c, choices.Val.Start, Loose)
		arr.Next()
		delta, _ := FindMember(c, arr.Val.Start, "delta")
		if _, ok := FindMember(c, delta.Val.Start, "content"); !ok {
			b.Fatal("no content")
		}
	}
}

func BenchmarkAppendString(b *testing.B) {
	text := strings.Repeat("Distributed consensus lets replicas agree on one value despite failures. ", 4) + "Été « ok »\n"
	buf := make([]byte, 0, 2*len(text))
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		buf = AppendString(buf[:0], text)
	}
}
