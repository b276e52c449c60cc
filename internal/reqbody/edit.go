package reqbody

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"
)

// ErrInvalidField reports a member that an edit has to read but whose type makes no sense, such as a
// "max_tokens" string or a "stop" object. The handler answers it with 400.
var ErrInvalidField = errors.New("request field has an invalid type")

// Edit lists the SPEC §5 transforms to apply to a JSON request body. The zero Edit changes nothing.
type Edit struct {
	// Model, when not empty, replaces the value of "model" (upstream_model or a fallback model).
	Model string
	// Stop is the client's stop list: the result is this list, then the request's stop words not
	// already in it (a string stop counts as a one-item list).
	Stop []string
	// MaxTokens, when positive, caps the request: max_tokens (or max_completion_tokens, which the
	// request may use instead) becomes the smaller of the request's value and MaxTokens; a request with
	// neither gets max_tokens = MaxTokens, as the origin did.
	MaxTokens int
	// ExtraBody is a JSON object whose top-level members are added where the request lacks them.
	ExtraBody []byte
	// StripThink removes every <think>…</think> block from the string content of assistant messages,
	// then trims the content.
	StripThink bool
	// IncludeUsage makes sure stream_options.include_usage is true, keeping other stream_options.
	IncludeUsage bool
}

func (e *Edit) isZero() bool {
	return e.Model == "" && len(e.Stop) == 0 && e.MaxTokens <= 0 && len(e.ExtraBody) == 0 &&
		!e.StripThink && !e.IncludeUsage
}

// Names of the top-level members edits read or write.
const (
	keyModel         = "model"
	keyStop          = "stop"
	keyMaxTokens     = "max_tokens"
	keyMaxCompletion = "max_completion_tokens"
	keyStreamOptions = "stream_options"
	keyMessages      = "messages"
)

// editor accumulates the splices of one Apply call.
type editor struct {
	body    []byte
	edit    Edit
	splices []splice
	scratch []byte // replacement bytes of the splices
	tail    []byte // members to add, each preceded by a comma
	added   []string
}

// splice replaces body[start:end] with scratch[from:to].
type splice struct{ start, end, from, to int }

// Apply returns body with the edits of e applied. Only the values it edits change: every other byte,
// including white space, unknown members and member order, is copied as it is, and added members go
// just before the closing brace of the object. When nothing changes Apply returns body itself, not a
// copy. A zero Edit returns body without even looking at it; any other Edit validates the whole body
// and fails with ErrNotJSON if it is not one JSON object, or ErrInvalidField if a member it must edit
// has an unusable type.
func Apply(body []byte, e Edit) ([]byte, error) {
	if e.isZero() {
		return body, nil
	}
	ed := editor{body: body, edit: e}
	obj, err := jsonspan.NewObject(body, 0, jsonspan.Strict)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotJSON, err)
	}
	var (
		seenModel, seenStop, seenTokens, seenOptions bool
		lastEnd                                      = -1 // end of the last member's value
		keysBuf                                      [32]jsonspan.Span
		keys                                         = keysBuf[:0] // every key, for ExtraBody
	)
	for obj.Next() {
		lastEnd = obj.Val.End
		if len(e.ExtraBody) > 0 {
			keys = append(keys, obj.Key)
		}
		var editErr error
		switch name := memberName(body, &obj); name {
		case keyModel:
			seenModel = true
			if e.Model != "" {
				ed.setModel(obj.Val)
			}
		case keyStop:
			seenStop = true
			if len(e.Stop) > 0 {
				editErr = ed.mergeStop(obj.Val)
			}
		case keyMaxTokens, keyMaxCompletion:
			seenTokens = true
			if e.MaxTokens > 0 {
				editErr = ed.capTokens(name, obj.Val)
			}
		case keyStreamOptions:
			seenOptions = true
			if e.IncludeUsage {
				editErr = ed.includeUsage(obj.Val)
			}
		case keyMessages:
			if e.StripThink {
				editErr = ed.stripThink(obj.Val)
			}
		}
		if editErr != nil {
			return nil, editErr
		}
	}
	if obj.Err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotJSON, obj.Err)
	}
	if end := jsonspan.SkipSpace(body, obj.Close+1); end != len(body) {
		return nil, fmt.Errorf("%w: %v", ErrNotJSON, jsonspan.SyntaxError(body, end, "end of input"))
	}

	if e.Model != "" && !seenModel {
		ed.addMember(keyModel)
		ed.tail = jsonspan.AppendString(ed.tail, e.Model)
	}
	if e.MaxTokens > 0 && !seenTokens {
		ed.addMember(keyMaxTokens)
		ed.tail = strconv.AppendInt(ed.tail, int64(e.MaxTokens), 10)
	}
	if len(e.Stop) > 0 && !seenStop {
		ed.addMember(keyStop)
		ed.tail = appendStrings(ed.tail, e.Stop)
	}
	if e.IncludeUsage && !seenOptions {
		ed.addMember(keyStreamOptions)
		ed.tail = append(ed.tail, `{"include_usage":true}`...)
	}
	if len(e.ExtraBody) > 0 {
		if err := ed.addExtra(keys); err != nil {
			return nil, err
		}
	}

	if len(ed.splices) == 0 && len(ed.tail) == 0 {
		return body, nil
	}
	return ed.build(obj.Close, lastEnd), nil
}

// memberName returns the current key of obj when it is one an edit cares about, else "".
func memberName(body []byte, obj *jsonspan.Object) string {
	raw := obj.RawKey(body)
	if obj.KeyEscaped {
		s, err := jsonspan.Unquote(obj.Key.In(body))
		if err != nil {
			return ""
		}
		raw = []byte(s)
	}
	switch string(raw) {
	case keyModel:
		return keyModel
	case keyStop:
		return keyStop
	case keyMaxTokens:
		return keyMaxTokens
	case keyMaxCompletion:
		return keyMaxCompletion
	case keyStreamOptions:
		return keyStreamOptions
	case keyMessages:
		return keyMessages
	}
	return ""
}

// replace records that body[v] becomes the bytes appended to scratch since from.
func (ed *editor) replace(v jsonspan.Span, from int) {
	ed.splices = append(ed.splices, splice{v.Start, v.End, from, len(ed.scratch)})
}

// addMember starts a new member of the tail; the caller appends its value.
func (ed *editor) addMember(name string) {
	ed.added = append(ed.added, name)
	ed.tail = append(ed.tail, ',')
	ed.tail = jsonspan.AppendString(ed.tail, name)
	ed.tail = append(ed.tail, ':')
}

func (ed *editor) setModel(v jsonspan.Span) {
	if rawStringIs(v.In(ed.body), ed.edit.Model) {
		return
	}
	from := len(ed.scratch)
	ed.scratch = jsonspan.AppendString(ed.scratch, ed.edit.Model)
	ed.replace(v, from)
}

// mergeStop puts the client's stop words first, then the request's words not yet in the list.
func (ed *editor) mergeStop(v jsonspan.Span) error {
	raw := v.In(ed.body)
	var req []string
	switch raw[0] {
	case 'n': // null: no stop words
	case '"':
		s, err := jsonspan.Unquote(raw)
		if err != nil {
			return err
		}
		req = []string{s}
	case '[':
		arr, _ := jsonspan.NewArray(raw, 0, jsonspan.Strict)
		for arr.Next() {
			if raw[arr.Val.Start] != '"' {
				return fmt.Errorf("%w: stop holds a non-string", ErrInvalidField)
			}
			s, err := jsonspan.Unquote(arr.Val.In(raw))
			if err != nil {
				return err
			}
			req = append(req, s)
		}
	default:
		return fmt.Errorf("%w: stop is neither a string nor an array", ErrInvalidField)
	}
	merged := append([]string(nil), ed.edit.Stop...)
	for _, w := range req {
		if !slices.Contains(merged, w) {
			merged = append(merged, w)
		}
	}
	if raw[0] != 'n' && slices.Equal(merged, req) {
		return nil // the request already has the client's words first
	}
	from := len(ed.scratch)
	ed.scratch = appendStrings(ed.scratch, merged)
	ed.replace(v, from)
	return nil
}

// capTokens lowers a max_tokens or max_completion_tokens above the cap; null counts as absent.
func (ed *editor) capTokens(name string, v jsonspan.Span) error {
	raw := v.In(ed.body)
	switch c := raw[0]; {
	case c == 'n':
	case c == '-' || '0' <= c && c <= '9':
		if !exceeds(raw, ed.edit.MaxTokens) {
			return nil
		}
	default:
		return fmt.Errorf("%w: %s is not a number", ErrInvalidField, name)
	}
	from := len(ed.scratch)
	ed.scratch = strconv.AppendInt(ed.scratch, int64(ed.edit.MaxTokens), 10)
	ed.replace(v, from)
	return nil
}

// exceeds reports whether the JSON number num is greater than limit.
func exceeds(num []byte, limit int) bool {
	if len(num) <= 18 && bytes.IndexAny(num, "-.eE") < 0 {
		n := 0
		for _, c := range num {
			n = n*10 + int(c-'0')
		}
		return n > limit
	}
	// num is a valid number, so the only error is a range one, which comes with ±Inf or 0: still ordered.
	f, _ := strconv.ParseFloat(string(num), 64)
	return f > float64(limit)
}

// includeUsage sets stream_options.include_usage to true, adding it when absent.
func (ed *editor) includeUsage(v jsonspan.Span) error {
	raw := v.In(ed.body)
	switch raw[0] {
	case 'n':
		from := len(ed.scratch)
		ed.scratch = append(ed.scratch, `{"include_usage":true}`...)
		ed.replace(v, from)
		return nil
	case '{':
	default:
		return fmt.Errorf("%w: stream_options is not an object", ErrInvalidField)
	}
	obj, _ := jsonspan.NewObject(ed.body, v.Start, jsonspan.Strict)
	found, lastEnd := false, -1
	for obj.Next() {
		lastEnd = obj.Val.End
		if !obj.KeyIs("include_usage") {
			continue
		}
		found = true
		if string(obj.Val.In(ed.body)) != "true" {
			from := len(ed.scratch)
			ed.scratch = append(ed.scratch, "true"...)
			ed.replace(obj.Val, from)
		}
	}
	if found {
		return nil
	}
	from := len(ed.scratch)
	at := obj.Close
	if lastEnd >= 0 {
		at = lastEnd
		ed.scratch = append(ed.scratch, ',')
	}
	ed.scratch = append(ed.scratch, `"include_usage":true`...)
	ed.replace(jsonspan.Span{Start: at, End: at}, from)
	return nil
}

var thinkOpen = []byte("<think>")

// stripThink removes <think>…</think> blocks from the string content of assistant messages.
func (ed *editor) stripThink(v jsonspan.Span) error {
	b := ed.body
	if b[v.Start] != '[' {
		return nil // not chat messages: nothing to strip
	}
	elems, _ := jsonspan.NewObjectElems(b, v.Start)
	for elems.Next() {
		// The role may come after the content, so the content is kept until the message ends.
		var (
			assistant bool
			content   jsonspan.Span
		)
		for obj := &elems.Obj; obj.Next(); {
			switch {
			case obj.KeyIs("role"):
				assistant = rawStringIs(obj.Val.In(b), "assistant")
			case obj.KeyIs("content"):
				content = obj.Val // the last one, as decoders read it
			}
		}
		if assistant && content.End > 0 && b[content.Start] == '"' {
			if err := ed.stripContent(content); err != nil {
				return err
			}
		}
	}
	if elems.Err != nil {
		return fmt.Errorf("%w: %v", ErrNotJSON, elems.Err)
	}
	return nil
}

// stripContent edits one content string when it holds a complete think block.
func (ed *editor) stripContent(v jsonspan.Span) error {
	raw := v.In(ed.body)
	// The tags may be written with escapes (\u003c is what HTML-safe encoders emit): decode then.
	if !bytes.Contains(raw, thinkOpen) && bytes.IndexByte(raw, '\\') < 0 {
		return nil
	}
	s, err := jsonspan.Unquote(raw)
	if err != nil {
		return err
	}
	stripped, ok := removeThink(s)
	if !ok {
		return nil
	}
	from := len(ed.scratch)
	ed.scratch = jsonspan.AppendString(ed.scratch, stripped)
	ed.replace(v, from)
	return nil
}

// removeThink removes every <think>…</think> block of s (shortest match, across lines) and trims the
// result. It reports false, and s is to be kept as it is, when s holds no complete block.
func removeThink(s string) (string, bool) {
	const open, closing = "<think>", "</think>"
	var sb strings.Builder
	rest, removed := s, false
	for {
		i := strings.Index(rest, open)
		if i < 0 {
			break
		}
		j := strings.Index(rest[i+len(open):], closing)
		if j < 0 {
			break
		}
		sb.WriteString(rest[:i])
		rest = rest[i+len(open)+j+len(closing):]
		removed = true
	}
	if !removed {
		return s, false
	}
	sb.WriteString(rest)
	return strings.TrimSpace(sb.String()), true
}

// addExtra adds the members of ExtraBody whose keys neither the request nor an earlier edit has.
func (ed *editor) addExtra(reqKeys []jsonspan.Span) error {
	x := ed.edit.ExtraBody
	obj, err := jsonspan.NewObject(x, 0, jsonspan.Strict)
	if err != nil {
		return fmt.Errorf("extra_body: %w", err)
	}
	var extraBuf [16]jsonspan.Span
	extra := extraBuf[:0] // keys of ExtraBody added so far, against its own duplicates
outer:
	for obj.Next() {
		for _, k := range reqKeys {
			if sameKey(ed.body, k, x, obj.Key) {
				continue outer
			}
		}
		for _, k := range extra {
			if sameKey(x, k, x, obj.Key) {
				continue outer
			}
		}
		for _, name := range ed.added {
			if obj.KeyIs(name) {
				continue outer
			}
		}
		extra = append(extra, obj.Key)
		ed.tail = append(ed.tail, ',')
		ed.tail = append(ed.tail, obj.Key.In(x)...)
		ed.tail = append(ed.tail, ':')
		ed.tail = append(ed.tail, obj.Val.In(x)...)
	}
	if obj.Err != nil {
		return fmt.Errorf("extra_body: %w", obj.Err)
	}
	if end := jsonspan.SkipSpace(x, obj.Close+1); end != len(x) {
		return fmt.Errorf("extra_body: %w", jsonspan.SyntaxError(x, end, "end of input"))
	}
	return nil
}

// sameKey reports whether the JSON strings a[ka] and b[kb] have the same value.
func sameKey(a []byte, ka jsonspan.Span, b []byte, kb jsonspan.Span) bool {
	ra, rb := ka.In(a), kb.In(b)
	if bytes.Equal(ra, rb) {
		return true
	}
	if bytes.IndexByte(ra, '\\') < 0 && bytes.IndexByte(rb, '\\') < 0 {
		return false
	}
	sa, errA := jsonspan.Unquote(ra)
	sb, errB := jsonspan.Unquote(rb)
	return errA == nil && errB == nil && sa == sb
}

// build writes the edited body: the splices in order, then the tail after the last member (or inside
// the empty object, without its leading comma). Every splice lies inside a member, so before lastEnd.
func (ed *editor) build(close, lastEnd int) []byte {
	tail := ed.tail
	at := lastEnd
	if at < 0 {
		at = close
		if len(tail) > 0 {
			tail = tail[1:]
		}
	}
	out := make([]byte, 0, len(ed.body)+len(ed.scratch)+len(tail))
	prev := 0
	for _, s := range ed.splices {
		out = append(out, ed.body[prev:s.start]...)
		out = append(out, ed.scratch[s.from:s.to]...)
		prev = s.end
	}
	out = append(out, ed.body[prev:at]...)
	out = append(out, tail...)
	return append(out, ed.body[at:]...)
}

// appendStrings appends list as a JSON array of strings.
func appendStrings(dst []byte, list []string) []byte {
	dst = append(dst, '[')
	for i, s := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonspan.AppendString(dst, s)
	}
	return append(dst, ']')
}
