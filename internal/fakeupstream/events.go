package fakeupstream

import "strconv"

// This file answers the two APIs whose streams name their events: OpenAI
// Responses (/v1/responses) and Anthropic Messages (/v1/messages). Neither
// ends with [DONE].

// appendResponse appends a Responses API object: the final one (output and
// usage) when done, else the in-progress one of response.created and
// response.in_progress.
func (x *exchange) appendResponse(b []byte, model string, done bool, completion int) []byte {
	b = x.appendID(append(b, `{"id":"`...), "resp_")
	b = append(b, `","object":"response","created_at":`...)
	b = strconv.AppendInt(b, x.created, 10)
	if !done {
		b = appendQuoted(append(b, `,"status":"in_progress","model":`...), model)
		return append(b, `,"output":[],"usage":null}`...)
	}
	b = appendQuoted(append(b, `,"status":"completed","model":`...), model)
	b = x.appendOutputMessage(append(b, `,"output":[`...), true)
	prompt, completion := x.p.usage(completion)
	b = append(b, `],"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	return append(b, "}}"...)
}

// appendOutputMessage appends the answer's output item: the assistant message,
// complete when done, else empty and in progress, as response.output_item.added
// announces it.
func (x *exchange) appendOutputMessage(b []byte, done bool) []byte {
	b = x.appendID(append(b, `{"type":"message","id":"`...), "msg_")
	if !done {
		return append(b, `","status":"in_progress","role":"assistant","content":[]}`...)
	}
	b = x.appendOutputText(append(b, `","status":"completed","role":"assistant","content":[`...), true)
	return append(b, "]}"...)
}

// appendOutputText appends the output_text content part: with the whole text
// when done, else empty, as response.content_part.added announces it.
func (x *exchange) appendOutputText(b []byte, done bool) []byte {
	b = append(b, `{"type":"output_text","annotations":[],"logprobs":[],"text":`...)
	if done {
		b = append(b, x.p.content...)
	} else {
		b = append(b, `""`...)
	}
	return append(b, '}')
}

// responsesStream sends the events of a streamed Responses API answer in the
// order the real API sends them, which the SDKs' stream accumulators rely on:
// the output item and its content part are announced (".added") before the
// text deltas that fill them, and closed (".done") before response.completed.
func (x *exchange) responsesStream(req *apiRequest) {
	p := x.p
	if !x.beginStream() {
		return
	}
	seq := int64(0)
	// event starts an event of type typ with the next sequence number; the
	// caller appends the rest of its fields and "}\n\n".
	event := func(b []byte, typ string) []byte {
		b = append(append(append(append(b, "event: "...), typ...), "\ndata: {\"type\":\""...), typ...)
		b = strconv.AppendInt(append(b, `","sequence_number":`...), seq, 10)
		seq++
		return b
	}
	// item appends the item_id, output_index and content_index of the text.
	item := func(b []byte) []byte {
		b = x.appendID(append(b, `,"item_id":"`...), "msg_")
		return append(b, `","output_index":0,"content_index":0`...)
	}
	b := event(x.buf[:0], "response.created")
	b = append(x.appendResponse(append(b, `,"response":`...), req.Model, false, 0), "}\n\n"...)
	defer func() { x.buf = b }()
	if !x.emit(b) {
		return
	}
	b = event(b[:0], "response.in_progress")
	b = append(x.appendResponse(append(b, `,"response":`...), req.Model, false, 0), "}\n\n"...)
	if !x.emit(b) {
		return
	}
	b = event(b[:0], "response.output_item.added")
	b = append(x.appendOutputMessage(append(b, `,"output_index":0,"item":`...), false), "}\n\n"...)
	if !x.emit(b) {
		return
	}
	b = item(event(b[:0], "response.content_part.added"))
	b = append(x.appendOutputText(append(b, `,"part":`...), false), "}\n\n"...)
	if !x.emit(b) {
		return
	}
	for i, t := range p.pieces {
		b = item(event(b[:0], "response.output_text.delta"))
		b = append(append(append(b, `,"logprobs":[],"delta":`...), t...), "}\n\n"...)
		if !x.chunk(i, b) {
			return
		}
	}
	b = item(event(b[:0], "response.output_text.done"))
	b = append(append(append(b, `,"logprobs":[],"text":`...), p.content...), "}\n\n"...)
	if !x.emit(b) {
		return
	}
	b = item(event(b[:0], "response.content_part.done"))
	b = append(x.appendOutputText(append(b, `,"part":`...), true), "}\n\n"...)
	if !x.emit(b) {
		return
	}
	b = event(b[:0], "response.output_item.done")
	b = append(x.appendOutputMessage(append(b, `,"output_index":0,"item":`...), true), "}\n\n"...)
	if !x.emit(b) {
		return
	}
	b = event(b[:0], "response.completed")
	b = append(x.appendResponse(append(b, `,"response":`...), req.Model, true, len(p.pieces)), "}\n\n"...)
	if !x.emit(b) {
		return
	}
	x.endStream(false)
}

// appendMessage appends an Anthropic message: the final one when done, else
// the empty one of message_start.
func (x *exchange) appendMessage(b []byte, model string, done bool) []byte {
	b = x.appendID(append(b, `{"id":"`...), "msg_")
	b = appendQuoted(append(b, `","type":"message","role":"assistant","model":`...), model)
	prompt, completion := x.p.usage(DefaultCompletionTokens)
	if !done {
		b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":`...)
		b = strconv.AppendInt(b, int64(prompt), 10)
		return append(b, `,"output_tokens":1}}`...)
	}
	b = append(append(b, `,"content":[{"type":"text","text":`...), x.p.content...)
	b = append(b, `}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	return append(b, "}}"...)
}

func (x *exchange) message(req *apiRequest) {
	x.buf = x.appendMessage(x.buf[:0], req.Model, true)
	x.writeJSON(x.p.status, x.buf)
}

var (
	contentBlockStart = []byte("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
	contentBlockStop  = []byte("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n")
	messageStop       = []byte("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
)

func (x *exchange) messagesStream(req *apiRequest) {
	p := x.p
	if !x.beginStream() {
		return
	}
	b := append(x.buf[:0], "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"...)
	b = append(x.appendMessage(b, req.Model, false), "}\n\n"...)
	defer func() { x.buf = b }()
	if !x.emit(b) || !x.emit(contentBlockStart) {
		return
	}
	b = append(b[:0], "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":"...)
	head := len(b)
	for i, t := range p.pieces {
		b = append(append(b[:head], t...), "}}\n\n"...)
		if !x.chunk(i, b) {
			return
		}
	}
	if !x.emit(contentBlockStop) {
		return
	}
	_, completion := p.usage(len(p.pieces))
	b = append(b[:0], "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":"...)
	b = append(strconv.AppendInt(b, int64(completion), 10), "}}\n\n"...)
	if !x.emit(b) || !x.emit(messageStop) {
		return
	}
	x.endStream(false)
}
