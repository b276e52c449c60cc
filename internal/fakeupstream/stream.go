package fakeupstream

import (
	"bytes"
	"math"
	"net/http"
	"time"
)

// Constant SSE events.
var (
	pingEvent = []byte("event: ping\ndata: {\"type\":\"ping\"}\n\n")
	doneEvent = []byte("data: [DONE]\n\n")
	// afterDoneEvent is what AfterDone sends after [DONE].
	afterDoneEvent = []byte(`data: {"id":"after-done","object":"chat.completion.chunk","created":0,"model":"after-done",` +
		`"choices":[{"index":0,"delta":{"content":"after [DONE]"},"finish_reason":null}]}` + "\n\n")
)

// padLine is one whitespace-only data line of LargeEvent padding, 1 KiB
// with its terminator; padBlock is 32 of them, written at once.
const padLine = 1 << 10

var padBlock = bytes.Repeat(append([]byte("data: "), append(bytes.Repeat([]byte(" "), padLine-len("data: ")-1), '\n')...), 32)

// beginStream sends the SSE response headers at once (a gateway commits a
// stream on them) and the ping, if any.
func (x *exchange) beginStream() bool {
	x.setHeaders(sseType)
	x.w.Header()["Cache-Control"] = noCache
	x.w.WriteHeader(x.p.status)
	x.rc = http.NewResponseController(x.w)
	if x.p.set.Pings {
		return x.emit(pingEvent)
	}
	if err := x.rc.Flush(); err != nil {
		x.gone = true
		return false
	}
	return true
}

// emit writes and flushes one event; false when the client is gone.
func (x *exchange) emit(b []byte) bool {
	if _, err := x.w.Write(b); err != nil {
		x.gone = true
		return false
	}
	if err := x.rc.Flush(); err != nil {
		x.gone = true
		return false
	}
	return true
}

// chunk sends the i-th delta of a stream: after ChunkDelay unless it is the
// first, flushed, and followed by a cut when BreakAfter is reached.
func (x *exchange) chunk(i int, b []byte) bool {
	if i > 0 && !x.sleep(x.p.set.ChunkDelay) {
		return false
	}
	if i == 0 && x.p.set.LargeEvent > 0 {
		if !x.emitPadded(b, x.p.set.LargeEvent) {
			return false
		}
	} else if !x.emit(b) {
		return false
	}
	x.sent++
	if x.sent == x.p.set.BreakAfter {
		x.abort()
	}
	return true
}

// emitPadded writes the event b with about size bytes of whitespace data
// lines after the "data: {" that opens its data, then flushes; false when
// the client is gone. JSON allows whitespace there, so the event's data
// joined by newlines is still b's.
func (x *exchange) emitPadded(b []byte, size int) bool {
	i := bytes.Index(b, []byte("data: {"))
	if i < 0 {
		return x.emit(b)
	}
	head := len("data: {")
	if _, err := x.w.Write(append(b[:i+head:i+head], '\n')); err != nil {
		x.gone = true
		return false
	}
	for left := (size + padLine - 1) / padLine * padLine; left > 0; {
		n := min(left, len(padBlock))
		if _, err := x.w.Write(padBlock[:n]); err != nil {
			x.gone = true
			return false
		}
		left -= n
	}
	return x.emit(append([]byte("data: "), b[i+head:]...))
}

// endStream sends [DONE] (unless NoDone or withDone is false) and what
// AfterDone asks to follow it, lingers if told to, and marks the answer
// complete.
func (x *exchange) endStream(withDone bool) {
	if withDone && !x.p.set.NoDone {
		if !x.emit(doneEvent) {
			return
		}
		for range x.p.set.AfterDone {
			if !x.emit(afterDoneEvent) {
				return
			}
		}
	}
	if x.p.set.Linger {
		x.sleep(time.Duration(math.MaxInt64)) // ends only when the client or Close does
		return
	}
	x.complete = true
}
