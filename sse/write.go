package sse

import (
	"bytes"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"
)

// DoneData is the data of the event that ends an OpenAI-style stream.
const DoneData = "[DONE]"

// DoneEvent is the encoded end-of-stream event, ready to be written.
const DoneEvent = "data: [DONE]\n\n"

// IsDone reports whether data is the end-of-stream marker. Surrounding
// whitespace is tolerated because some upstreams pad it.
func IsDone(data []byte) bool {
	return string(bytes.TrimSpace(data)) == DoneData
}

// IsPing reports whether an upstream event is a keep-alive ping: an event
// named "ping", or data that is a JSON object whose "type" is "ping". A
// proxy replaces pings with an SSE comment instead of forwarding them.
func IsPing(name, data []byte) bool {
	if string(name) == "ping" {
		return true
	}
	// A ping is a tiny object: the length test keeps the scan off every ordinary chunk.
	if len(data) > maxPingSize || !bytes.Contains(data, []byte(`"ping"`)) {
		return false
	}
	m, ok := jsonspan.FindMember(data, 0, "type")
	return ok && string(m.Val.In(data)) == `"ping"`
}

// maxPingSize bounds the data of a {"type":"ping"} event, with room for whitespace and an id.
const maxPingSize = 128

// AppendLine is AppendEvent for data known to hold no line break (an Event without
// Multiline, or JSON encoded on one line): it frames it without scanning it.
func AppendLine(dst, name, line []byte) []byte {
	if len(name) > 0 {
		return AppendEvent(dst, name, line)
	}
	dst = append(dst, "data: "...)
	dst = append(dst, line...)
	return append(dst, '\n', '\n')
}

// AppendEvent appends the encoding of one event to dst: an "event:" line
// when name is not empty, one "data:" line per line of data, and the blank
// line that ends the event. Line breaks in data (LF, CRLF or CR) start new
// data lines, so any data round-trips through a Reader; line breaks in name
// would break the framing and are cut off.
func AppendEvent(dst, name, data []byte) []byte {
	if len(name) > 0 {
		if i := indexEOL(name); i >= 0 {
			name = name[:i]
		}
		dst = append(dst, "event: "...)
		dst = append(dst, name...)
		dst = append(dst, '\n')
	}
	dst = appendLines(dst, "data: ", data)
	return append(dst, '\n')
}

// AppendComment appends text as an SSE comment (": text"), one comment line
// per line of text, followed by a blank line. Clients ignore comments; they
// keep idle connections and intermediaries from timing out.
func AppendComment(dst, text []byte) []byte {
	if len(text) == 0 {
		return append(dst, ":\n\n"...)
	}
	dst = appendLines(dst, ": ", text)
	return append(dst, '\n')
}

// appendLines appends each line of text after prefix, ending each with LF.
func appendLines(dst []byte, prefix string, text []byte) []byte {
	for {
		i := indexEOL(text)
		dst = append(dst, prefix...)
		if i < 0 {
			dst = append(dst, text...)
			return append(dst, '\n')
		}
		dst = append(dst, text[:i]...)
		dst = append(dst, '\n')
		if text[i] == '\r' && i+1 < len(text) && text[i+1] == '\n' {
			i++
		}
		text = text[i+1:]
	}
}

// ErrorChunk returns the data of the chunk a proxy sends, instead of
// [DONE], when the upstream stream breaks after the response has started:
// a chat-completion-shaped chunk so that clients indexing choices[0] keep
// working, carrying an OpenAI-style error. message is JSON-escaped.
func ErrorChunk(message string) []byte {
	const (
		head = `{"error":{"code":"upstream_error","message":`
		tail = `},"choices":[{"index":0,"delta":{},"finish_reason":"error"}]}`
	)
	b := make([]byte, 0, len(head)+len(message)+len(tail)+8)
	b = append(b, head...)
	b = jsonspan.AppendString(b, message)
	return append(b, tail...)
}
