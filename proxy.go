package llmgateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/internal/reqbody"
	"github.com/llmgw/caddy-llm-gateway/router"
)

// Response headers the gateway adds.
const (
	headerTried   = "X-LLM-Gateway-Tried"
	headerBackend = "X-LLM-Gateway-Backend"
)

// call is one API request on its way through the gateway.
type call struct {
	h      *Handler
	g      *generation
	w      http.ResponseWriter
	r      *http.Request
	ctx    context.Context // the caller's context, also cancelled at process exit
	audit  audit.Handle    // the zero Handle when auditing is off
	ep     endpoint
	upPath string
	start  time.Time

	body      []byte
	multipart bool
	info      reqbody.Info
	stream    bool
	// injectedUsage is set when the gateway added stream_options.include_usage upstream, so the
	// usage-only chunk is consumed rather than forwarded.
	injectedUsage bool

	// last is the most recent failed attempt and answered the most recent one where an upstream
	// answered; they decide the final error.
	last, answered failure
	// transformErr is why a client was skipped: the request could not be edited for it.
	transformErr error
	// passed is set when the request went to the next handler.
	passed bool
	// bodiesDropped is set once a stream let go of the request bodies (dropBodies); tool and
	// multimodal then hold the audit flags read from them before.
	bodiesDropped    bool
	tool, multimodal bool

	res Result
}

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

// errFirstByteTimeout cancels a streaming attempt whose headers did not arrive in time.
var errFirstByteTimeout = errors.New("upstream sent no response headers within stream_first_byte_timeout")

// retryable reports whether an upstream status lets the gateway try the next client (SPEC §4).
func retryable(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusForbidden, http.StatusNotFound, http.StatusUnprocessableEntity:
		return true
	}
	return status >= 500
}

// route tries the candidates of the request's model in strategy order, then the model fallbacks,
// until one client answers with a final response.
func (c *call) route() {
	g := c.g
	var candBuf [16]int
	model := c.info.Model
	cands := g.table.Candidates(model, candBuf[:0])
	if len(cands) == 0 {
		c.fail(&apiError{
			status:  http.StatusNotFound,
			typ:     errTypeInvalidRequest,
			code:    errCodeModelNotFound,
			message: "The model `" + model + "` does not exist or no upstream serves it.",
		})
		return
	}

	keys := c.info.Keys // nil unless the strategy asked for them
	inflight := func(i int) int64 { return g.clients[i].state.InFlight.Load() }

	chain := g.table.NewFallbackChain(model, g.maxHops)
	attempted := false
	retryAfter := time.Duration(math.MaxInt64)
	for {
		router.Order(g.strategy, g.table, cands, keys, inflight, rand.Float64)
		for _, i := range cands {
			uc := g.clients[i]
			ok, probe := uc.state.Breaker.Allow(g.policy, time.Now())
			if !ok {
				if d := uc.state.Breaker.RetryAfter(g.policy, time.Now()); d < retryAfter {
					retryAfter = d
				}
				continue
			}
			body, err := c.upstreamBody(uc, model)
			if err != nil {
				// A field this client's transforms must edit has the wrong type (say,
				// max_tokens is a string); a client that needs no such edit may still serve.
				if probe {
					uc.state.Breaker.Abandon()
				}
				if c.transformErr == nil {
					c.transformErr = fmt.Errorf("cannot apply the request transforms of client %s: %w", uc.Name, err)
				}
				continue
			}
			attempted = true
			c.countFailover()
			c.res.Tried = append(c.res.Tried, uc.Name)
			if c.try(uc, model, body, probe) {
				return
			}
		}
		value, next, nextCands, err := chain.Next(cands, model, candBuf[:0])
		if err != nil {
			if value != "" {
				c.h.logger.Debug("model fallback not taken", zap.String("fallback", value), zap.Error(err))
			}
			break
		}
		c.res.Fallbacks++
		model, cands = next, nextCands
		c.res.Model = model
	}
	c.failAll(attempted, retryAfter)
}

// failAll answers the final error once every attempt failed (SPEC §4).
func (c *call) failAll(attempted bool, retryAfter time.Duration) {
	if !attempted && c.transformErr != nil {
		c.fail(errInvalidRequest(c.transformErr.Error()))
		return
	}
	if !attempted {
		secs := int64(math.Ceil(retryAfter.Seconds()))
		if secs < 1 || retryAfter == math.MaxInt64 {
			secs = 1
		}
		c.w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		c.fail(&apiError{
			status:  http.StatusServiceUnavailable,
			typ:     errTypeUpstream,
			code:    errCodeAllCoolingDown,
			message: "every upstream for model `" + c.info.Model + "` is cooling down after failures",
		})
		return
	}
	last := c.last
	if c.answered.kind == failUpstream {
		// An upstream's own answer beats a later connection failure (SPEC §4).
		last = c.answered
	}
	switch last.kind {
	case failUpstream:
		c.res.Status = last.status
		c.res.Err = "upstream answered " + strconv.Itoa(last.status)
		copyResponseHeader(c.w.Header(), last.header, true)
		c.setGatewayHeaders()
		body := last.body
		if c.stream && isEventStream(last.header) {
			body = sseErrorJSON(body, last.status, c.r.URL.Path)
			c.w.Header().Set("Content-Type", "application/json")
		}
		if len(body) == 0 {
			body = (&apiError{status: last.status, typ: errTypeUpstream,
				message: "upstream answered " + strconv.Itoa(last.status) + " with no body"}).encode(c.r.URL.Path)
			c.w.Header().Set("Content-Type", "application/json")
		}
		c.w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		c.w.WriteHeader(last.status)
		_, _ = c.w.Write(body)
		c.res.Response = body
	case failTimeout:
		c.fail(&apiError{status: http.StatusGatewayTimeout, typ: errTypeUpstream, code: errCodeUpstreamTimeout,
			message: "no upstream answered in time: " + errString(last.err)})
	default:
		c.fail(&apiError{status: http.StatusBadGateway, typ: errTypeUpstream, code: errCodeUpstreamConnect,
			message: "no upstream could be reached: " + errString(last.err)})
	}
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
	c.setGatewayHeaders()
	body := e.encode(c.r.URL.Path)
	c.res.Response = body
	writeJSON(c.w, e.status, body)
}

// setGatewayHeaders adds X-LLM-Gateway-Tried and, when a client answered, X-LLM-Gateway-Backend.
func (c *call) setGatewayHeaders() {
	if len(c.res.Tried) > 0 {
		tried := c.res.Tried[0] // the usual single name needs no join
		if len(c.res.Tried) > 1 {
			tried = strings.Join(c.res.Tried, ",")
		}
		c.w.Header().Set(headerTried, tried)
	}
	if c.res.Backend != "" {
		c.w.Header().Set(headerBackend, c.res.Backend)
	}
}

// try makes one attempt on uc. It reports true when the call is over: a final answer was
// written to the caller, or the caller went away.
func (c *call) try(uc *upstreamClient, model string, body []byte, probe bool) bool {
	g := c.g

	ctx := c.ctx
	var timer *time.Timer
	var cancel context.CancelCauseFunc
	if c.stream && g.firstByteTimout > 0 {
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		timer = time.AfterFunc(g.firstByteTimout, func() { cancel(errFirstByteTimeout) })
	}
	req, reqBody := c.newUpstreamRequest(ctx, uc, body)

	uc.state.InFlight.Add(1)
	defer uc.state.InFlight.Add(-1)
	resp, err := uc.transport.RoundTrip(req)
	reqBody.release()
	if timer != nil && !timer.Stop() && err == nil {
		// The timer fired as the headers arrived: the attempt's context is cancelled and the
		// body cannot be read. It is the timeout it nearly was.
		resp.Body.Close()
		resp, err = nil, errFirstByteTimeout
	}
	if err != nil {
		if c.ctx.Err() != nil {
			// The caller went away (or the process exits): no verdict on the upstream.
			if probe {
				uc.state.Breaker.Abandon()
			}
			c.callerGone()
			return true
		}
		uc.state.Breaker.Failure(g.policy, time.Now())
		kind := failConnect
		if timedOut(ctx, err) {
			kind = failTimeout
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			}
		}
		c.last = failure{kind: kind, err: err}
		c.h.logger.Debug("upstream attempt failed", zapClient(uc), zapErr(err))
		return false
	}

	if retryable(resp.StatusCode) {
		errBody, _ := readLimited(resp, maxErrorBody)
		resp.Body.Close()
		uc.state.Breaker.Failure(g.policy, time.Now())
		c.last = failure{kind: failUpstream, status: resp.StatusCode, header: resp.Header, body: errBody}
		c.answered = c.last
		return false
	}

	c.res.Backend = uc.Name
	c.res.RequestBody = body
	if resp.StatusCode/100 == 2 && isEventStream(resp.Header) {
		// A stream commits at its 2xx headers (SPEC §4): it counts as a success now.
		uc.state.Breaker.Success()
		c.res.Stream = true
		c.copyStream(uc, resp)
		return true
	}
	return c.copyResponse(uc, resp, probe)
}

// timedOut reports whether an attempt failed for want of response headers in time. A dial
// timeout is not one: the upstream could not be reached at all (502, not 504).
func timedOut(ctx context.Context, err error) bool {
	var dialErr reverseproxy.DialError
	if errors.As(err, &dialErr) {
		return false
	}
	if errors.Is(err, errFirstByteTimeout) || errors.Is(context.Cause(ctx), errFirstByteTimeout) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// callerGone records a call whose caller disconnected before an answer was written.
func (c *call) callerGone() {
	c.res.Status = statusClientClosed
	c.res.Err = "caller closed the connection"
}

// statusClientClosed is the status recorded (never sent) for calls the caller abandoned, as
// nginx logs it.
const statusClientClosed = 499

// upstreamBody returns the body to send to uc: the caller's bytes, edited only where one of the
// client's request transforms applies (SPEC §5).
func (c *call) upstreamBody(uc *upstreamClient, model string) ([]byte, error) {
	var e reqbody.Edit
	switch {
	case uc.UpstreamModel != "":
		e.Model = uc.UpstreamModel
	case model != c.info.Model:
		e.Model = model
	}
	if c.multipart {
		if e.Model == "" {
			return c.body, nil
		}
		return reqbody.ReplaceMultipartModel(c.r.Header.Get("Content-Type"), c.body, e.Model)
	}
	e.ExtraBody = uc.extraBody
	if c.ep == epChat || c.ep == epCompletions {
		e.Stop = uc.Stop
		e.MaxTokens = uc.MaxTokens
		// Only a body holding a think tag can need the edit: skip its full scan otherwise.
		e.StripThink = c.ep == epChat && uc.StripsThink() && mayHoldThink(c.body)
		e.IncludeUsage = c.stream && !c.info.IncludeUsage && uc.InjectsUsage()
	}
	c.injectedUsage = e.IncludeUsage
	return reqbody.Apply(c.body, e)
}

// mayHoldThink reports whether body may hold a think block. Encoders escape < > / in many
// ways (\u003c, \/), but none escapes letters, so the word itself is a safe filter.
func mayHoldThink(body []byte) bool {
	return bytes.Contains(body, []byte("think"))
}
