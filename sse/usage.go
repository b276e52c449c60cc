package sse

import (
	"errors"
	"math"
	"strconv"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"
)

// Usage is the token accounting of one completion.
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
}

// MaxTokens is the largest token count taken from an upstream as it is,
// about 1.1e12: no real call comes near it, and sums of millions of calls
// at this bound still fit an int64. See Usage.Clamp.
const MaxTokens = 1 << 40

// Clamp returns u with every count in 0..MaxTokens and reports whether
// anything changed, so an upstream that lies (negative counts, 2^63-1,
// 1e30) cannot corrupt metrics, logs or the audit log's sums. A total out
// of range is replaced by the sum of the clamped parts: it is usually an
// overflowed sum of them.
func (u Usage) Clamp() (Usage, bool) {
	c := Usage{
		PromptTokens:     clampCount(u.PromptTokens),
		CompletionTokens: clampCount(u.CompletionTokens),
		TotalTokens:      u.TotalTokens,
	}
	if c.TotalTokens < 0 || c.TotalTokens > MaxTokens {
		c.TotalTokens = min(c.PromptTokens+c.CompletionTokens, MaxTokens)
	}
	return c, c != u
}

func clampCount(n int64) int64 {
	return min(max(n, 0), MaxTokens)
}

// ParseUsage extracts the usage of a response body or of one stream chunk.
//
// It reads the top-level "usage" object, or failing that the usage of a
// top-level "response" (Responses API stream events) or "message"
// (Anthropic message_start) object. Both naming schemes are understood:
// prompt_tokens or input_tokens, completion_tokens or output_tokens.
// TotalTokens is total_tokens when present, else the sum. ok is false when
// there is no usage object (a null usage included) or body is not a JSON
// object.
func ParseUsage(body []byte) (u Usage, ok bool) {
	var nested [2]jsonspan.Member
	var hasNested [2]bool
	it, _ := jsonspan.NewObject(body, 0, jsonspan.Loose)
	for it.Next() {
		switch string(it.RawKey(body)) {
		case "usage":
			if u, ok := usageObject(body, it.Member); ok {
				return u, true
			}
		case "response":
			nested[0], hasNested[0] = it.Member, true
		case "message":
			nested[1], hasNested[1] = it.Member, true
		}
	}
	for i, m := range nested {
		if !hasNested[i] {
			continue
		}
		if um, ok := jsonspan.FindMember(body, m.Val.Start, "usage"); ok {
			if u, ok := usageObject(body, um); ok {
				return u, true
			}
		}
	}
	return Usage{}, false
}

// usageObject reads the usage object that is the value of m.
func usageObject(b []byte, m jsonspan.Member) (Usage, bool) {
	var (
		u                                  Usage
		prompt, input, completion, output  int64
		hasPrompt, hasCompletion, hasTotal bool
	)
	it, err := jsonspan.NewObject(b, m.Val.Start, jsonspan.Loose)
	if err != nil {
		return Usage{}, false
	}
	for it.Next() {
		n, ok := parseCount(it.Val.In(b))
		if !ok {
			continue
		}
		switch string(it.RawKey(b)) {
		case "prompt_tokens":
			prompt, hasPrompt = n, true
		case "input_tokens":
			input = n
		case "completion_tokens":
			completion, hasCompletion = n, true
		case "output_tokens":
			output = n
		case "total_tokens":
			u.TotalTokens, hasTotal = n, true
		}
	}
	if it.Err != nil {
		return Usage{}, false
	}
	u.PromptTokens, u.CompletionTokens = input, output
	if hasPrompt {
		u.PromptTokens = prompt
	}
	if hasCompletion {
		u.CompletionTokens = completion
	}
	if !hasTotal {
		u.TotalTokens = addSat(u.PromptTokens, u.CompletionTokens)
	}
	return u, true
}

// parseCount reads a JSON number as a token count. Numbers beyond int64
// (99999999999999999999, 1e30) saturate rather than being dropped, so that
// Clamp sees them as too large; fractions are truncated.
func parseCount(v []byte) (int64, bool) {
	if n, ok := parseInt(v); ok {
		return n, true
	}
	if !isNumber(v) {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(v), 64) // rare: only lying upstreams get here
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	switch {
	case f >= math.MaxInt64:
		return math.MaxInt64, true
	case f <= math.MinInt64:
		return math.MinInt64, true
	}
	return int64(f), true
}

// isNumber reports whether v holds only JSON number characters, so that
// ParseFloat sees no "Inf", hex float or underscore.
func isNumber(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		if !('0' <= c && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') {
			return false
		}
	}
	return true
}

// addSat adds two token counts, saturating instead of wrapping.
func addSat(a, b int64) int64 {
	s := a + b
	if (s > a) != (b > 0) {
		if b > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return s
}

// parseInt reads a JSON number as an int64, truncating any fraction or
// exponent-free decimal part ("12.0" is 12). It does not allocate.
func parseInt(v []byte) (int64, bool) {
	neg := false
	if len(v) > 0 && v[0] == '-' {
		neg, v = true, v[1:]
	}
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return 0, false
	}
	var n int64
	i := 0
	for ; i < len(v) && '0' <= v[i] && v[i] <= '9'; i++ {
		if n > (1<<63-1)/10 {
			return 0, false
		}
		n = n*10 + int64(v[i]-'0')
	}
	if i < len(v) && v[i] != '.' {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}
