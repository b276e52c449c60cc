package llmgateway

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/sse"
)

// Result is everything the gateway learned about one API call: the routing trail run records
// as it goes (model, tried, fallbacks, backend) and the answer the caller got (setAnswer, or the
// final error). It is completed in one place, call.finish, which hands it to the placeholders,
// the metrics and the audit log.
type Result struct {
	Model        string        // the model finally routed (the fallback model after a fallback)
	Backend      string        // the client that answered, if any
	Tried        []string      // clients attempted, in order
	Fallbacks    int           // model fallback hops taken
	Status       int           // status sent to the caller (499 when the caller went away)
	Stream       bool          // the answer was an SSE stream
	Partial      bool          // the stream broke before its end
	Usage        sse.Usage     // token usage reported by the upstream, clamped (sse.Usage.Clamp)
	UsageClamped bool          // the upstream reported implausible usage, which was clamped
	TTFT         time.Duration // time to the first content byte of a stream
	FinishReason string        // the last finish_reason of a chat/completion stream
	Err          string        // why the call failed, if it did
	RequestBody  []byte        // the body sent upstream
	Response     []byte        // the body (or stream transcript) the caller received
	Latency      time.Duration // from the request's arrival to the end of the answer
	Key          string        // the gateway key's name (SPEC §12), "" without keys
	CostUSD      *float64      // the call's cost from the prices; nil when no price names the model
}

// answer is what the caller got from a committed attempt: what a copy stage returns.
type answer struct {
	status       int       // status sent (statusClientClosed when the caller went away)
	usage        sse.Usage // as the upstream reported it
	ttft         time.Duration
	finishReason string
	partial      bool   // the answer broke before its end
	response     []byte // what the audit log keeps of the answer
	err          string // why the answer is not the upstream's whole answer, if it is not
}

// callerGone marks an answer whose caller went away.
func (a *answer) callerGone() {
	a.status = statusClientClosed
	a.err = errCallerGone
}

// setAnswer records what the caller got.
func (r *Result) setAnswer(a answer) {
	r.Status = a.status
	r.Usage = a.usage
	r.TTFT = a.ttft
	r.FinishReason = a.finishReason
	r.Partial = a.partial
	r.Response = a.response
	r.Err = a.err
}

// finish completes the call's Result and publishes it.
func (c *call) finish() {
	defer func() {
		if err := c.audit.Release(); err != nil {
			c.h.logger.Error("releasing audit writer", zap.Error(err))
		}
	}()
	if c.passed {
		return
	}
	defer c.releaseBody() // last: the bookkeeping below may read the body
	c.res.Latency = time.Since(c.req.start)
	c.clampUsage()
	c.price()
	// Before anything else: the caller's next call must see this one's tokens, and its
	// concurrency slot is free once the last byte went out.
	c.guard("settling the gateway key's counters", c.settle)
	if extra, ok := c.req.r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok && accessLogged(c.req.r) {
		// Caddy's access log entry of this request gains an "llm" object (SPEC §10).
		extra.Add(zap.Object("llm", &c.res))
	}
	// The answer is complete by now. A panic in the bookkeeping below must not cut it (net/http
	// would drop the connection before flushing) nor cost the audit row, so each step recovers
	// on its own: a failed metric update still leaves the row, and the other way round.
	c.guard("updating metrics", c.observe)
	if c.audit.Writer() != nil {
		c.guard("recording the audit row", c.enqueueRecord)
	}
}

// accessLogged reports whether Caddy may write an access log entry of r: not when its server has
// no logs configured. Adding the "llm" field costs allocations and clears a sync.Map on every
// call, for an entry that is then never written.
func accessLogged(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return !ok || srv.Logs != nil
}

// clampUsage bounds the usage an upstream reported before anything uses it: a negative count or
// one of 2^63-1 would otherwise reach the metrics, the access log and the audit log's sums as is.
func (c *call) clampUsage() {
	u, clamped := c.res.Usage.Clamp()
	if !clamped {
		return
	}
	c.h.logger.Warn("implausible token usage from upstream clamped",
		zap.String("backend", c.res.Backend),
		zap.String("model", c.res.Model),
		zap.Int64("prompt_tokens", c.res.Usage.PromptTokens),
		zap.Int64("completion_tokens", c.res.Usage.CompletionTokens),
		zap.Int64("total_tokens", c.res.Usage.TotalTokens),
		zap.Int64("max_tokens", sse.MaxTokens))
	c.res.Usage = u
	c.res.UsageClamped = true
}

// enqueueRecord hands the call's audit row to the writer, with the answer's pooled buffer, which
// the writer gives back once the row is written.
func (c *call) enqueueRecord() {
	row := auditRows.Get().(*auditRow)
	c.record(&row.rec)
	row.rec.Release = row.release
	row.buf, c.answerBuf = c.answerBuf, nil
	// The row owns the answer from here on: the call must not read it any more.
	c.res.Response = nil
	c.audit.Enqueue(&row.rec)
}

// auditRow is an audit record and the pooled answer buffer its Response may point into, both
// reused once the writer is done with them (audit.Record.Release): an audited call then
// allocates neither, as an unaudited one does not.
type auditRow struct {
	rec     audit.Record
	buf     []byte // from pooledAnswerBuf; nil if none
	release func() // free, made once per row
}

// auditRows holds *auditRow. Its New is set in init: free puts rows back into it.
var auditRows sync.Pool

func init() {
	auditRows.New = func() any {
		row := new(auditRow)
		row.release = row.free
		return row
	}
}

// free gives the answer's buffer and the row back to their pools. The writer calls it (as the
// record's Release) once the row's transaction ended.
func (row *auditRow) free() {
	if row.buf != nil {
		putAnswerBuf(row.buf)
	}
	row.rec, row.buf = audit.Record{}, nil
	auditRows.Put(row)
}

// guard runs fn, turning a panic in it into a logged error. It is for the bookkeeping done once
// the answer has been written, where a panic can only do harm.
func (c *call) guard(what string, fn func()) {
	defer func() {
		if v := recover(); v != nil {
			c.h.logger.Error("panic "+what+" after an API call", zap.Any("panic", v), zap.Stack("stack"))
		}
	}()
	fn()
}

// placeholderPrefix starts every placeholder the gateway provides (SPEC §10).
const placeholderPrefix = "http.llm."

// placeholder resolves the {http.llm.*} placeholders of a finished call.
func (c *call) placeholder(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, placeholderPrefix)
	if !ok {
		return nil, false
	}
	res := &c.res
	switch name {
	case "model":
		return res.Model, true
	case "backend":
		return res.Backend, true
	case "tried":
		return strings.Join(res.Tried, ","), true
	case "prompt_tokens":
		return res.Usage.PromptTokens, true
	case "completion_tokens":
		return res.Usage.CompletionTokens, true
	case "total_tokens":
		return res.Usage.TotalTokens, true
	case "ttft_ms":
		return res.TTFT.Milliseconds(), true
	case "status":
		return res.Status, true
	case "finish_reason":
		return res.FinishReason, true
	case "key":
		return res.Key, true
	}
	return nil, false
}

// MarshalLogObject encodes the call's routing and usage for Caddy's access log.
func (r *Result) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("model", r.Model)
	if r.Key != "" {
		enc.AddString("key", r.Key)
	}
	enc.AddString("backend", r.Backend)
	_ = enc.AddArray("tried", zapcore.ArrayMarshalerFunc(func(a zapcore.ArrayEncoder) error {
		for _, name := range r.Tried {
			a.AppendString(name)
		}
		return nil
	}))
	enc.AddInt64("prompt_tokens", r.Usage.PromptTokens)
	enc.AddInt64("completion_tokens", r.Usage.CompletionTokens)
	enc.AddInt64("total_tokens", r.Usage.TotalTokens)
	if r.UsageClamped {
		enc.AddBool("usage_clamped", true)
	}
	enc.AddBool("stream", r.Stream)
	if r.Stream {
		enc.AddInt64("ttft_ms", r.TTFT.Milliseconds())
	}
	if r.Err != "" {
		enc.AddString("error", r.Err)
	}
	return nil
}

// requestFlags reports what the audit row tells of the request body sent upstream: whether it
// declares tools, and whether a chat message has an image part.
func (c *apiRequest) requestFlags(body []byte) (tool, multimodal bool) {
	if c.multipart {
		return false, false
	}
	return quotedKeys(body, c.ep == epChat)
}

// quotedKeys reports whether body holds `"tools"` and, when image is set, `"image_url"`, as
// bytes.Contains would, in one pass that only stops at quotes. bytes.Contains gives up on its
// byte search after a few false starts, and a JSON body starts with many quotes: it then
// compares at every byte, about 0.6 µs for each of the two words in a 2 KB body.
func quotedKeys(body []byte, image bool) (tool, multimodal bool) {
	for i := 0; ; i++ {
		j := bytes.IndexByte(body[i:], '"')
		if j < 0 {
			return tool, multimodal
		}
		i += j
		rest := body[i:]
		if !tool && bytes.HasPrefix(rest, []byte(`"tools"`)) {
			tool = true
		} else if image && !multimodal && bytes.HasPrefix(rest, []byte(`"image_url"`)) {
			multimodal = true
		}
		if tool && (multimodal || !image) {
			return tool, multimodal
		}
	}
}

// record fills rec with the call's audit row.
func (c *call) record(rec *audit.Record) {
	r := c.req.r
	res := &c.res
	*rec = audit.Record{
		Time:             c.req.start,
		Model:            res.Model,
		Type:             c.req.ep.recordType(),
		PromptTokens:     res.Usage.PromptTokens,
		CompletionTokens: res.Usage.CompletionTokens,
		TotalTokens:      res.Usage.TotalTokens,
		Headers:          r.Header,
		Request:          res.RequestBody,
		Response:         res.Response,
		Backend:          res.Backend,
		Status:           res.Status,
		LatencyMs:        res.Latency.Milliseconds(),
		TTFTMs:           -1,
		Stream:           c.req.stream || res.Stream,
		Endpoint:         r.URL.Path,
		RequestID:        r.Header.Get("X-Request-Id"),
		Tried:            strings.Join(res.Tried, ","),
		Error:            res.Err,
		Key:              res.Key,
		CostUSD:          res.CostUSD,
	}
	if res.Stream && res.TTFT > 0 {
		rec.TTFTMs = res.TTFT.Milliseconds()
	}
	if rec.Request == nil {
		rec.Request = c.req.body
	}
	if c.bodiesDropped {
		rec.Tool, rec.Multimodal = c.tool, c.multimodal
	} else {
		rec.Tool, rec.Multimodal = c.req.requestFlags(rec.Request)
	}
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok {
		rec.IP = ip
	}
	if res.Backend == "" && len(res.Tried) > 0 {
		rec.Backend = res.Tried[len(res.Tried)-1]
	}
}
