package fakeupstream

import "net/http"

// Constant SSE events.
var (
	pingEvent = []byte("event: ping\ndata: {\"type\":\"ping\"}\n\n")
	doneEvent = []byte("data: [DONE]\n\n")
)

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
	if !x.emit(b) {
		return false
	}
	x.sent++
	if x.sent == x.p.set.BreakAfter {
		x.abort()
	}
	return true
}

// endStream sends [DONE] (unless NoDone or withDone is false) and marks the
// answer complete.
func (x *exchange) endStream(withDone bool) {
	if withDone && !x.p.set.NoDone && !x.emit(doneEvent) {
		return
	}
	x.complete = true
}
