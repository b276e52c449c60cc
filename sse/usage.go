package sse

// Usage is the token accounting of one completion.
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
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
	start := skipWS(body, 0)
	var nested [2]member
	var hasNested [2]bool
	it := newObjIter(body, start)
	for {
		m, more := it.next()
		if !more {
			break
		}
		switch string(m.key) {
		case "usage":
			if u, ok := usageObject(body, m); ok {
				return u, true
			}
		case "response":
			nested[0], hasNested[0] = m, true
		case "message":
			nested[1], hasNested[1] = m, true
		}
	}
	for i, m := range nested {
		if !hasNested[i] {
			continue
		}
		if um, ok := findMember(body, m.valStart, "usage"); ok {
			if u, ok := usageObject(body, um); ok {
				return u, true
			}
		}
	}
	return Usage{}, false
}

// usageObject reads the usage object that is the value of m.
func usageObject(b []byte, m member) (Usage, bool) {
	var (
		u                                  Usage
		prompt, input, completion, output  int64
		hasPrompt, hasCompletion, hasTotal bool
	)
	it := newObjIter(b, m.valStart)
	if it.bad {
		return Usage{}, false
	}
	for {
		f, more := it.next()
		if !more {
			break
		}
		n, ok := parseInt(f.value(b))
		if !ok {
			continue
		}
		switch string(f.key) {
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
	if it.bad {
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
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return u, true
}
