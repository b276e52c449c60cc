package fakeupstream

import (
	"strconv"
	"unicode/utf8"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"
)

// appendQuoted appends s as a JSON string literal. Answers are assembled by
// appending to one reused buffer instead of marshalling structs: that keeps
// the fake cheap enough to sit under the benchmark. The escaping is the
// gateway's own (internal/jsonspan), so the fake writes what it would.
func appendQuoted(dst []byte, s string) []byte { return jsonspan.AppendString(dst, s) }

// appendUsage appends the OpenAI usage object; completion is the default
// completion count of the answer at hand.
func (p *plan) appendUsage(dst []byte, completion int) []byte {
	prompt, completion := p.usage(completion)
	dst = append(dst, `{"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, int64(prompt), 10)
	dst = append(dst, `,"completion_tokens":`...)
	dst = strconv.AppendInt(dst, int64(completion), 10)
	dst = append(dst, `,"total_tokens":`...)
	dst = strconv.AppendInt(dst, int64(prompt+completion), 10)
	return append(dst, '}')
}

// splitText cuts s into n pieces of (nearly) equal rune counts, never inside
// a rune. When s has fewer runes than n, some pieces are empty, as deltas of
// real upstreams sometimes are.
func splitText(s string, n int) []string {
	if n < 1 {
		n = 1
	}
	runes := utf8.RuneCountInString(s)
	pieces := make([]string, 0, n)
	start, seen := 0, 0 // byte offset of the current piece, runes consumed
	off := 0
	for i := 1; i < n; i++ {
		want := i * runes / n
		for seen < want {
			_, size := utf8.DecodeRuneInString(s[off:])
			off += size
			seen++
		}
		pieces = append(pieces, s[start:off])
		start = off
	}
	return append(pieces, s[start:])
}
