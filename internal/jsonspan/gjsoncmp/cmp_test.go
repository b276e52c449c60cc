// Package gjsoncmp holds the benchmark that chose internal/jsonspan over tidwall/gjson and sjson.
//
//	cd internal/jsonspan/gjsoncmp && go test -run '^$' -bench . -count 6 | tee new.txt
package gjsoncmp

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"
	"github.com/llmgw/caddy-llm-gateway/internal/reqbody"
)

// chatBody is the ~2 KB streaming chat request of internal/reqbody's benchmarks.
var chatBody = func() []byte {
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant that answers concisely."}`)
	for i := 0; sb.Len() < 1900; i++ {
		sb.WriteString(`,{"role":"user","content":"Please summarise the following paragraph about the history of distributed systems and consensus protocols."}`)
		sb.WriteString(`,{"role":"assistant","content":"Distributed consensus lets replicas agree on one value despite failures; Paxos and Raft are the classic protocols."}`)
	}
	sb.WriteString(`],"temperature":0.7,"top_p":1,"stream":true,"stream_options":{"include_usage":true},"user":"bench"}`)
	return []byte(sb.String())
}()

// chunk is a typical streamed chat chunk.
var chunk = []byte(`{"id":"chatcmpl-AbCdEf0123456789","object":"chat.completion.chunk","created":1732000000,` +
	`"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0123456789","choices":[{"index":0,` +
	`"delta":{"content":" consensus"},"logprobs":null,"finish_reason":null}]}`)

type head struct {
	model              string
	stream, includeUse bool
}

// sniffSpan is what a Sniff of model, stream and stream_options.include_usage costs on a Strict walk:
// the whole body validated, the three members read.
func sniffSpan(b []byte) (head, bool) {
	var h head
	obj, err := jsonspan.NewObject(b, 0, jsonspan.Strict)
	if err != nil {
		return h, false
	}
	for obj.Next() {
		switch {
		case obj.KeyIs("model"):
			h.model, _ = jsonspan.Unquote(obj.Val.In(b))
		case obj.KeyIs("stream"):
			h.stream = string(obj.Val.In(b)) == "true"
		case obj.KeyIs("stream_options"):
			if m, ok := jsonspan.FindMember(b, obj.Val.Start, "include_usage"); ok {
				h.includeUse = string(m.Val.In(b)) == "true"
			}
		}
	}
	return h, obj.Err == nil && jsonspan.SkipSpace(b, obj.Close+1) == len(b)
}

// sniffGJSON is the same with gjson: validation, then one multi-path lookup.
func sniffGJSON(b []byte, validate bool) (head, bool) {
	if validate && !gjson.ValidBytes(b) {
		return head{}, false
	}
	r := gjson.GetManyBytes(b, "model", "stream", "stream_options.include_usage")
	return head{model: r[0].String(), stream: r[1].Bool(), includeUse: r[2].Bool()}, true
}

func BenchmarkSniff(b *testing.B) {
	want := head{"gpt-4o-mini", true, true}
	for _, bc := range []struct {
		name  string
		sniff func([]byte) (head, bool)
	}{
		{"reqbody.Sniff", func(b []byte) (head, bool) {
			info, err := reqbody.Sniff(b, false)
			return head{info.Model, info.Stream, info.IncludeUsage}, err == nil
		}},
		{"jsonspan.Strict", sniffSpan},
		{"gjson.Valid+GetMany", func(b []byte) (head, bool) { return sniffGJSON(b, true) }},
		{"gjson.GetMany-unvalidated", func(b []byte) (head, bool) { return sniffGJSON(b, false) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if h, ok := bc.sniff(chatBody); !ok || h != want {
				b.Fatalf("got %+v, %v", h, ok)
			}
			b.SetBytes(int64(len(chatBody)))
			b.ReportAllocs()
			for b.Loop() {
				bc.sniff(chatBody)
			}
		})
	}
}

// BenchmarkEditModel replaces the model of the chat body: reqbody.Apply (validates, splices) against
// sjson.SetBytes, with and without a gjson validation first.
func BenchmarkEditModel(b *testing.B) {
	const model = "gpt-4o-mini-2024-07-18"
	want, _ := reqbody.Apply(chatBody, reqbody.Edit{Model: model})
	for _, bc := range []struct {
		name string
		edit func([]byte) []byte
	}{
		{"reqbody.Apply", func(b []byte) []byte {
			out, _ := reqbody.Apply(b, reqbody.Edit{Model: model})
			return out
		}},
		{"gjson.Valid+sjson.SetBytes", func(b []byte) []byte {
			if !gjson.ValidBytes(b) {
				return nil
			}
			out, _ := sjson.SetBytes(b, "model", model)
			return out
		}},
		{"sjson.SetBytes-unvalidated", func(b []byte) []byte {
			out, _ := sjson.SetBytes(b, "model", model)
			return out
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if got := bc.edit(chatBody); !bytes.Equal(got, want) {
				b.Fatalf("got %s", got)
			}
			b.SetBytes(int64(len(chatBody)))
			b.ReportAllocs()
			for b.Loop() {
				bc.edit(chatBody)
			}
		})
	}
}

// BenchmarkChunkContent finds choices[0].delta.content of a streamed chunk and splices a prefix into
// it, as the special_prefix transform does: a Loose walk against gjson's lookup, and sjson writing
// the new string.
func BenchmarkChunkContent(b *testing.B) {
	const prefix = "» "
	want := bytes.Replace(chunk, []byte(`" consensus"`), []byte(`"»  consensus"`), 1)
	buf := make([]byte, 0, 512)
	for _, bc := range []struct {
		name string
		edit func([]byte) []byte
	}{
		{"jsonspan.Loose", func(c []byte) []byte {
			choices, ok := jsonspan.FindMember(c, 0, "choices")
			if !ok {
				return nil
			}
			arr, _ := jsonspan.NewArray(c, choices.Val.Start, jsonspan.Loose)
			if !arr.Next() {
				return nil
			}
			delta, ok := jsonspan.FindMember(c, arr.Val.Start, "delta")
			if !ok {
				return nil
			}
			content, ok := jsonspan.FindMember(c, delta.Val.Start, "content")
			if !ok {
				return nil
			}
			at := content.Val.Start + 1
			out := append(buf[:0], c[:at]...)
			out = jsonspan.AppendEscaped(out, prefix)
			return append(out, c[at:]...)
		}},
		{"gjson.Get", func(c []byte) []byte {
			r := gjson.GetBytes(c, "choices.0.delta.content")
			if r.Index == 0 {
				return nil
			}
			at := r.Index + 1
			out := append(buf[:0], c[:at]...)
			out = jsonspan.AppendEscaped(out, prefix)
			return append(out, c[at:]...)
		}},
		{"gjson.Get+sjson.SetBytes", func(c []byte) []byte {
			r := gjson.GetBytes(c, "choices.0.delta.content")
			out, _ := sjson.SetBytes(c, "choices.0.delta.content", prefix+r.String())
			return out
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if got := bc.edit(chunk); !bytes.Equal(got, want) {
				b.Fatalf("got %s", got)
			}
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			for b.Loop() {
				bc.edit(chunk)
			}
		})
	}
}
