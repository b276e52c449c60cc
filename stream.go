package llmgateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/sse"
)

// copyStream relays a committed SSE answer event by event (SPEC §6). Events are collected and
// sent to the caller, with a flush, whenever the reader is about to read from the upstream
// again: a burst that arrived in one read leaves in one write, and an event never waits for
// the next one to arrive.
//
// cancel cancels the attempt's context, which the upstream body reads under: it ends a read
// that waited stream_idle_timeout for a byte. With a nil cancel the answer is read without an
// idle timeout. The answer returned is what the caller got.
func copyStream(d delivery, g *generation, req *apiRequest, spec *attemptSpec, resp *http.Response, cancel context.CancelCauseFunc) (ans answer) {
	defer resp.Body.Close()
	ans.status = resp.StatusCode

	h := d.w.Header()
	copyResponseHeader(h, resp.Header, true)
	setGatewayHeaders(h, d.tried, d.backend)
	setQuotaHeaders(h, d.quota)
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-cache")
	}
	h.Set("X-Accel-Buffering", "no")
	d.w.WriteHeader(resp.StatusCode)

	out := &relay{w: d.w, upstream: resp.Body, rc: http.NewResponseController(d.w), unflushed: true}
	// The audit log keeps the response object the stream amounts to (SPEC §8), built as the
	// events pass; only the generic passthrough keeps its transcript.
	var agg *sse.Aggregate
	if d.keepBodies {
		if k, ok := req.ep.aggregateKind(); ok {
			agg = sse.NewAggregate(k, d.auditMax)
		} else {
			out.transcript = audit.NewBodyBuffer(d.auditMax)
		}
	}
	if cancel != nil {
		out.cancel, out.idle = cancel, g.idleTimeout
	}
	defer func() {
		out.stopClock()
		out.release()
		switch {
		case agg != nil:
			obj := agg.AppendJSON(nil)
			ans.response = audit.Capped(obj, int64(len(obj))+agg.Dropped(), d.auditMax)
		case out.transcript != nil:
			ans.response = out.transcript.Bytes()
		}
	}()
	if out.send() != nil { // the headers leave at once
		ans.callerGone()
		return ans
	}
	// A panic in the gateway's own code mid-stream still ends the stream as SPEC §6 says, with an
	// error event the caller can tell from a cut connection. recoverPanic logs it and records the
	// call; this runs first, while the stream's state is known. A deferred recover would do it
	// too, but re-panicking would lose the stack that recoverPanic logs.
	returned, sawDone := false, false // sawDone: [DONE] was sent: nothing more is read or forwarded (SPEC §6)
	defer func() {
		if !returned && !sawDone && out.werr == nil {
			out.buf = sse.AppendStreamError(out.grab(), req.ep.protocol(), msgInternalError)
			_ = out.send()
		}
	}()

	kind, chunked := req.ep.sseKind()
	var tr *sse.ChunkTransformer
	if chunked {
		tr = sse.NewChunkTransformer(sse.Options{
			Kind:               kind,
			Prefix:             spec.uc.SpecialPrefix,
			Thinking:           req.ep.format(spec.uc),
			DropUsageOnlyChunk: spec.injectedUsage,
		})
	}

	rd := readerPool.Get().(*sse.Reader)
	rd.Reset(out)
	defer func() {
		rd.Reset(nil)
		readerPool.Put(rd)
	}()
	if chunked {
		// Usage seen before a cut still counts.
		defer func() {
			if u, ok := tr.Usage(); ok {
				ans.usage = u
			}
			ans.finishReason = tr.FinishReason()
		}()
	}
	for !sawDone {
		ev, err := rd.Next()
		if err != nil {
			if err == io.EOF {
				break
			}
			ans.partial = true
			if out.werr != nil || req.r.Context().Err() != nil {
				ans.callerGone()
				returned = true
				return ans
			}
			switch {
			case d.stopCtx.Err() != nil:
				ans.err = "stream cut: the gateway is shutting down"
			case out.expired.Load():
				ans.err = "upstream stream interrupted: the upstream sent nothing for " + out.idle.String() + " (stream_idle_timeout)"
			case errors.Is(err, sse.ErrEventTooLarge), errors.Is(err, sse.ErrLineTooLong):
				ans.err = "upstream stream interrupted: " + err.Error() + " (over " + strconv.Itoa(sse.DefaultMaxLineSize) + " bytes)"
			default:
				ans.err = "upstream stream interrupted: " + err.Error()
			}
			out.buf = sse.AppendStreamError(out.grab(), req.ep.protocol(), ans.err)
			_ = out.send()
			returned = true
			return ans
		}
		if ev.Comment {
			continue
		}
		switch {
		case sse.IsPing(ev.Name, ev.Data):
			out.buf = sse.AppendComment(out.grab(), commentPing)
		case !chunked:
			if ans.ttft == 0 {
				ans.ttft = time.Since(req.start)
			}
			ans.usage = sse.EventUsage(ans.usage, ev.Name, ev.Data)
			if agg != nil {
				agg.Add(ev.Name, ev.Data)
			}
			out.buf = sse.AppendEvent(out.grab(), ev.Name, ev.Data)
		case sse.IsDone(ev.Data):
			if flush := tr.Flush(); flush != nil {
				agg.Add(nil, flush)
				out.buf = sse.AppendEvent(out.grab(), nil, flush)
			}
			out.buf = append(out.grab(), sse.DoneEvent...)
			sawDone = true
		default:
			data, forward := tr.Transform(ev.Data)
			if !forward {
				// The usage-only chunk the gateway asked for: the object's usage comes from it.
				agg.Add(ev.Name, ev.Data)
				continue
			}
			agg.Add(ev.Name, data)
			if ans.ttft == 0 && tr.FirstContent() {
				ans.ttft = time.Since(req.start)
			}
			if ev.Multiline {
				out.buf = sse.AppendEvent(out.grab(), ev.Name, data)
			} else {
				// One upstream line stays one line: the transforms splice JSON values.
				out.buf = sse.AppendLine(out.grab(), ev.Name, data)
			}
		}
	}
	if chunked && !sawDone {
		if flush := tr.Flush(); flush != nil {
			agg.Add(nil, flush)
			out.buf = sse.AppendEvent(out.grab(), nil, flush)
		}
		out.buf = append(out.grab(), sse.DoneEvent...)
	}
	if out.send() != nil && !sawDone {
		ans.partial = true
		ans.callerGone()
	}
	if sawDone {
		// After [DONE] the answer is complete: the SDKs close the body there, and what the
		// upstream sends or does next changes nothing for the caller.
		out.drain()
	}
	returned = true
	return ans
}

// dropBodies lets go of the caller's request body and the one sent upstream, unless the audit log
// stores them: a committed stream no longer retries, a prompt can be hundreds of KiB, and a stream
// lasts minutes. The audit row's flags are read from them first. The routing keys go too: they may
// share memory with a decoded copy of the body.
func (c *call) dropBodies() {
	if c.req.bodies {
		return
	}
	if c.req.auditing {
		body := c.res.RequestBody
		if body == nil {
			body = c.req.body
		}
		c.tool, c.multimodal = c.req.requestFlags(body)
	}
	c.bodiesDropped = true
	c.req.body, c.res.RequestBody, c.req.info.Keys = nil, nil, nil
}

// readerPool recycles SSE readers and their buffers across streams.
var readerPool = sync.Pool{New: func() any { return new(sse.Reader) }}

// bufPool holds the buffers events are assembled in. A stream holds one only between an
// upstream read and the write that follows, so thousands of idle open streams hold none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// relay is the caller's side of a stream. It sits between the upstream body and the SSE
// reader: every time the reader needs more upstream bytes, the events assembled so far are
// written and flushed first.
type relay struct {
	w          http.ResponseWriter
	upstream   io.Reader
	rc         *http.ResponseController
	buf        []byte            // events not yet sent; nil when none
	pooled     *[]byte           // the pool's handle of buf's backing array
	transcript *audit.BodyBuffer // what the caller received (capped), for the audit log; nil if not kept
	werr       error             // the first write error: the caller is gone
	unflushed  bool              // something was written but not flushed (the headers, at first)

	// The idle clock runs only while the relay waits in an upstream read, so a slow caller
	// never counts against the upstream. When it runs out, cancel ends the read.
	idle    time.Duration           // stream_idle_timeout; 0 when cancel is nil
	cancel  context.CancelCauseFunc // cancels the attempt's context; nil: no clock
	clock   *time.Timer             // made at the first read
	expired atomic.Bool             // the clock ran out and cancelled the attempt
}

// The SSE reader gives its buffer back while the relay waits for the upstream (sse.Waiter).
var _ sse.Waiter = (*relay)(nil)

// errStreamIdle is the cause the idle clock cancels a stream's attempt with.
var errStreamIdle = errors.New("upstream sent nothing within stream_idle_timeout")

// Bounds of what is read after [DONE]; see drain.
const (
	doneDrainMax  = 64 << 10
	doneDrainWait = time.Second
)

// Read implements io.Reader for the SSE reader.
func (r *relay) Read(p []byte) (int, error) {
	if err := r.send(); err != nil {
		return 0, err
	}
	r.startClock(r.idle)
	n, err := r.upstream.Read(p)
	r.stopClock()
	return n, err
}

// WaitRead implements sse.Waiter: the SSE reader calls it when it has nothing buffered, so that
// an open stream waits for the upstream's next bytes holding no buffer of the reader's. The
// pending events are sent first, as before any upstream read, and the wait is on the idle clock.
// It is a zero-length read of the upstream body: an HTTP/1.1 chunked body waits in it for the
// next chunk's header, an HTTP/2 body for data (neither consumes any); a body that returns at
// once (io.Reader allows (0, nil) for an empty read) leaves the wait to the read that follows.
func (r *relay) WaitRead() error {
	if err := r.send(); err != nil {
		return err
	}
	r.startClock(r.idle)
	_, err := r.upstream.Read(nil)
	r.stopClock()
	return err
}

// startClock gives the next upstream read d to return before the attempt is cancelled.
func (r *relay) startClock(d time.Duration) {
	switch {
	case r.cancel == nil || d <= 0:
	case r.clock == nil:
		r.clock = time.AfterFunc(d, r.expire)
	default:
		r.clock.Reset(d)
	}
}

func (r *relay) stopClock() {
	if r.clock != nil {
		r.clock.Stop()
	}
}

// expire runs on the clock's goroutine when an upstream read waited too long.
func (r *relay) expire() {
	r.expired.Store(true)
	r.cancel(errStreamIdle)
}

// drain reads and drops what the upstream sends after [DONE]: nothing follows [DONE] (SPEC
// §6). An upstream that ends its response right after [DONE] is read to its end, which keeps
// its connection reusable. One that sends more than doneDrainMax bytes, or keeps the response
// open for doneDrainWait, is cut off instead: the call ends now, not when the upstream pleases.
func (r *relay) drain() {
	if r.cancel == nil {
		return // no way to end a read that hangs: leave it to Close, which drops the connection
	}
	r.release()
	buf := r.grab()
	buf = buf[:cap(buf)]
	r.startClock(min(doneDrainWait, r.idle))
	for n := 0; n <= doneDrainMax; {
		m, err := r.upstream.Read(buf)
		n += m
		if err != nil {
			break
		}
	}
	r.stopClock()
	r.release()
}

// grab returns the buffer to append events to, taking one from the pool if needed.
func (r *relay) grab() []byte {
	if r.pooled == nil {
		r.pooled = bufPool.Get().(*[]byte)
		r.buf = (*r.pooled)[:0]
	}
	return r.buf
}

// send writes and flushes the pending events, then returns the buffer to the pool.
func (r *relay) send() error {
	if r.werr != nil {
		return r.werr
	}
	if len(r.buf) > 0 {
		if _, err := r.w.Write(r.buf); err != nil {
			r.werr = err
		} else {
			r.unflushed = true
			if r.transcript != nil {
				r.transcript.Write(r.buf)
			}
		}
	}
	if r.werr == nil && r.unflushed {
		r.unflushed = false
		if err := r.rc.Flush(); err != nil {
			r.werr = err
		}
	}
	r.release()
	return r.werr
}

// release returns the buffer to the pool.
func (r *relay) release() {
	if r.pooled == nil {
		return
	}
	if cap(r.buf) <= 64<<10 { // keep the pool's buffers small
		*r.pooled = r.buf[:0]
		bufPool.Put(r.pooled)
	}
	r.pooled, r.buf = nil, nil
}

// commentPing replaces upstream ping events: SSE clients ignore comments.
var commentPing = []byte("ping")

// aggregateKind is the audit object the endpoint's streams are rebuilt into; ok is false for
// the generic passthrough, whose streams the audit log keeps as their transcript.
func (e endpoint) aggregateKind() (sse.AggregateKind, bool) {
	switch e {
	case epChat:
		return sse.AggregateChat, true
	case epCompletions:
		return sse.AggregateCompletion, true
	case epResponses:
		return sse.AggregateResponses, true
	case epMessages:
		return sse.AggregateMessages, true
	}
	return 0, false
}

// protocol is the stream protocol of the endpoint's answers.
func (e endpoint) protocol() sse.Protocol {
	switch e {
	case epResponses:
		return sse.Responses
	case epMessages:
		return sse.Anthropic
	}
	return sse.OpenAI
}

// msgInternalError is what the caller is told of a panic in the gateway's own code.
const msgInternalError = "internal error in the gateway"
