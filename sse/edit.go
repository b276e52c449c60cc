package sse

import "github.com/llmgw/caddy-llm-gateway/internal/jsonspan"

// field is one thinking-related member of a message or delta object.
type field struct {
	present bool
	raw     []byte // raw JSON value
}

// text reports whether the field is a non-empty string: only such fields
// are sources of reasoning. Null, "" and non-string values are left alone.
func (f field) text() bool { return f.present && isString(f.raw) && len(f.raw) > 2 }

// thinkFields are the members of a message or delta that thinking
// normalisation reads.
type thinkFields struct {
	content          field
	reasoning        field
	reasoningContent field
}

// collectFields scans the object at b[start] for its thinking fields.
func collectFields(b []byte, start int) (thinkFields, bool) {
	var f thinkFields
	it, _ := jsonspan.NewObject(b, start, jsonspan.Loose)
	for it.Next() {
		v := field{present: true, raw: it.Val.In(b)}
		switch string(it.RawKey(b)) {
		case "content":
			f.content = v
		case "reasoning":
			f.reasoning = v
		case "reasoning_content":
			f.reasoningContent = v
		}
	}
	return f, it.Err == nil
}

// source returns the reasoning text source of a delta or message: the
// "reasoning" field if it has text, else "reasoning_content" if it has.
func (f *thinkFields) source() (key string, raw []byte) {
	switch {
	case f.reasoning.text():
		return "reasoning", f.reasoning.raw
	case f.reasoningContent.text():
		return "reasoning_content", f.reasoningContent.raw
	}
	return "", nil
}

// objEdit describes the new thinking fields of one object.
type objEdit struct {
	setContent bool   // replace (or add) content with content
	content    []byte // unescaped
	target     string // field that receives reasoning ("" for none)
	reasoning  []byte // unescaped; empty: target not written
	drop       [2]bool
}

const (
	dropReasoning = iota
	dropReasoningContent
)

// appendEdited appends the object at b[start:end] with e applied. Members
// keep their order; a field that must be added takes the place of the
// first dropped source, or goes last. Untouched members are copied as is.
func appendEdited(dst, b []byte, start int, f *thinkFields, e *objEdit) []byte {
	addContent := e.setContent && !f.content.present
	addTarget := len(e.reasoning) > 0 && !e.targetPresent(f)
	n := 0
	pending := func() {
		if addContent {
			dst = appendMember(dst, n, "content", e.content)
			n++
			addContent = false
		}
		if addTarget {
			dst = appendMember(dst, n, e.target, e.reasoning)
			n++
			addTarget = false
		}
	}
	dst = append(dst, '{')
	it, _ := jsonspan.NewObject(b, start, jsonspan.Loose)
	for it.Next() {
		key := string(it.RawKey(b))
		switch {
		case key == "content" && e.setContent:
			dst = appendMember(dst, n, key, e.content)
		case key == e.target && len(e.reasoning) > 0:
			dst = appendMember(dst, n, key, e.reasoning)
		case key == "reasoning" && e.drop[dropReasoning],
			key == "reasoning_content" && e.drop[dropReasoningContent]:
			pending()
			continue
		default:
			if n > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, b[it.Key.Start:it.Val.End]...)
		}
		n++
	}
	pending()
	return append(dst, '}')
}

// targetPresent reports whether the object already has the target member.
func (e *objEdit) targetPresent(f *thinkFields) bool {
	switch e.target {
	case "reasoning":
		return f.reasoning.present
	case "reasoning_content":
		return f.reasoningContent.present
	}
	return false
}

// appendMember appends `"key":"text"`, preceded by a comma unless it is the
// object's first member.
func appendMember(dst []byte, n int, key string, text []byte) []byte {
	if n > 0 {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return jsonspan.AppendString(dst, text)
}

// dropSources marks every source field other than keep for removal.
func (e *objEdit) dropSources(f *thinkFields, keep string) {
	e.drop[dropReasoning] = f.reasoning.text() && keep != "reasoning"
	e.drop[dropReasoningContent] = f.reasoningContent.text() && keep != "reasoning_content"
}

// dropsAny reports whether e removes a field.
func (e *objEdit) dropsAny() bool { return e.drop[0] || e.drop[1] }
