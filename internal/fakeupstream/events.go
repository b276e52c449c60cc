package fakeupstream

import "strconv"

// This file answers the two APIs whose streams name their events: OpenAI
// Responses (/v1/responses) and Anthropic Messages (/v1/messages). Neither
// ends with [DONE].

// appendResponse appends a Responses API object: the final one (output and
// usage) when done, else the in-progress one of response.created.
func (x *exchange) appendResponse(b []byte, model string, done bool, completion int) []byte {
	b = x.appendID(append(b, `{"id":"`...), "resp_")
	b = append(b, `","object":"response","created_at":`...)
	b = strconv.AppendInt(b, x.created, 10)
	if !done {
		b = appendQuoted(append(b, `,"status":"in_progress","model":`...), model)
		return append(b, `,"output":[],"usage":null}`...)
	}
	b = appendQuoted(append(b, `,"status":"completed","model":`...), model)
	b = x.appendID(append(b, `,"output":[{"type":"message","id":"`...), "msg_")
	b = append(b, `","status":"completed","role":"assistant","content":[{"type":"output_text","text":`...)
	b = append(b, x.p.content...)
	prompt, completion := x.p.usage(completion)
	b = append(b, `,"annotations":[]}]}],"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	return append(b, "}}"...)
}

func (x *exchange) responsesStream(req *apiRequest) {
	p := x.p
	if !x.beginStream() {
		return
	}
	b := append(x.buf[:0], "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":"...)
	b = append(x.appendResponse(b, req.Model, false, 0), "}\n\n"...)
	defer func() { x.buf = b }()
	if !x.emit(b) {
		return
	}
	b = append(b[:0], "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\""...)
	b = x.appendID(b, "msg_")
	b = append(b, `","output_index":0,"content_index":0,"sequence_number":`...)
	head := len(b)
	for i, t := range p.pieces {
		b = strconv.AppendInt(b[:head], int64(i+1), 10)
		b = append(append(append(b, `,"delta":`...), t...), "}\n\n"...)
		if !x.chunk(i, b) {
			return
		}
	}
	b = append(b[:0], "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":"...)
	b = strconv.AppendInt(b, int64(len(p.pieces)+1), 10)
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
