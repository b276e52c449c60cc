package reqbody

import (
	"strings"
	"testing"
)

// chatBody is a realistic ~2 KB streaming chat request.
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

func BenchmarkSniff(b *testing.B) {
	for _, bc := range []struct {
		name     string
		wantKeys bool
	}{{"head", false}, {"keys", true}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(chatBody)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Sniff(chatBody, bc.wantKeys); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkApply(b *testing.B) {
	for _, bc := range []struct {
		name string
		edit Edit
	}{
		{"noop", Edit{Model: "gpt-4o-mini", IncludeUsage: true, StripThink: true}},
		{"model", Edit{Model: "gpt-4o-mini-2024-07-18"}},
		{"all", Edit{Model: "real", Stop: []string{"</s>"}, MaxTokens: 512, ExtraBody: []byte(`{"top_k":40}`), StripThink: true, IncludeUsage: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(chatBody)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Apply(chatBody, bc.edit); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
