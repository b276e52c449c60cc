package sse

import (
	"bytes"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"
)

// The transforms edit a few fields of upstream JSON and must keep everything
// else byte for byte, in order, so instead of decoding into maps they locate
// spans with internal/jsonspan in Loose mode and splice: it finds structure,
// it does not validate, and every caller treats a failed walk as "leave the
// input alone". This file holds the cheaper questions the fast path asks
// before any walk.

// isEmptyArray reports whether v is `[]`, with any whitespace inside.
func isEmptyArray(v []byte) bool {
	if len(v) < 2 || v[0] != '[' {
		return false
	}
	i := jsonspan.SkipSpace(v, 1)
	return i == len(v)-1 && v[i] == ']'
}

// hasTextKey reports whether pat occurs as a key whose value is a non-empty
// string.
func hasTextKey(b []byte, pat string) bool {
	for i := jsonspan.FindKey(b, pat, 0); i >= 0; i = jsonspan.FindKey(b, pat, i) {
		if i+1 < len(b) && b[i] == '"' && b[i+1] != '"' {
			return true
		}
	}
	return false
}

// hasNonNullKey reports whether pat occurs as a key whose value is not null.
func hasNonNullKey(b []byte, pat string) bool {
	for i := jsonspan.FindKey(b, pat, 0); i >= 0; i = jsonspan.FindKey(b, pat, i) {
		if i < len(b) && !bytes.HasPrefix(b[i:], []byte("null")) {
			return true
		}
	}
	return false
}

// isString reports whether the raw JSON value v is a string.
func isString(v []byte) bool { return len(v) >= 2 && v[0] == '"' }
