package llmgateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

// failure describes a failed attempt.
type failure struct {
	kind   failureKind
	status int
	header http.Header
	body   []byte
	err    error
}

type failureKind uint8

const (
	failNone     failureKind = iota
	failConnect              // no connection, or it broke before a response
	failTimeout              // no response headers in time
	failUpstream             // the upstream answered with a retryable status
)

// attemptHistory is what the final error is chosen from: the most recent failed attempt, and
// the most recent one where an upstream answered.
type attemptHistory struct {
	last, answered failure
}

func (h *attemptHistory) add(f failure) {
	h.last = f
	if f.kind == failUpstream {
		h.answered = f
	}
}

// Causes of a cancelled attempt: a streaming or non-streaming one whose headers did not arrive
// in time, and a non-streaming answer whose body stopped arriving.
var (
	errFirstByteTimeout = errors.New("upstream sent no response headers within stream_first_byte_timeout")
	errHeaderTimeout    = errors.New("upstream sent no response headers within response_header_timeout")
	errBodyStalled      = errors.New("upstream paused its answer for longer than response_header_timeout")
	errStopping         = errors.New("the gateway is shutting down")
)

// retryable reports whether an upstream status lets the gateway try the next client (SPEC §4).
func retryable(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusForbidden, http.StatusNotFound, http.StatusUnprocessableEntity:
		return true
	}
	return status >= 500
}

// outcomeKind is how an attempt ended.
type outcomeKind uint8

const (
	outFailed   outcomeKind = iota // the next client may be tried: outcome.failure says why
	outGone                        // the caller went away (or the process exits)
	outStream                      // committed: a 2xx SSE answer, its body unread
	outBuffered                    // committed: a complete answer, read into outcome.body
	outLarge                       // committed: an answer over max_buffered_response; body is its head
)

// outcome is what one attempt came to. A committed outcome holds the attempt's resources (its
// context, timer and in-flight count) until release, so the copy runs under them.
type outcome struct {
	kind outcomeKind
	resp *http.Response // committed outcomes
	body []byte         // outBuffered: the whole answer; outLarge: what was read of it
	// failure is why an outFailed attempt failed. readFailed is set when the answer's headers
	// arrived but its body could not be read, or the caller left while it was read.
	failure    failure
	readFailed bool

	uc      *upstreamClient
	reqBody *upstreamBody           // the request body as the transport got it
	cancel  context.CancelCauseFunc // cancels the attempt's context
	timer   *time.Timer
	idle    *idleBody // registered with stops
	stops   *stopper
}

// release ends the attempt: its timer, its registration for the exit, its context and its
// in-flight count.
func (o *outcome) release() {
	o.timer.Stop()
	o.stops.remove(o.idle)
	o.cancel(nil)
	o.uc.state.InFlight.Add(-1)
}

// recordVerdict tells the client's breaker what the attempt says of the upstream: every verdict
// on an attempt is given here. A committed answer is a success whatever its status (a stream
// commits at its 2xx headers, SPEC §4); a failure is a failure; a caller who went away says
// nothing of the upstream, so a probe it interrupted is abandoned.
func (o *outcome) recordVerdict(g *generation, spec *attemptSpec) {
	b := &spec.uc.state.Breaker
	switch o.kind {
	case outGone:
		if spec.probe {
			b.Abandon()
		}
	case outFailed:
		b.Failure(g.policy, time.Now())
	default:
		b.Success()
	}
}

// attempt sends spec to its client: one RoundTrip under the attempt's timeouts, then, for an
// answer that is not a stream, the read of its body (a read that fails leaves the next client
// to try: nothing was written to the caller yet). ctx is the call's context (the caller's
// request's); stops is stopped when the process exits, which ends the attempt as if the caller
// had gone.
func attempt(ctx context.Context, stops *stopper, g *generation, req *apiRequest, spec *attemptSpec, log *zap.Logger) outcome {
	uc := spec.uc
	timeout, timeoutErr := g.headerTimeout, errHeaderTimeout
	if req.stream {
		timeout, timeoutErr = g.firstByteTimout, errFirstByteTimeout
	}
	// The attempt's context is the caller's request's own child: a context of the call between
	// them would cost a context (and its cancellation) per call for nothing but the exit.
	actx, cancel := context.WithCancelCause(ctx)
	gone := func() bool { return ctx.Err() != nil || stops.ctx.Err() != nil }
	// One timer per attempt: it bounds the wait for headers, then each pause in a non-streaming
	// answer's body (inBody set). Its state is the idle body's, one allocation for both, which
	// also registers the attempt with stops.
	idle := &idleBody{d: g.headerTimeout, cancel: cancel, timeoutErr: timeoutErr}
	stops.add(idle)
	timer := time.AfterFunc(timeout, idle.expire)
	idle.timer = timer
	upReq, reqBody := req.newUpstreamRequest(actx, uc, spec.body)
	out := outcome{uc: uc, reqBody: reqBody, cancel: cancel, timer: timer, idle: idle, stops: stops}

	uc.state.InFlight.Add(1)
	resp, err := uc.transport.RoundTrip(upReq)
	reqBody.release()
	if !timer.Stop() && err == nil {
		// The timer fired as the headers arrived: the attempt's context is cancelled and the
		// body cannot be read. It is the timeout it nearly was.
		resp.Body.Close()
		resp, err = nil, timeoutErr
	}
	if err != nil {
		if gone() {
			out.kind = outGone
			return out
		}
		out.failure = classifyErr(actx, err)
		log.Debug("upstream attempt failed", zapClient(uc), zapErr(out.failure.err))
		return out
	}

	if resp.StatusCode/100 == 2 && isEventStream(resp.Header) {
		out.kind, out.resp = outStream, resp
		return out
	}
	// A non-streaming answer must keep coming: an upstream that sends headers and then stalls
	// would hold the call forever (streams have their own idle timeout).
	idle.read.Store(clock())
	idle.inBody.Store(true)
	timer.Reset(g.headerTimeout)
	idle.ReadCloser = resp.Body
	resp.Body = idle

	if retryable(resp.StatusCode) {
		errBody, _ := readLimited(resp, maxErrorBody)
		resp.Body.Close()
		out.failure = failure{kind: failUpstream, status: resp.StatusCode, header: resp.Header, body: errBody}
		return out
	}
	if resp.ContentLength > g.maxBuffered {
		// Declared too large to hold: relay it from its first byte.
		out.kind, out.resp = outLarge, resp
		return out
	}
	// Given back once the answer is written, or once its audit row is (run, auditRow).
	body, err := readInto(resp, g.maxBuffered+1, pooledAnswerBuf(resp))
	if err == nil && int64(len(body)) > g.maxBuffered {
		out.kind, out.resp, out.body = outLarge, resp, body
		return out
	}
	resp.Body.Close()
	if err != nil {
		out.readFailed = true
		if gone() {
			out.kind = outGone
			return out
		}
		out.failure = classifyErr(actx, err)
		return out
	}
	out.kind, out.resp, out.body = outBuffered, resp, body
	return out
}

// classifyErr turns the error of an attempt made under ctx into its failure: a timeout (504 if it
// is the last) or a connection failure (502).
func classifyErr(ctx context.Context, err error) failure {
	kind := failConnect
	if timedOut(ctx, err) {
		kind = failTimeout
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
	}
	return failure{kind: kind, err: err}
}

// idleBody is a non-streaming answer's body whose reads keep the attempt alive: the timer
// cancels the attempt when the upstream pauses for d. Before the answer's headers arrive the
// timer bounds the wait for them (inBody not set) and the body is not in use yet.
//
// A read does not rearm the timer, an update of the timer heap each: it notes the time, and the
// timer, when it runs out, rearms itself for what is left of d since the last read, and cancels
// only when all of d has passed.
type idleBody struct {
	io.ReadCloser
	timer *time.Timer
	d     time.Duration
	read  atomic.Int64 // clock() of the last read that returned data

	inBody     atomic.Bool
	cancel     context.CancelCauseFunc
	timeoutErr error // the cause of a timeout waiting for headers

	// The attempts in flight of a stopper, linked through their idle bodies.
	prev, next *idleBody
	inSet      bool
}

// expire is the timer's function: it cancels the attempt with the cause of the wait it bounds,
// or, in the body, rearms the timer when data came within d.
func (b *idleBody) expire() {
	if !b.inBody.Load() {
		b.cancel(b.timeoutErr)
		return
	}
	if rest := b.d - time.Duration(clock()-b.read.Load()); rest > 0 {
		b.timer.Reset(rest)
		return
	}
	b.cancel(errBodyStalled)
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.read.Store(clock())
	}
	return n, err
}

// clockStart is clock's origin.
var clockStart = time.Now()

// clock returns the monotonic time in nanoseconds since clockStart.
func clock() int64 { return int64(time.Since(clockStart)) }

// stopper cancels the upstream attempts in flight when the process exits: ctx is cancelled, and
// so is every attempt registered (add) and not yet released (remove). Attempts are a list under
// a mutex, two short critical sections per attempt, where context.AfterFunc on the stop context
// would cost two allocations and a map entry for an event that comes once.
type stopper struct {
	ctx    context.Context // cancelled at stop: copies check it
	cancel context.CancelFunc

	mu      sync.Mutex
	stopped bool
	head    *idleBody
}

func newStopper() *stopper {
	ctx, cancel := context.WithCancel(context.Background())
	return &stopper{ctx: ctx, cancel: cancel}
}

// add registers the attempt of b, cancelling it at once (errStopping) when stop ran already.
func (s *stopper) add(b *idleBody) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		b.cancel(errStopping)
		return
	}
	b.next, b.inSet = s.head, true
	if s.head != nil {
		s.head.prev = b
	}
	s.head = b
	s.mu.Unlock()
}

// remove unregisters the attempt of b; it does nothing if b is not registered.
func (s *stopper) remove(b *idleBody) {
	s.mu.Lock()
	if b.inSet {
		if b.prev != nil {
			b.prev.next = b.next
		} else {
			s.head = b.next
		}
		if b.next != nil {
			b.next.prev = b.prev
		}
		b.prev, b.next, b.inSet = nil, nil, false
	}
	s.mu.Unlock()
}

// stop cancels ctx and every attempt registered, and those registered later, with errStopping.
func (s *stopper) stop() {
	s.cancel()
	s.mu.Lock()
	s.stopped = true
	for b := s.head; b != nil; b = b.next {
		b.cancel(errStopping)
	}
	s.mu.Unlock()
}

// timedOut reports whether an attempt failed for want of response headers in time. A dial
// timeout is not one: the upstream could not be reached at all (502, not 504).
func timedOut(ctx context.Context, err error) bool {
	var dialErr reverseproxy.DialError
	if errors.As(err, &dialErr) {
		return false
	}
	if isTimeoutCause(err) || isTimeoutCause(context.Cause(ctx)) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isTimeoutCause reports whether err is one of the gateway's own attempt timeouts.
func isTimeoutCause(err error) bool {
	return errors.Is(err, errFirstByteTimeout) || errors.Is(err, errHeaderTimeout) || errors.Is(err, errBodyStalled)
}
