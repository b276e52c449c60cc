package llmgateway

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/internal/reqbody"
	"github.com/llmgw/caddy-llm-gateway/keys"
)

// Response headers the gateway adds.
const (
	headerTried   = "X-LLM-Gateway-Tried"
	headerBackend = "X-LLM-Gateway-Backend"

	canonicalTried   = "X-Llm-Gateway-Tried" // http.CanonicalHeaderKey(headerTried)
	canonicalBackend = "X-Llm-Gateway-Backend"
)

// An API call goes through stages that hand values forward (docs/architecture.md):
//
//	sniff   (serve.go)    *http.Request              → apiRequest, *apiError or pass on
//	admit   (admission.go) key set, *apiRequest      → grant, *apiError (nil: admitted)
//	plan    (plan.go)     *apiRequest                → planner: attemptSpec after attemptSpec
//	attempt (attempt.go)  *apiRequest, attemptSpec   → outcome (committed, failed, caller gone)
//	copy    (stream.go, upstream.go) committed outcome → answer: what the caller got
//	finish  (result.go)   Result                     → placeholders, metrics, audit row
//
// call holds what outlives the stages: the request value, and the Result that the placeholders
// (resolved whenever Caddy reads them, deferred headers included), the metrics and the audit row
// read. run fills the Result from the values the stages return; besides it only the writers of
// the gateway's own errors (fail, failAll, recoverPanic) and finish touch it.
type call struct {
	h     *Handler
	g     *generation
	w     http.ResponseWriter
	audit audit.Handle // the zero Handle when auditing is off
	req   apiRequest

	// passed is set when the request went to the next handler.
	passed bool
	// bodiesDropped is set once a stream let go of the request bodies (dropBodies); tool and
	// multimodal then hold the audit flags read from them before.
	bodiesDropped    bool
	tool, multimodal bool

	// grant is what admission decided (admission.go); finish settles an admitted call.
	grant grant

	// candBuf is the planner's scratch for candidate lists (planner.start says why it is here);
	// triedBuf holds Result.Tried of the usual call, which tries one or two clients.
	candBuf  [16]int
	triedBuf [2]string

	// upstreamBodies counts the upstream requests made with a pooled body (req.buf), and
	// upstreamBody is the last one's body: releaseBody asks it whether the transport is done.
	upstreamBodies int
	upstreamBody   *upstreamBody

	// answerBuf is the buffer a buffered answer was read into when the audit row keeps the
	// answer: the row gives it back to the pool once written (auditRow).
	answerBuf []byte

	res Result
}

// apiRequest is one sniffed API request. sniff makes it; the later stages only read it, except
// that a committed stream drops its bodies (call.dropBodies) once no stage needs them.
type apiRequest struct {
	r      *http.Request // the caller's request: headers, query, context
	ep     endpoint
	upPath string // appended to a client's base_url
	start  time.Time

	body      []byte      // the caller's body
	buf       *requestBuf // the pooled buffer body was read into, nil for none (reqbuf.go)
	multipart bool        // body is multipart/form-data
	info      reqbody.Info
	stream    bool // the caller asked for a stream on an endpoint that streams

	auditing bool // the audit log records this call
	bodies   bool // the audit log stores bodies: streams keep a transcript, bodies are kept

	// keyed is set when the gateway has keys: the caller's credential is its gateway key, which
	// is never sent upstream (SPEC §12).
	keyed bool
}

// keepBodies reports whether the audit log stores bodies, so streams keep a transcript.
func (c *apiRequest) keepBodies() bool { return c.bodies }

// run plans the attempts of an admitted request and makes them in order until one commits: its
// answer is copied to the caller. When none does, it answers the final error (SPEC §4).
func (c *call) run(ctx context.Context) {
	g, req := c.g, &c.req
	var p planner
	if e := p.start(g, req, c.grant.key, c.h.logger, c.candBuf[:0]); e != nil {
		c.fail(e)
		return
	}
	var hist attemptHistory
	c.res.Tried = c.triedBuf[:0]
	for {
		spec, ok := p.next()
		c.res.Model, c.res.Fallbacks = p.model, p.fallbacks
		if !ok {
			break
		}
		c.countFailover()
		c.res.Tried = append(c.res.Tried, spec.uc.Name)

		out := attempt(ctx, c.h.stops, g, req, &spec, c.h.logger)
		c.noteUpstreamBody(out.reqBody)
		out.recordVerdict(g, &spec)
		if out.readFailed {
			// The upstream answered, but its body could not be read: the audit row holds the
			// body sent for it (and names it as the backend if the caller left meanwhile).
			c.res.RequestBody = spec.body
		}
		switch out.kind {
		case outGone:
			out.release()
			if out.readFailed {
				c.res.Backend = spec.uc.Name
			}
			c.res.Status, c.res.Err = statusClientClosed, errCallerGone
			return
		case outFailed:
			out.release()
			hist.add(out.failure)
			continue
		}

		// Committed: the answer goes to the caller whatever it is.
		c.res.Backend = spec.uc.Name
		c.res.RequestBody = spec.body
		c.res.Status = out.resp.StatusCode // what the copy writes first; recoverPanic reads it
		d := c.delivery()
		var ans answer
		switch out.kind {
		case outStream:
			c.res.Stream = true
			c.dropBodies()
			c.releaseBody()
			spec.body = nil // a stream lasts minutes: hold no prompt meanwhile
			ans = copyStream(d, g, req, &spec, out.resp, out.cancel)
		case outLarge:
			ans = relayLarge(ctx, d, g, out.resp, out.body)
		default:
			ans = writeBuffered(d, req, &spec, out.resp, out.body)
			if req.bodies {
				// The audit row keeps the answer: its buffer goes back once the row is
				// written (auditRow).
				c.answerBuf = out.body
			} else {
				// Written, and no audit row keeps it: the answer's buffer (pooledAnswerBuf)
				// can serve the next call.
				putAnswerBuf(out.body)
				ans.response = nil
			}
		}
		out.release()
		c.res.setAnswer(ans)
		return
	}
	c.failAll(chooseFailure(&hist, p.attempted, p.transformErr, p.retryAfter, req.info.Model))
}

// delivery is what a copy needs to know of the call besides the answer itself.
func (c *call) delivery() delivery {
	d := delivery{w: c.w, tried: c.res.Tried, backend: c.res.Backend, stopCtx: c.h.stops.ctx, keepBodies: c.req.bodies, quota: c.grant.quota()}
	if d.keepBodies {
		d.auditMax = c.h.audit.MaxBodySize
	}
	return d
}

// delivery is the caller's side of a committed answer.
type delivery struct {
	w       http.ResponseWriter
	tried   []string       // X-LLM-Gateway-Tried
	backend string         // X-LLM-Gateway-Backend
	quota   *keys.Decision // the x-ratelimit-* headers of a keyed call; nil for none
	stopCtx context.Context
	// keepBodies is set when the audit log keeps (the first auditMax bytes of) the answer.
	keepBodies bool
	auditMax   int
}

// finalFailure is the answer to a call no attempt answered: an error of the gateway's own, or an
// upstream's retryable answer relayed as it is.
type finalFailure struct {
	err        *apiError
	upstream   failure // relayed when err is nil
	retryAfter int64   // Retry-After seconds, 0 for none
}

// chooseFailure picks the final error once every attempt failed (SPEC §4): a transform error
// when no attempt could be made for it, 503 when every candidate was cooling down (retryAfter
// is the soonest a breaker allows one again), else the last failure, where an upstream's own
// answer beats a later connection failure.
func chooseFailure(h *attemptHistory, attempted bool, transformErr error, retryAfter time.Duration, model string) finalFailure {
	if !attempted && transformErr != nil {
		return finalFailure{err: errInvalidRequest(transformErr.Error())}
	}
	if !attempted {
		secs := int64(math.Ceil(retryAfter.Seconds()))
		if secs < 1 || retryAfter == math.MaxInt64 {
			secs = 1
		}
		return finalFailure{retryAfter: secs, err: &apiError{
			status:  http.StatusServiceUnavailable,
			typ:     errTypeUpstream,
			code:    errCodeAllCoolingDown,
			message: "every upstream for model `" + model + "` is cooling down after failures",
		}}
	}
	last := h.last
	if h.answered.kind == failUpstream {
		last = h.answered
	}
	switch last.kind {
	case failUpstream:
		return finalFailure{upstream: last}
	case failTimeout:
		return finalFailure{err: &apiError{status: http.StatusGatewayTimeout, typ: errTypeUpstream, code: errCodeUpstreamTimeout,
			message: "no upstream answered in time: " + errString(last.err)}}
	}
	return finalFailure{err: &apiError{status: http.StatusBadGateway, typ: errTypeUpstream, code: errCodeUpstreamConnect,
		message: "no upstream could be reached: " + errString(last.err)}}
}

// failAll answers the final error chooseFailure picked.
func (c *call) failAll(f finalFailure) {
	if f.retryAfter > 0 {
		c.w.Header().Set("Retry-After", strconv.FormatInt(f.retryAfter, 10))
	}
	if f.err != nil {
		c.fail(f.err)
		return
	}
	last := f.upstream
	c.res.Status = last.status
	c.res.Err = "upstream answered " + strconv.Itoa(last.status)
	copyResponseHeader(c.w.Header(), last.header, true)
	setGatewayHeaders(c.w.Header(), c.res.Tried, c.res.Backend)
	setQuotaHeaders(c.w.Header(), c.grant.quota())
	body := last.body
	if c.req.stream && isEventStream(last.header) {
		body = sseErrorJSON(body, last.status, c.req.r.URL.Path)
		c.w.Header().Set("Content-Type", "application/json")
	}
	if len(body) == 0 {
		body = (&apiError{status: last.status, typ: errTypeUpstream,
			message: "upstream answered " + strconv.Itoa(last.status) + " with no body"}).encode(c.req.r.URL.Path)
		c.w.Header().Set("Content-Type", "application/json")
	}
	c.w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	c.w.WriteHeader(last.status)
	_, _ = c.w.Write(body)
	c.res.Response = body
}

func errString(err error) string {
	if err == nil {
		return "unknown error"
	}
	return err.Error()
}

// fail answers a gateway error in the shape the caller's API uses and records it.
func (c *call) fail(e *apiError) {
	c.res.Status = e.status
	c.res.Err = e.message
	setGatewayHeaders(c.w.Header(), c.res.Tried, c.res.Backend)
	setQuotaHeaders(c.w.Header(), c.grant.quota())
	body := e.encode(c.req.r.URL.Path)
	c.res.Response = body
	writeJSON(c.w, e.status, body)
}

// setGatewayHeaders adds X-LLM-Gateway-Tried and, when a client answered, X-LLM-Gateway-Backend.
func setGatewayHeaders(h http.Header, tried []string, backend string) {
	setGatewayHeadersIn(h, tried, backend, make([]string, 2))
}

// setGatewayHeadersIn is setGatewayHeaders holding the two values in vals (of length 2).
func setGatewayHeadersIn(h http.Header, tried []string, backend string, vals []string) {
	if len(tried) > 0 {
		t := tried[0] // the usual single name needs no join
		if len(tried) > 1 {
			t = strings.Join(tried, ",")
		}
		// Set by their canonical keys: h.Set would canonicalise the names anew on every call.
		vals[0] = t
		h[canonicalTried] = vals[0:1:1]
	}
	if backend != "" {
		vals[1] = backend
		h[canonicalBackend] = vals[1:2:2]
	}
}

// errCallerGone is the error recorded for a call whose caller went away.
const errCallerGone = "caller closed the connection"

// statusClientClosed is the status recorded (never sent) for calls the caller abandoned, as
// nginx logs it.
const statusClientClosed = 499
