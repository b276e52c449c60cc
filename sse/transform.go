package sse

import (
	"bytes"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"
)

// Kind is the endpoint a response belongs to, which decides where its text
// lives.
type Kind uint8

const (
	// Chat is /v1/chat/completions: text in choices[].message.content, or
	// choices[].delta.content when streaming.
	Chat Kind = iota
	// Completion is /v1/completions: text in choices[].text.
	Completion
)

// Options configures a ChunkTransformer.
type Options struct {
	// Kind selects chat or completion chunks.
	Kind Kind
	// Prefix is the client's special_prefix, inserted once into the first
	// chunk of choice 0 that carries text.
	Prefix string
	// Thinking normalises reasoning; chat only, ignored for Completion.
	Thinking Format
	// DropUsageOnlyChunk consumes the final usage chunk (the one with no
	// choices) instead of forwarding it. Set it when the gateway itself
	// added stream_options.include_usage, so that the caller gets no chunk
	// it did not ask for; usage is still recorded.
	DropUsageOnlyChunk bool
}

// ChunkTransformer applies the response transforms of SPEC §6 to the data
// of a chat or completion stream, one chunk at a time, and records what the
// audit log and metrics need (usage, finish reason, first content). It
// holds per-stream state: use one per stream, from one goroutine.
//
// Only choice 0 is transformed (a choice whose "index" is 0, or that has no
// index); with n > 1, the other choices pass untouched.
type ChunkTransformer struct {
	opts          Options
	think         *ThinkingStream // nil unless chat with a thinking format
	prefixPending bool

	usage    Usage
	hasUsage bool
	finish   []byte
	seen     bool // a chunk with content went by
	first    bool // the last Transform call was that chunk

	out    []byte // rewritten chunk
	text   []byte // unescaped content
	reason []byte // unescaped reasoning
	meta   []byte // `"id":…,"object":…,` of the last rewritten chunk, for Flush
}

// NewChunkTransformer returns a transformer for one stream.
func NewChunkTransformer(opts Options) *ChunkTransformer {
	t := &ChunkTransformer{opts: opts, prefixPending: opts.Prefix != ""}
	if opts.Kind == Chat && opts.Thinking != Passthrough {
		t.think = NewThinkingStream(opts.Thinking)
	}
	return t
}

// Transform processes the data of one event (not the [DONE] marker, for
// which the caller sends Flush first). It returns the bytes to forward and
// whether to forward them at all (false for a usage-only chunk with
// DropUsageOnlyChunk).
//
// When no transform applies to the chunk, out is data itself: the same
// bytes, not re-encoded. Otherwise out is an internal buffer valid until
// the next call; only the edited fields change, every other member keeps
// its bytes and position. Data that is not a JSON object is forwarded as
// is.
func (t *ChunkTransformer) Transform(data []byte) (out []byte, forward bool) {
	t.first = false
	if hasNonNullKey(data, `"usage"`) && t.recordUsage(data) && t.opts.DropUsageOnlyChunk {
		return nil, false
	}
	t.recordFinish(data)
	if !t.seen && t.hasContent(data) {
		t.seen, t.first = true, true
	}
	if !t.mayEdit(data) {
		return data, true
	}
	if out, ok := t.rewrite(data); ok {
		return out, true
	}
	return data, true
}

// FirstContent reports whether the chunk of the last Transform call was the
// stream's first to carry generated output (content, text, reasoning,
// refusal or tool calls): the moment time-to-first-token measures.
func (t *ChunkTransformer) FirstContent() bool { return t.first }

// Usage returns the usage of the last chunk that carried a non-null usage.
func (t *ChunkTransformer) Usage() (Usage, bool) { return t.usage, t.hasUsage }

// FinishReason returns the last non-null finish_reason seen, or "".
func (t *ChunkTransformer) FinishReason() string { return string(t.finish) }

// Flush returns the data of a final chunk carrying the text the thinking
// normalisation still holds, or nil. Send it before [DONE]. It reuses the
// id, object, created and model of the last chunk that was rewritten. The
// result is valid until the next call.
func (t *ChunkTransformer) Flush() []byte {
	if t.think == nil {
		return nil
	}
	p := t.think.Flush()
	hasContent := p.HasContent && len(p.Content) > 0
	if !hasContent && len(p.Reasoning) == 0 {
		return nil
	}
	b := append(t.out[:0], '{')
	b = append(b, t.meta...)
	b = append(b, `"choices":[{"index":0,"delta":{`...)
	n := 0
	if hasContent {
		b = appendMember(b, n, "content", p.Content)
		n++
	}
	if len(p.Reasoning) > 0 {
		b = appendMember(b, n, t.opts.Thinking.field(), p.Reasoning)
	}
	t.out = append(b, "}}]}"...)
	return t.out
}

// recordUsage stores the chunk's usage and reports whether the chunk is
// usage only: its choices are empty or absent.
func (t *ChunkTransformer) recordUsage(data []byte) (usageOnly bool) {
	it, _ := jsonspan.NewObject(data, 0, jsonspan.Loose)
	got, choices := false, false
	for it.Next() {
		switch string(it.RawKey(data)) {
		case "usage":
			if u, ok := usageObject(data, it.Member); ok {
				t.usage, t.hasUsage, got = u, true, true
			}
		case "choices":
			choices = !isEmptyArray(it.Val.In(data))
		}
	}
	return got && !choices && it.Err == nil
}

// recordFinish stores the last string finish_reason of the chunk.
func (t *ChunkTransformer) recordFinish(data []byte) {
	for i := jsonspan.FindKey(data, `"finish_reason"`, 0); i >= 0; i = jsonspan.FindKey(data, `"finish_reason"`, i) {
		if i >= len(data) || data[i] != '"' {
			continue // null, mostly
		}
		if e := jsonspan.StringEnd(data, i); e > 0 {
			t.finish = jsonspan.AppendUnquoted(t.finish[:0], data[i:e])
		}
	}
}

// hasContent reports, without parsing, whether the chunk carries output.
func (t *ChunkTransformer) hasContent(data []byte) bool {
	if t.opts.Kind == Completion {
		return hasTextKey(data, `"text"`)
	}
	if hasTextKey(data, `"content"`) || hasTextKey(data, `"reasoning_content"`) ||
		hasTextKey(data, `"reasoning"`) || hasTextKey(data, `"refusal"`) {
		return true
	}
	i := jsonspan.FindKey(data, `"tool_calls"`, 0)
	return i >= 0 && i < len(data) && data[i] == '['
}

// mayEdit is the fast path's gate: cheap substring checks that rule out
// every edit for most chunks, so that they are forwarded without parsing.
func (t *ChunkTransformer) mayEdit(data []byte) bool {
	if t.prefixPending {
		key := `"content"`
		if t.opts.Kind == Completion {
			key = `"text"`
		}
		if hasTextKey(data, key) {
			return true
		}
	}
	if t.think == nil {
		return false
	}
	if t.think.holding() || bytes.Contains(data, []byte(`"reasoning`)) {
		return true
	}
	// A think tag may be written literally or with < escaped (Go and
	// some other encoders escape it by default).
	return t.opts.Thinking != ThinkTag && (bytes.IndexByte(data, '<') >= 0 ||
		bytes.Contains(data, []byte(`\u003c`)) || bytes.Contains(data, []byte(`\u003C`)))
}

// rewrite applies the prefix and thinking transforms to choice 0. ok is
// false when the chunk is left as is.
func (t *ChunkTransformer) rewrite(data []byte) ([]byte, bool) {
	var choices jsonspan.Member
	found, metaN := false, 0
	it, _ := jsonspan.NewObject(data, 0, jsonspan.Loose)
	for it.Next() {
		switch string(it.RawKey(data)) {
		case "choices":
			choices, found = it.Member, true
		case "id", "object", "created", "model":
			if t.think != nil {
				if metaN == 0 {
					t.meta = t.meta[:0]
				}
				t.meta = append(t.meta, data[it.Key.Start:it.Val.End]...)
				t.meta = append(t.meta, ',')
				metaN++
			}
		}
	}
	if !found || it.Err != nil {
		return nil, false
	}
	arr, _ := jsonspan.NewArray(data, choices.Val.Start, jsonspan.Loose)
	if !arr.Next() || data[arr.Val.Start] != '{' {
		return nil, false
	}
	s := arr.Val.Start
	if idx, ok := jsonspan.FindMember(data, s, "index"); ok && string(idx.Val.In(data)) != "0" {
		return nil, false
	}
	if t.opts.Kind == Completion {
		txt, ok := jsonspan.FindMember(data, s, "text")
		if !ok || !t.prefixPending || !(isString(txt.Val.In(data)) && txt.Val.End-txt.Val.Start > 2) {
			return nil, false
		}
		t.prefixPending = false
		return t.splicePrefix(data, txt.Val.Start+1), true
	}
	delta, ok := jsonspan.FindMember(data, s, "delta")
	if !ok || data[delta.Val.Start] != '{' {
		return nil, false
	}
	if t.think == nil {
		c, ok := jsonspan.FindMember(data, delta.Val.Start, "content")
		if !ok || !t.prefixPending || !(isString(c.Val.In(data)) && c.Val.End-c.Val.Start > 2) {
			return nil, false
		}
		t.prefixPending = false
		return t.splicePrefix(data, c.Val.Start+1), true
	}
	return t.rewriteThinking(data, delta)
}

// splicePrefix returns data with the escaped prefix inserted at offset at,
// just inside the opening quote of the text it belongs to.
func (t *ChunkTransformer) splicePrefix(data []byte, at int) []byte {
	b := append(t.out[:0], data[:at]...)
	b = jsonspan.AppendEscaped(b, t.opts.Prefix)
	t.out = append(b, data[at:]...)
	return t.out
}

// rewriteThinking runs choice 0's delta through the thinking stream (after
// the prefix) and splices the edited delta back.
func (t *ChunkTransformer) rewriteThinking(data []byte, delta jsonspan.Member) ([]byte, bool) {
	f, ok := collectFields(data, delta.Val.Start)
	if !ok {
		return nil, false
	}
	in := Piece{HasContent: isString(f.content.raw)}
	prefixed := false
	if in.HasContent {
		t.text = t.text[:0]
		if t.prefixPending && len(f.content.raw) > 2 {
			t.text = append(t.text, t.opts.Prefix...)
			t.prefixPending, prefixed = false, true
		}
		t.text = jsonspan.AppendUnquoted(t.text, f.content.raw)
		in.Content = t.text
	}
	srcKey, srcRaw := f.source()
	if srcRaw != nil {
		t.reason = jsonspan.AppendUnquoted(t.reason[:0], srcRaw)
		in.Reasoning = t.reason
	}
	out := t.think.Step(in)

	e := objEdit{target: t.opts.Thinking.field()}
	e.dropSources(&f, e.target)
	if out.HasContent && (prefixed || !in.HasContent || !bytes.Equal(out.Content, in.Content)) {
		e.setContent, e.content = true, out.Content
	}
	if len(out.Reasoning) > 0 && !(srcKey == e.target && bytes.Equal(out.Reasoning, in.Reasoning)) {
		e.reasoning = out.Reasoning
	}
	if !e.setContent && len(e.reasoning) == 0 && !e.dropsAny() {
		return nil, false
	}
	b := append(t.out[:0], data[:delta.Val.Start]...)
	b = appendEdited(b, data, delta.Val.Start, &f, &e)
	t.out = append(b, data[delta.Val.End:]...)
	return t.out, true
}
