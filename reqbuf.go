package llmgateway

import "sync"

// requestBuf is a pooled buffer a caller's request body is read into: a fresh buffer per call,
// the body's size, is a large share of what the garbage collector has to reclaim per call.
//
// A buffer goes back to its pool (call.releaseBody) only when nothing can read it any more: the
// audit log does not store the body (no buffer is taken when it stores bodies; with bodies none,
// audit.Writer.Enqueue drops the body before releaseBody runs), the request was not passed on to
// the next handler, and at most one upstream request was made with it, which the
// transport reported written with its body read to the end (upstreamBody.doneWith) and never
// asked for again (GetBody). Anything else leaves the buffer to the garbage collector, as an
// unpooled body would be: a body the transport may still be reading is never reused.
type requestBuf struct {
	b []byte // len == cap == the class's size
}

// requestBufSizes are the capacities of the pooled buffers: a body up to the largest is read into
// the smallest that holds it; a larger one, or one of unknown length, into a buffer of its own.
var requestBufSizes = [...]int{4 << 10, 16 << 10, 64 << 10}

// requestBufPools holds *requestBuf of requestBufSizes[i] in [i]: a pointer goes in and out of a
// pool without an allocation.
var requestBufPools [len(requestBufSizes)]sync.Pool

// getRequestBuf returns a pooled buffer of at least n bytes, or nil when n is larger than every
// class.
func getRequestBuf(n int64) *requestBuf {
	for i, size := range requestBufSizes {
		if n <= int64(size) {
			if rb, ok := requestBufPools[i].Get().(*requestBuf); ok {
				return rb
			}
			return &requestBuf{b: make([]byte, size)}
		}
	}
	return nil
}

// putRequestBuf gives rb back to its pool; nothing may refer to its bytes any more.
func putRequestBuf(rb *requestBuf) {
	for i, size := range requestBufSizes {
		if len(rb.b) == size {
			requestBufPools[i].Put(rb)
			return
		}
	}
}

// noteUpstreamBody records that an upstream request was made with the call's body (ub is its
// body as the transport got it), for releaseBody to tell whether the transport is done with it.
func (c *call) noteUpstreamBody(ub *upstreamBody) {
	if c.req.buf == nil {
		return
	}
	c.upstreamBodies++
	c.upstreamBody = ub
}

// releaseBody gives the call's pooled body buffer back once nothing can read it (requestBuf says
// when). It is called once a stream has committed, which drops the bodies, and when the call
// finishes; a buffer a transport may still read then is left to the garbage collector.
func (c *call) releaseBody() {
	rb := c.req.buf
	if rb == nil {
		return
	}
	switch {
	case c.passed || c.req.bodies || c.upstreamBodies > 1:
		c.req.buf = nil // the next handler, the audit row or a transport may keep it
		return
	case c.upstreamBodies == 1 && !c.upstreamBody.doneWith():
		return // not yet: the transport has not reported the body read to its end
	}
	c.req.buf = nil
	c.req.body, c.res.RequestBody = nil, nil
	putRequestBuf(rb)
}
