package sse

import (
	"bytes"
	"errors"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"
)

// errNotObject reports a response body that cannot be transformed.
var errNotObject = errors.New("sse: response body is not a JSON object")

// TransformResponse applies the non-streaming response transforms of
// SPEC §6 to a complete chat or completion response body: prefix is
// prepended to every choices[].message.content (chat) or choices[].text
// (completion) that is a string, then, for chat, reasoning is normalised to
// format in every choices[].message (behaviour.md §6.2, non-streaming).
//
// The body is returned unchanged, same slice, when nothing applies;
// otherwise a new slice in which only the edited members of each message
// changed. It differs from the origin in one point: a null or missing
// content stays so unless reasoning must be written into it (the origin
// turned it into ""), because tool-call messages conventionally have null
// content.
func TransformResponse(body []byte, kind Kind, prefix string, format Format) ([]byte, error) {
	think := kind == Chat && format != Passthrough
	if prefix == "" && !think {
		return body, nil
	}
	it, _ := jsonspan.NewObject(body, 0, jsonspan.Loose)
	var choices jsonspan.Member
	found := false
	for it.Next() {
		if string(it.RawKey(body)) == "choices" {
			choices, found = it.Member, true
		}
	}
	if it.Err != nil {
		return nil, errNotObject
	}
	if !found || body[choices.Val.Start] != '[' {
		return body, nil
	}

	var (
		out  []byte
		last int
		ed   responseEditor
	)
	splice := func(from, to int, repl func([]byte) []byte) {
		if out == nil {
			out = make([]byte, 0, len(body)+len(prefix)*4+64)
		}
		out = append(out, body[last:from]...)
		out = repl(out)
		last = to
	}
	// The walk is the one this function has always done, more lenient than a Loose array walk (a
	// missing or trailing comma passes), so that it transforms the same bodies.
	for i := jsonspan.SkipSpace(body, choices.Val.Start+1); i < choices.Val.End && body[i] != ']'; {
		e := jsonspan.ValueEnd(body, i)
		if e < 0 {
			return nil, errNotObject
		}
		if body[i] == '{' {
			key := "message"
			if kind == Completion {
				key = "text"
			}
			m, ok := jsonspan.FindMember(body, i, key)
			switch {
			case !ok:
			case kind == Completion || !think:
				if kind == Chat {
					m, ok = jsonspan.FindMember(body, m.Val.Start, "content")
				}
				if ok && prefix != "" && isString(m.Val.In(body)) {
					at := m.Val.Start + 1
					splice(at, at, func(dst []byte) []byte {
						return jsonspan.AppendEscaped(dst, prefix)
					})
				}
			case body[m.Val.Start] == '{':
				if ed.prepare(body, m.Val.Start, prefix, format) {
					splice(m.Val.Start, m.Val.End, ed.apply)
				}
			}
		}
		i = jsonspan.SkipSpace(body, e)
		if i < len(body) && body[i] == ',' {
			i = jsonspan.SkipSpace(body, i+1)
		}
	}
	if out == nil {
		return body, nil
	}
	return append(out, body[last:]...), nil
}

// responseEditor computes the thinking edit of one response message.
type responseEditor struct {
	body      []byte
	start     int
	f         thinkFields
	e         objEdit
	orig      []byte // unescaped content
	text      []byte // prefix + orig
	source    []byte // reasoning from a field
	extracted []byte // reasoning from <think> blocks
	remainder []byte
	content   []byte
}

// prepare computes the edit of the message at body[start] and reports
// whether it changes anything.
func (r *responseEditor) prepare(body []byte, start int, prefix string, format Format) bool {
	f, ok := collectFields(body, start)
	if !ok {
		return false
	}
	r.body, r.start, r.f = body, start, f
	r.e = objEdit{target: format.field()}
	e := &r.e

	contentStr := isString(f.content.raw)
	prefixed := false
	r.extracted, r.remainder = r.extracted[:0], r.remainder[:0]
	if contentStr {
		r.orig = jsonspan.AppendUnquoted(r.orig[:0], f.content.raw)
		r.text = append(append(r.text[:0], prefix...), r.orig...)
		prefixed = prefix != ""
		r.extracted, r.remainder = splitThink(r.extracted, r.remainder, r.text)
	}
	srcKey, srcRaw := f.source()
	source := r.extracted
	fromField := false
	if srcRaw != nil {
		r.source = jsonspan.AppendUnquoted(r.source[:0], srcRaw)
		source, fromField = r.source, true
	}
	e.dropSources(&f, e.target)

	switch format {
	case Reasoning, ReasoningContent:
		if len(source) > 0 && !(fromField && srcKey == e.target) {
			e.reasoning = source
		}
		if contentStr && (prefixed || !bytes.Equal(r.remainder, r.orig)) {
			e.setContent, e.content = true, r.remainder
		}
	case ThinkTag:
		nullish := !f.content.present || string(f.content.raw) == "null"
		if !contentStr && !(nullish && len(source) > 0) {
			break // array content: left as is, reasoning dropped
		}
		r.content = r.content[:0]
		if len(source) > 0 {
			r.content = append(r.content, openTag...)
			r.content = append(r.content, source...)
			r.content = append(r.content, closeTag...)
		}
		r.content = append(r.content, r.remainder...)
		if !contentStr || prefixed || !bytes.Equal(r.content, r.orig) {
			e.setContent, e.content = true, r.content
		}
	}
	return e.setContent || len(e.reasoning) > 0 || e.dropsAny()
}

// apply appends the edited message.
func (r *responseEditor) apply(dst []byte) []byte {
	return appendEdited(dst, r.body, r.start, &r.f, &r.e)
}
