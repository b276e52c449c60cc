package sse

import (
	"bytes"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"
)

// AggregateKind is the API whose stream an Aggregate rebuilds.
type AggregateKind uint8

const (
	// AggregateChat rebuilds a chat.completion from chat.completion.chunk events.
	AggregateChat AggregateKind = iota + 1
	// AggregateCompletion rebuilds a text_completion from its chunks.
	AggregateCompletion
	// AggregateResponses keeps the Responses API's final response object.
	AggregateResponses
	// AggregateMessages rebuilds an Anthropic Message from its events.
	AggregateMessages
)

// Aggregate builds, event by event, the one response object a stream amounts to: what the
// audit log stores of a stream (SPEC §8) instead of its transcript. It keeps only what the
// object needs, never the events:
//
//   - chat: id, created, model and system_fingerprint as first seen; per choice index the
//     message (role, default "assistant"; content, refusal, reasoning and reasoning_content
//     concatenated; tool_calls merged by index, id, type and function.name taking the last
//     value, function.arguments concatenated) and the last finish_reason; the last non-null
//     usage;
//   - completions: the same, with each choice's text concatenated;
//   - responses: the response object of response.completed (or response.failed or
//     response.incomplete); a stream cut before one keeps the last response object seen
//     (response.created, response.in_progress) with the output text that arrived as its
//     output, or a placeholder like the origin's when none came;
//   - messages: message_start's message, the content blocks of content_block_start with their
//     deltas applied (text, thinking and partial_json appended, signature replaced), the
//     stop_reason and stop_sequence of message_delta, and usage merged member by member, so
//     the input_tokens of message_start survive the message_delta usage (the origin replaced
//     usage wholesale and lost them). Nothing after message_stop counts.
//
// String values are kept as their JSON text, escapes as written: the concatenation of the
// insides of JSON strings is the inside of a valid JSON string, so nothing is decoded or
// re-encoded. Events that do not parse are skipped. Everything kept counts against a byte
// limit (the audit's max_body_size); what would pass it is only counted (Dropped), and the
// object is then stored cut, with the truncation marker.
//
// An Aggregate is not safe for concurrent use.
type Aggregate struct {
	kind    AggregateKind
	limit   int   // bytes kept at most; <= 0: no limit
	used    int   // bytes kept
	dropped int64 // bytes not kept for the limit
	stopped bool  // messages: message_stop was seen

	// chat, completions
	top     []member // id, created, model, system_fingerprint
	usage   []byte   // the last non-null usage value
	choices []aggChoice

	// responses
	resp  []byte // the last response object
	final bool   // resp is from a terminal event
	text  []byte // output_text deltas (escaped), for a stream cut before its end

	// scratch holds a choice's delta members while the choice is read (addChoice).
	scratch []deltaField

	// messages
	msg      []member // message_start's message members but content and usage, then message_delta's
	msgUsage []member
	blocks   []aggBlock
}

// member is one member of an object as written: the key without its quotes and the raw value.
type member struct{ key, val []byte }

type aggChoice struct {
	index                               int
	role, finish                        []byte // raw JSON values
	content, refusal, reasoning, reason []byte // escaped string insides; reason is reasoning_content
	text                                []byte // completions
	tools                               []aggTool
}

type aggTool struct {
	index          int
	id, typ, name  []byte // raw JSON values
	args           []byte // escaped string inside
	hasID, hasName bool
}

type aggBlock struct {
	index    int
	fields   []member // content_block members but text and thinking
	text     []byte   // escaped inside
	thinking []byte   // escaped inside
	json     []byte   // partial_json concatenated, escaped inside
	hasText  bool
	hasThink bool
}

// Per-entry charges: a new choice, tool call, block or member costs this much of the limit on
// top of its bytes, so that an upstream cannot grow the object with empty entries.
const aggEntryCost = 32

// NewAggregate returns an Aggregate of kind keeping at most limit bytes (no limit if limit <= 0).
func NewAggregate(kind AggregateKind, limit int) *Aggregate {
	return &Aggregate{kind: kind, limit: limit}
}

// Dropped returns how many bytes were left out for the limit: when it is not zero, the
// object is incomplete and the full one would have been about that much longer.
func (a *Aggregate) Dropped() int64 { return a.dropped }

// charge reports whether n more bytes may be kept, and counts them as kept or dropped.
func (a *Aggregate) charge(n int) bool {
	if a.limit > 0 && a.used+n > a.limit {
		a.dropped += int64(n)
		return false
	}
	a.used += n
	return true
}

// cat appends src to dst, or as much of it as the limit allows: the text an object is cut in
// then fills the stored body up to the limit.
func (a *Aggregate) cat(dst, src []byte) []byte {
	if a.limit > 0 {
		if room := a.limit - a.used; room < len(src) {
			room = max(room, 0)
			a.dropped += int64(len(src) - room)
			src = src[:room]
		}
	}
	a.used += len(src)
	return append(dst, src...)
}

// set replaces dst with src if the limit allows; only the growth is charged.
func (a *Aggregate) set(dst, src []byte) []byte {
	if d := len(src) - len(dst); d > 0 && !a.charge(d) {
		return dst
	} else if d < 0 {
		a.used += d
	}
	return append(dst[:0], src...)
}

// setField sets the member key of fs to val, adding it if absent.
func (a *Aggregate) setField(fs []member, key, val []byte) []member {
	for i := range fs {
		if bytes.Equal(fs[i].key, key) {
			fs[i].val = a.set(fs[i].val, val)
			return fs
		}
	}
	if !a.charge(aggEntryCost + len(key) + len(val)) {
		return fs
	}
	return append(fs, member{key: bytes.Clone(key), val: bytes.Clone(val)})
}

// strInside returns the inside of the JSON string v, or ok false if v is not a string.
func strInside(v []byte) (inside []byte, ok bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil, false
	}
	return v[1 : len(v)-1], true
}

// atoiIndex reads a small non-negative JSON integer; anything else is -1.
func atoiIndex(v []byte) int {
	if len(v) == 0 || len(v) > 9 {
		return -1
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// Add takes one event of the stream: its name (nil if none) and its data, as the caller
// received them. Pings, comments and [DONE] are not events of the object; the caller need
// not pass them (they are ignored). A nil Aggregate ignores every event, so that a caller not
// keeping the object need not test for it.
func (a *Aggregate) Add(name, data []byte) {
	if a == nil {
		return
	}
	switch a.kind {
	case AggregateChat, AggregateCompletion:
		a.addChunk(data)
	case AggregateResponses:
		a.addResponseEvent(data)
	case AggregateMessages:
		a.addMessageEvent(data)
	}
}

// addChunk takes a chat or completion chunk in one pass: the containers on the way to the
// content (choices, each choice, its delta) are walked into where they start rather than
// delimited first and walked again, so each byte of a chunk is read about once.
func (a *Aggregate) addChunk(data []byte) {
	obj, ok := newLazyObject(data, 0)
	if !ok {
		return
	}
	for obj.next() {
		k := obj.key
		switch string(k) {
		case "choices":
			obj.end(a.addChoices(data, obj.val))
		case "id", "created", "model", "system_fingerprint":
			if v := obj.skip(); !hasField(a.top, k) && len(v) > 0 && v[0] != 'n' {
				a.top = a.setField(a.top, k, v)
			}
		case "usage":
			if v := obj.skip(); len(v) > 0 && v[0] == '{' {
				a.usage = a.set(a.usage, v)
			}
		default:
			obj.skip()
		}
	}
}

// addChoices takes the choices array whose value starts at b[i] and returns its end (-1 when
// it cannot be delimited). A value that is not an array is skipped.
func (a *Aggregate) addChoices(b []byte, i int) int {
	if i >= len(b) || b[i] != '[' {
		return jsonspan.ValueEnd(b, i)
	}
	i++
	for n := 0; ; n++ {
		i = jsonspan.SkipSpace(b, i)
		if i < len(b) && b[i] == ']' {
			return i + 1
		}
		if n > 0 {
			if i >= len(b) || b[i] != ',' {
				return -1
			}
			i = jsonspan.SkipSpace(b, i+1)
		}
		if i < len(b) && b[i] == '{' {
			i = a.addChoice(b, i)
		} else {
			i = jsonspan.ValueEnd(b, i)
		}
		if i < 0 {
			return -1
		}
	}
}

// deltaField is one member of a chat delta kept until the choice's index is known: the index
// may come after the delta.
type deltaField struct {
	key string // one of deltaKeys
	val []byte
}

// deltaKeys are the members of a chat delta the object keeps.
var deltaKeys = [...]string{"role", "content", "refusal", "reasoning", "reasoning_content", "tool_calls"}

// deltaKey returns k as the deltaKeys entry equal to it, without allocating; ok is false for
// other keys.
func deltaKey(k []byte) (key string, ok bool) {
	for _, dk := range deltaKeys {
		if string(k) == dk {
			return dk, true
		}
	}
	return "", false
}

// addChoice takes the choice object at b[i] and returns its end (-1 when it cannot be
// delimited). What was read of a malformed choice still counts, as far as it goes.
func (a *Aggregate) addChoice(b []byte, i int) int {
	obj, _ := newLazyObject(b, i)
	var index, finish, text []byte
	sawDelta := false
	fields := a.scratch[:0]
	for obj.next() {
		switch string(obj.key) {
		case "index":
			index = obj.skip()
		case "finish_reason":
			finish = obj.skip()
		case "text":
			text = obj.skip()
		case "delta":
			sawDelta = true
			if obj.val < len(b) && b[obj.val] == '{' {
				var end int
				fields, end = deltaFields(b, obj.val, fields)
				obj.end(end)
			} else {
				obj.skip()
			}
		default:
			obj.skip()
		}
	}
	a.scratch = fields[:0]
	idx := 0
	if index != nil {
		if idx = atoiIndex(index); idx < 0 {
			return obj.close()
		}
	}
	c := a.choice(idx)
	if c == nil {
		return obj.close()
	}
	if len(finish) > 0 && finish[0] == '"' {
		c.finish = a.set(c.finish, finish)
	}
	if s, ok := strInside(text); ok && a.kind == AggregateCompletion {
		c.text = a.cat(c.text, s)
	}
	if sawDelta && a.kind == AggregateChat {
		for _, f := range fields {
			a.addDeltaField(c, f.key, f.val)
		}
	}
	return obj.close()
}

// deltaFields appends the members of the delta object at b[i] that addDeltaField takes, in
// order, and returns the object's end (-1 when it cannot be delimited).
func deltaFields(b []byte, i int, fields []deltaField) ([]deltaField, int) {
	obj, _ := newLazyObject(b, i)
	for obj.next() {
		k, keep := deltaKey(obj.key)
		if v := obj.skip(); keep && v != nil {
			fields = append(fields, deltaField{key: k, val: v})
		}
	}
	return fields, obj.close()
}

// lazyObject walks the members of an object as jsonspan.Object does in Loose mode, except
// that it does not delimit a value before handing it over: after next, the caller either
// skips the value or walks into it and tells where it ended (end). A value the caller walks
// into is then read once, not once to find its end and again to look inside.
type lazyObject struct {
	b      []byte
	i      int    // after the last value; -1 while the caller holds a value
	key    []byte // the current key between its quotes, escapes as written
	val    int    // where the current value starts
	n      int
	closed int // after the closing brace once next returned false, else -1
}

// newLazyObject starts a walk of the object at or after b[i] (after white space); ok is false
// when there is none.
func newLazyObject(b []byte, i int) (o lazyObject, ok bool) {
	i = jsonspan.SkipSpace(b, i)
	if i >= len(b) || b[i] != '{' {
		return lazyObject{i: -1, closed: -1}, false
	}
	return lazyObject{b: b, i: i + 1, closed: -1}, true
}

func (o *lazyObject) next() bool {
	if o.i < 0 || o.closed >= 0 {
		o.i = -1
		return false
	}
	b := o.b
	i := jsonspan.SkipSpace(b, o.i)
	if i < len(b) && b[i] == '}' {
		o.closed = i + 1
		return false
	}
	if o.n > 0 {
		if i >= len(b) || b[i] != ',' {
			o.i = -1
			return false
		}
		i = jsonspan.SkipSpace(b, i+1)
	}
	ke := stringEnd(b, i)
	if ke < 0 {
		o.i = -1
		return false
	}
	o.key = b[i+1 : ke-1]
	i = jsonspan.SkipSpace(b, ke)
	if i >= len(b) || b[i] != ':' {
		o.i = -1
		return false
	}
	o.val = jsonspan.SkipSpace(b, i+1)
	o.n++
	o.i = -1
	return true
}

// skip delimits the current value and returns it; nil (and the walk ends) when it cannot be.
func (o *lazyObject) skip() []byte {
	var e int
	if o.val < len(o.b) && o.b[o.val] == '"' {
		e = stringEnd(o.b, o.val)
	} else {
		e = jsonspan.ValueEnd(o.b, o.val)
	}
	if e < 0 {
		o.i = -1
		return nil
	}
	o.i = e
	return o.b[o.val:e]
}

// end tells where the current value, walked by the caller, ended (-1: it could not be
// delimited, and the walk ends).
func (o *lazyObject) end(e int) { o.i = e }

// stringEnd is jsonspan.StringEnd with a plain loop for the short strings of a chunk (keys,
// ids, a few words of content), where the call to bytes.IndexByte costs more than the search.
func stringEnd(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for j := i + 1; j < len(b) && j <= i+32; j++ {
		switch b[j] {
		case '"':
			return j + 1
		case '\\':
			return jsonspan.StringEnd(b, i)
		}
	}
	return jsonspan.StringEnd(b, i)
}

// close returns the index after the object's closing brace once next returned false, or -1
// when the walk ended on something it could not read.
func (o *lazyObject) close() int { return o.closed }

func hasField(fs []member, key []byte) bool {
	for i := range fs {
		if bytes.Equal(fs[i].key, key) {
			return true
		}
	}
	return false
}

// choice returns the choice of index i, adding it in index order; nil if the limit is reached.
func (a *Aggregate) choice(i int) *aggChoice {
	return byIndex(a, &a.choices, i, func(c *aggChoice) *int { return &c.index })
}

// byIndex returns the entry of *s whose index (the int indexOf points at) is i, inserting a new
// one in index order when there is none and the limit allows it; nil at the limit. Streams
// send choices and tool calls by index, in any order and any number of times.
func byIndex[T any](a *Aggregate, s *[]T, i int, indexOf func(*T) *int) *T {
	at := len(*s)
	for j := range *s {
		if k := *indexOf(&(*s)[j]); k == i {
			return &(*s)[j]
		} else if k > i {
			at = j
			break
		}
	}
	if !a.charge(aggEntryCost) {
		return nil
	}
	var zero T
	*s = append(*s, zero)
	copy((*s)[at+1:], (*s)[at:])
	(*s)[at] = zero
	*indexOf(&(*s)[at]) = i
	return &(*s)[at]
}

// addDeltaField applies one member of a chat delta to c.
func (a *Aggregate) addDeltaField(c *aggChoice, key string, v []byte) {
	switch key {
	case "role":
		if len(v) > 0 && v[0] == '"' {
			c.role = a.set(c.role, v)
		}
	case "content":
		if s, ok := strInside(v); ok {
			c.content = a.cat(c.content, s)
		}
	case "refusal":
		if s, ok := strInside(v); ok {
			c.refusal = a.cat(c.refusal, s)
		}
	case "reasoning":
		if s, ok := strInside(v); ok {
			c.reasoning = a.cat(c.reasoning, s)
		}
	case "reasoning_content":
		if s, ok := strInside(v); ok {
			c.reason = a.cat(c.reason, s)
		}
	case "tool_calls":
		arr, err := jsonspan.NewArray(v, 0, jsonspan.Loose)
		if err != nil {
			return
		}
		for arr.Next() {
			a.addToolCall(c, arr.Val.In(v))
		}
	}
}

// tool returns the tool call of index i of c, adding it in index order; nil at the limit.
func (a *Aggregate) tool(c *aggChoice, i int) *aggTool {
	return byIndex(a, &c.tools, i, func(t *aggTool) *int { return &t.index })
}

func (a *Aggregate) addToolCall(c *aggChoice, b []byte) {
	idx := 0
	if m, ok := jsonspan.FindMember(b, 0, "index"); ok {
		if idx = atoiIndex(m.Val.In(b)); idx < 0 {
			return
		}
	}
	t := a.tool(c, idx)
	if t == nil {
		return
	}
	obj, err := jsonspan.NewObject(b, 0, jsonspan.Loose)
	if err != nil {
		return
	}
	for obj.Next() {
		v := obj.Val.In(b)
		switch string(obj.RawKey(b)) {
		case "id":
			if len(v) > 0 && v[0] == '"' {
				t.id, t.hasID = a.set(t.id, v), true
			}
		case "type":
			if len(v) > 0 && v[0] == '"' {
				t.typ = a.set(t.typ, v)
			}
		case "function":
			fn, err := jsonspan.NewObject(v, 0, jsonspan.Loose)
			if err != nil {
				continue
			}
			for fn.Next() {
				fv := fn.Val.In(v)
				switch string(fn.RawKey(v)) {
				case "name":
					if len(fv) > 0 && fv[0] == '"' {
						t.name, t.hasName = a.set(t.name, fv), true
					}
				case "arguments":
					if s, ok := strInside(fv); ok {
						t.args = a.cat(t.args, s)
					}
				}
			}
		}
	}
}

// isTerminalResponse reports whether a Responses event type ends the response.
func isTerminalResponse(typ []byte) bool {
	switch string(typ) {
	case `"response.completed"`, `"response.failed"`, `"response.incomplete"`:
		return true
	}
	return false
}

func (a *Aggregate) addResponseEvent(data []byte) {
	if a.final {
		return
	}
	obj, err := jsonspan.NewObject(data, 0, jsonspan.Loose)
	if err != nil {
		return
	}
	var typ, resp, delta []byte
	for obj.Next() {
		switch string(obj.RawKey(data)) {
		case "type":
			typ = obj.Val.In(data)
		case "response":
			resp = obj.Val.In(data)
		case "delta":
			delta = obj.Val.In(data)
		}
	}
	if obj.Err != nil {
		return
	}
	switch {
	case len(resp) > 0 && resp[0] == '{':
		a.resp = a.set(a.resp, resp)
		if isTerminalResponse(typ) {
			a.final = true
			a.used -= len(a.text)
			a.text = nil // the final object has the output
		}
	case string(typ) == `"response.output_text.delta"`:
		if s, ok := strInside(delta); ok {
			a.text = a.cat(a.text, s)
		}
	}
}

func (a *Aggregate) addMessageEvent(data []byte) {
	if a.stopped {
		return
	}
	obj, err := jsonspan.NewObject(data, 0, jsonspan.Loose)
	if err != nil {
		return
	}
	var typ, index, message, block, delta, usage []byte
	for obj.Next() {
		v := obj.Val.In(data)
		switch string(obj.RawKey(data)) {
		case "type":
			typ = v
		case "index":
			index = v
		case "message":
			message = v
		case "content_block":
			block = v
		case "delta":
			delta = v
		case "usage":
			usage = v
		}
	}
	if obj.Err != nil {
		return
	}
	switch string(typ) {
	case `"message_start"`:
		m, err := jsonspan.NewObject(message, 0, jsonspan.Loose)
		if err != nil {
			return
		}
		for m.Next() {
			k, v := m.RawKey(message), m.Val.In(message)
			switch string(k) {
			case "content":
			case "usage":
				a.mergeUsage(v)
			default:
				a.msg = a.setField(a.msg, k, v)
			}
		}
	case `"content_block_start"`:
		a.startBlock(atoiIndex(index), block)
	case `"content_block_delta"`:
		a.blockDelta(atoiIndex(index), delta)
	case `"message_delta"`:
		if d, err := jsonspan.NewObject(delta, 0, jsonspan.Loose); err == nil {
			for d.Next() {
				a.msg = a.setField(a.msg, d.RawKey(delta), d.Val.In(delta))
			}
		}
		a.mergeUsage(usage)
	case `"message_stop"`:
		a.stopped = true
	}
}

// mergeUsage sets each member of the usage object u in the message's usage.
func (a *Aggregate) mergeUsage(u []byte) {
	obj, err := jsonspan.NewObject(u, 0, jsonspan.Loose)
	if err != nil {
		return
	}
	for obj.Next() {
		a.msgUsage = a.setField(a.msgUsage, obj.RawKey(u), obj.Val.In(u))
	}
}

// block returns the content block of index i, nil if there is none.
func (a *Aggregate) block(i int) *aggBlock {
	for j := range a.blocks {
		if a.blocks[j].index == i {
			return &a.blocks[j]
		}
	}
	return nil
}

func (a *Aggregate) startBlock(i int, b []byte) {
	obj, err := jsonspan.NewObject(b, 0, jsonspan.Loose)
	if i < 0 || err != nil || a.block(i) != nil || !a.charge(aggEntryCost) {
		return
	}
	a.blocks = append(a.blocks, aggBlock{index: i})
	bl := &a.blocks[len(a.blocks)-1]
	for obj.Next() {
		k, v := obj.RawKey(b), obj.Val.In(b)
		switch s, isStr := strInside(v); {
		case string(k) == "text" && isStr:
			bl.text, bl.hasText = a.cat(bl.text, s), true
		case string(k) == "thinking" && isStr:
			bl.thinking, bl.hasThink = a.cat(bl.thinking, s), true
		default:
			bl.fields = a.setField(bl.fields, k, v)
		}
	}
}

func (a *Aggregate) blockDelta(i int, d []byte) {
	bl := a.block(i)
	if bl == nil {
		return
	}
	obj, err := jsonspan.NewObject(d, 0, jsonspan.Loose)
	if err != nil {
		return
	}
	for obj.Next() {
		k, v := obj.RawKey(d), obj.Val.In(d)
		s, isStr := strInside(v)
		if !isStr {
			continue
		}
		switch string(k) {
		case "text":
			bl.text, bl.hasText = a.cat(bl.text, s), true
		case "thinking":
			bl.thinking, bl.hasThink = a.cat(bl.thinking, s), true
		case "partial_json":
			bl.json = a.cat(bl.json, s)
		case "signature":
			bl.fields = a.setField(bl.fields, k, v)
		}
	}
}

// AppendJSON appends the object built so far to dst. With Dropped not zero it is cut short
// where the limit was reached (and may then not be valid JSON): the caller stores it capped,
// with the truncation marker.
func (a *Aggregate) AppendJSON(dst []byte) []byte {
	switch a.kind {
	case AggregateChat, AggregateCompletion:
		return a.appendCompletion(dst)
	case AggregateResponses:
		return a.appendResponse(dst)
	case AggregateMessages:
		return a.appendMessage(dst)
	}
	return dst
}

// appendFields appends the members fs, the first after a comma if comma is set; it returns
// whether a comma is needed next.
func appendFields(dst []byte, fs []member, comma bool) ([]byte, bool) {
	for _, f := range fs {
		dst, comma = appendField(dst, f, comma)
	}
	return dst, comma
}

// appendField appends the member f, after a comma if comma is set, and returns true.
func appendField(dst []byte, f member, comma bool) ([]byte, bool) {
	if comma {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, f.key...)
	dst = append(dst, `":`...)
	return append(dst, f.val...), true
}

// appendStr appends "key":"inside", after a comma if comma is set.
func appendStr(dst []byte, key string, inside []byte, comma bool) []byte {
	if comma {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, key...)
	dst = append(dst, `":"`...)
	dst = append(dst, inside...)
	return append(dst, '"')
}

func (a *Aggregate) appendCompletion(dst []byte) []byte {
	dst = append(dst, '{')
	comma := false
	for _, f := range a.top {
		if comma {
			dst = append(dst, ',')
		}
		comma = true
		dst = append(dst, '"')
		dst = append(dst, f.key...)
		dst = append(dst, `":`...)
		dst = append(dst, f.val...)
		if string(f.key) == "id" {
			// The object type right after the id, where the APIs put it.
			if a.kind == AggregateChat {
				dst = append(dst, `,"object":"chat.completion"`...)
			} else {
				dst = append(dst, `,"object":"text_completion"`...)
			}
		}
	}
	if !hasField(a.top, []byte("id")) {
		if comma {
			dst = append(dst, ',')
		}
		if a.kind == AggregateChat {
			dst = append(dst, `"object":"chat.completion"`...)
		} else {
			dst = append(dst, `"object":"text_completion"`...)
		}
	}
	dst = append(dst, `,"choices":[`...)
	choices := a.choices
	if len(choices) == 0 {
		choices = []aggChoice{{}}
	}
	for i := range choices {
		c := &choices[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"index":`...)
		dst = appendInt(dst, c.index)
		if a.kind == AggregateCompletion {
			dst = appendStr(dst, "text", c.text, true)
		} else {
			dst = append(dst, `,"message":{"role":`...)
			if c.role != nil {
				dst = append(dst, c.role...)
			} else {
				dst = append(dst, `"assistant"`...)
			}
			for _, s := range [...]struct {
				key string
				v   []byte
			}{{"content", c.content}, {"refusal", c.refusal}, {"reasoning", c.reasoning}, {"reasoning_content", c.reason}} {
				if len(s.v) > 0 {
					dst = appendStr(dst, s.key, s.v, true)
				}
			}
			if len(c.tools) > 0 {
				dst = append(dst, `,"tool_calls":[`...)
				for j := range c.tools {
					t := &c.tools[j]
					if j > 0 {
						dst = append(dst, ',')
					}
					dst = append(dst, `{"index":`...)
					dst = appendInt(dst, t.index)
					if t.hasID {
						dst = append(dst, `,"id":`...)
						dst = append(dst, t.id...)
					}
					dst = append(dst, `,"type":`...)
					if t.typ != nil {
						dst = append(dst, t.typ...)
					} else {
						dst = append(dst, `"function"`...)
					}
					dst = append(dst, `,"function":{"name":`...)
					if t.hasName {
						dst = append(dst, t.name...)
					} else {
						dst = append(dst, `""`...)
					}
					dst = append(dst, `,"arguments":"`...)
					dst = append(dst, t.args...)
					dst = append(dst, `"}}`...)
				}
				dst = append(dst, ']')
			}
			dst = append(dst, '}')
		}
		dst = append(dst, `,"finish_reason":`...)
		if c.finish != nil {
			dst = append(dst, c.finish...)
		} else {
			dst = append(dst, "null"...)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `],"usage":`...)
	if a.usage != nil {
		dst = append(dst, a.usage...)
	} else {
		dst = append(dst, "null"...)
	}
	return append(dst, '}')
}

func appendInt(dst []byte, n int) []byte {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(dst, b[i:]...)
}

// appendOutputMessage appends a Responses output array of one message with the text t.
func appendOutputMessage(dst, t []byte) []byte {
	if len(t) == 0 {
		return append(dst, "[]"...)
	}
	dst = append(dst, `[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"`...)
	dst = append(dst, t...)
	return append(dst, `"}]}]`...)
}

func (a *Aggregate) appendResponse(dst []byte) []byte {
	if a.resp == nil {
		dst = append(dst, `{"object":"response","output":`...)
		dst = appendOutputMessage(dst, a.text)
		return append(dst, `,"usage":{"input_tokens":0,"output_tokens":0,"total_tokens":0}}`...)
	}
	if a.final || len(a.text) == 0 {
		return append(dst, a.resp...)
	}
	// Cut before the end: the last response object seen, with the text that arrived as its output.
	if m, ok := jsonspan.FindMember(a.resp, 0, "output"); ok {
		dst = append(dst, a.resp[:m.Val.Start]...)
		dst = appendOutputMessage(dst, a.text)
		return append(dst, a.resp[m.Val.End:]...)
	}
	return append(dst, a.resp...)
}

func (a *Aggregate) appendMessage(dst []byte) []byte {
	dst = append(dst, '{')
	comma := false
	if len(a.msg) == 0 {
		dst = append(dst, `"type":"message","role":"assistant"`...)
		comma = true
	}
	dst, comma = appendFields(dst, a.msg, comma)
	if comma {
		dst = append(dst, ',')
	}
	dst = append(dst, `"content":[`...)
	for i := range a.blocks {
		b := &a.blocks[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '{')
		c := false
		for _, f := range b.fields {
			if string(f.key) == "input" && len(b.json) > 0 {
				continue
			}
			dst, c = appendField(dst, f, c)
		}
		if b.hasText {
			dst = appendStr(dst, "text", b.text, c)
			c = true
		}
		if b.hasThink {
			dst = appendStr(dst, "thinking", b.thinking, c)
			c = true
		}
		if len(b.json) > 0 {
			dst = appendInput(dst, b.json, c)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	if len(a.msgUsage) > 0 {
		dst = append(dst, `,"usage":{`...)
		dst, _ = appendFields(dst, a.msgUsage, false)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// appendInput appends a tool_use block's input from its partial_json deltas (the escaped
// inside of a string holding JSON text): the value itself when it is complete JSON, else, for
// a stream cut mid-way, the text as "partial_json" beside an empty input.
func appendInput(dst, escaped []byte, comma bool) []byte {
	if comma {
		dst = append(dst, ',')
	}
	start := len(dst)
	dst = append(dst, `"input":`...)
	vstart := len(dst)
	dst = appendUnescapedInside(dst, escaped)
	if v, err := jsonspan.ScanValue(dst, vstart); err == nil && jsonspan.SkipSpace(dst, v.End) == len(dst) {
		return dst
	}
	dst = append(dst[:start], `"input":{},"partial_json":"`...)
	dst = append(dst, escaped...)
	return append(dst, '"')
}

// appendUnescapedInside decodes the escaped inside of a JSON string.
func appendUnescapedInside(dst, inside []byte) []byte {
	q := make([]byte, 0, len(inside)+2)
	q = append(q, '"')
	q = append(q, inside...)
	q = append(q, '"')
	return jsonspan.AppendUnquoted(dst, q)
}
