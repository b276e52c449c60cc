package llmgateway

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/internal/reqbody"
)

// endpoint is the kind of API call, which decides the transforms that apply.
type endpoint uint8

const (
	epGeneric     endpoint = iota // any other /v1/... with a JSON body that has a model
	epChat                        // /v1/chat/completions
	epCompletions                 // /v1/completions
	epResponses                   // /v1/responses
	epMessages                    // /v1/messages (Anthropic)
	epEmbeddings                  // /v1/embeddings
	epRerank                      // /v1/rerank, /rerank
	epScore                       // /score
	epClassify                    // /classify
	epAudio                       // /v1/audio/transcriptions, /v1/audio/translations
)

// recordType is the origin's audit Type label of each endpoint.
func (e endpoint) recordType() string {
	switch e {
	case epChat:
		return "chat.completions"
	case epCompletions:
		return "text_completion"
	case epResponses:
		return "responses"
	case epMessages:
		return "anthropic.messages"
	case epEmbeddings:
		return "embeddings"
	case epRerank:
		return "rerank"
	case epScore:
		return "score"
	case epClassify:
		return "classify"
	case epAudio:
		return "audio"
	}
	return "generic"
}

// streams reports whether the endpoint can answer with SSE.
func (e endpoint) streams() bool {
	switch e {
	case epChat, epCompletions, epResponses, epMessages, epGeneric:
		return true
	}
	return false
}

// classify maps a POST path to its endpoint and the path appended to a client's base_url.
// ok is false for paths the gateway does not serve.
func classify(path string) (ep endpoint, upstreamPath string, ok bool) {
	switch path {
	case "/v1/chat/completions":
		return epChat, "/chat/completions", true
	case "/v1/completions":
		return epCompletions, "/completions", true
	case "/v1/responses":
		return epResponses, "/responses", true
	case "/v1/messages":
		return epMessages, "/messages", true
	case "/v1/embeddings":
		return epEmbeddings, "/embeddings", true
	case "/v1/rerank", "/rerank":
		return epRerank, "/rerank", true
	case "/score":
		return epScore, "/score", true
	case "/classify":
		return epClassify, "/classify", true
	case "/v1/audio/transcriptions":
		return epAudio, "/audio/transcriptions", true
	case "/v1/audio/translations":
		return epAudio, "/audio/translations", true
	}
	if rest, found := strings.CutPrefix(path, "/v1/"); found && rest != "" {
		return epGeneric, path[len("/v1"):], true
	}
	return 0, "", false
}

// ServeHTTP answers the gateway's endpoints and passes anything else to next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	g := h.gen.Load()
	if g == nil {
		return next.ServeHTTP(w, r)
	}
	switch r.Method {
	case http.MethodGet:
		switch r.URL.Path {
		case "/health":
			h.serveHealth(w, g)
			return nil
		case "/v1/models":
			h.serveModels(w, r, g)
			return nil
		}
		if id, ok := strings.CutPrefix(r.URL.Path, modelsPathPrefix); ok && id != "" {
			h.serveModel(w, r, g, id)
			return nil
		}
	case http.MethodPost:
		if ep, upPath, ok := classify(r.URL.Path); ok {
			return h.serveAPI(w, r, next, g, ep, upPath)
		}
	}
	return next.ServeHTTP(w, r)
}

// serveAPI serves one API call: it sniffs the request, admits it, runs its attempts and
// records the result (proxy.go describes the stages).
func (h *Handler) serveAPI(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, g *generation, ep endpoint, upPath string) error {
	h.inflight.Add(1)
	defer h.inflight.Done()
	gauge := inFlightGauge(ep)
	gauge.Inc()
	defer gauge.Dec()

	keySet := h.keySet.Load() // nil without keys
	c := &call{
		h:   h,
		g:   g,
		w:   w,
		req: apiRequest{r: r, ep: ep, upPath: upPath, start: time.Now(), keyed: keySet != nil},
	}
	if repl := replacer(r); repl != nil {
		// Resolved when read: deferred header operations see the model and backend, the
		// access log the whole result.
		repl.Map(c.placeholder)
	}
	var err error
	if c.audit, err = h.audit.Acquire(); err != nil {
		h.logger.Error("audit database unavailable; this call is not recorded", zap.Error(err))
	}
	c.req.auditing = c.audit.Writer() != nil
	c.req.bodies = c.req.auditing && h.audit != nil && h.audit.Bodies != audit.BodiesNone
	defer c.finish()
	defer c.recoverPanic()

	var pass bool
	var e *apiError
	if c.req, pass, e = g.sniff(c.req); pass {
		return c.passOn(next)
	}
	if e == nil {
		c.res.Model = c.req.info.Model
		c.grant, e = h.admit(keySet, &c.req)
		if c.grant.key != nil {
			c.res.Key = c.grant.key.Name
		}
	}
	if e != nil {
		c.grant.refusalHeaders(w.Header())
		c.fail(e)
		return nil
	}
	// Upstream calls end with the caller's request, or when the process exits (attempt).
	c.run(r.Context())
	return nil
}

// sniff reads and sniffs the body of req, which holds the caller's request and what its path
// says. It returns req completed with the body and what the body says (model, stream, routing
// keys), or the caller's error; pass is set when the request is not the gateway's to answer (an
// unknown /v1/ path whose body has no model).
func (g *generation) sniff(req apiRequest) (_ apiRequest, pass bool, _ *apiError) {
	r, ep := req.r, req.ep
	if hasDotSegment(r.URL.Path) {
		// Refused, never normalised: the caller's path is appended to base_url, and a dot segment
		// would reach paths of the upstream host outside it with the operator's key (SPEC §3).
		return req, false, errInvalidRequest("request path must not contain '.' or '..' segments")
	}

	// A body the audit row stores outlives the call: only the others read into a pooled buffer
	// (with bodies none, the writer drops the body in Enqueue, before the buffer goes back).
	body, buf, err := readBody(r, g.maxBody, !req.bodies)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return req, false, &apiError{
				status:  http.StatusRequestEntityTooLarge,
				typ:     errTypeInvalidRequest,
				code:    errCodeBodyTooLarge,
				message: "request body exceeds the limit of " + strconv.FormatInt(g.maxBody, 10) + " bytes",
			}
		}
		return req, false, errInvalidRequest("reading request body: " + err.Error())
	}
	req.body, req.buf = body, buf

	ct := r.Header.Get("Content-Type")
	if hasMediaType(ct, "multipart/form-data") {
		req.multipart = true
		model, err := reqbody.MultipartModel(ct, body)
		if err != nil {
			if ep == epGeneric && !errors.Is(err, reqbody.ErrDuplicateModel) {
				return req, true, nil // an upload without a model (say, /v1/files) is not ours
			}
			switch {
			case errors.Is(err, reqbody.ErrNoModel):
				return req, false, errInvalidRequest("multipart form has no 'model' field")
			case errors.Is(err, reqbody.ErrDuplicateModel):
				return req, false, errInvalidRequest(msgDuplicateModel)
			}
			return req, false, errInvalidRequest("malformed multipart form: " + err.Error())
		}
		req.info.Model, req.info.ModelPresent = model, true
	} else {
		if ep == epAudio {
			return req, false, errInvalidRequest("expected a multipart/form-data body with a 'model' field")
		}
		info, err := reqbody.Sniff(body, g.wantKeys && (ep == epChat || ep == epCompletions))
		if err != nil {
			if ep == epGeneric && !errors.Is(err, reqbody.ErrModelNotString) && !errors.Is(err, reqbody.ErrDuplicateModel) {
				return req, true, nil // an unknown /v1/ path without a model is not ours
			}
			return req, false, sniffError(err)
		}
		req.info = info
		req.stream = info.Stream && ep.streams()
	}
	if err := reqbody.CheckModel(req.info.Model); err != nil {
		// Before any upstream call: such a name is no model, and it would reach metric labels,
		// logs and the audit log (SPEC §9). The message does not echo the name.
		return req, false, errInvalidRequest(err.Error())
	}
	return req, false, nil
}

// recoverPanic turns a panic in the gateway's own code into a logged 500 (when nothing was
// written yet) and an audit row, instead of a dropped connection and no record.
func (c *call) recoverPanic() {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	c.h.logger.Error("panic serving an API call", zap.Any("panic", v), zap.Stack("stack"))
	if c.res.Status == 0 {
		c.fail(&apiError{status: http.StatusInternalServerError, typ: "server_error", message: msgInternalError})
	}
	c.res.Err = msgInternalError
}

// passOn hands the request, with the body already read, to the next handler.
func (c *call) passOn(next caddyhttp.Handler) error {
	c.passed = true
	body := c.req.body
	c.req.r.Body = io.NopCloser(bytes.NewReader(body))
	c.req.r.ContentLength = int64(len(body))
	return next.ServeHTTP(c.w, c.req.r)
}

// sniffError turns a body-sniffing error into the caller's 400.
func sniffError(err error) *apiError {
	switch {
	case errors.Is(err, reqbody.ErrNoModel):
		return errInvalidRequest("you must provide a model parameter")
	case errors.Is(err, reqbody.ErrModelNotString):
		return errInvalidRequest("'model' must be a string")
	case errors.Is(err, reqbody.ErrDuplicateModel):
		return errInvalidRequest(msgDuplicateModel)
	}
	return errInvalidRequest(err.Error()) // reqbody.ErrNotJSON, with the reason
}

// msgDuplicateModel answers a body that names several different models: the gateway would route
// and audit one while the upstream might run another.
const msgDuplicateModel = "'model' is given more than once with different values"

// maxPathDecodes is how many times hasDotSegment percent-decodes a path beyond the decoding the
// HTTP server did: a proxy or framework between the gateway and the model server may decode once
// more, so "%252e%252e" is a dot segment to them.
const maxPathDecodes = 2

// hasDotSegment reports whether the decoded request path p has a "." or ".." segment, also once
// decoded again (up to maxPathDecodes times). p is r.URL.Path: the server already decoded "%2e"
// and "%2f", and a raw dot segment stays as it is, so one check covers both spellings. Segments
// end at "/" and also at a backslash, which some servers take for a separator; a segment's ";" parameters
// are ignored, as servers such as Tomcat read "..;x" as "..".
func hasDotSegment(p string) bool {
	for round := 0; ; round++ {
		if dotSegment(p) {
			return true
		}
		if round == maxPathDecodes || strings.IndexByte(p, '%') < 0 {
			return false
		}
		p = unescapeLenient(p)
	}
}

// dotSegment reports whether p, as it is, has a "." or ".." segment.
func dotSegment(p string) bool {
	if strings.IndexByte(p, '.') < 0 {
		return false // the usual case: no dot at all
	}
	for p != "" {
		seg := p
		if i := strings.IndexAny(p, `/\`); i >= 0 {
			seg, p = p[:i], p[i+1:]
		} else {
			p = ""
		}
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// unescapeLenient decodes every valid %XX escape of s and keeps anything else as it is, as lenient
// decoders do; url.PathUnescape would give up on the whole string at the first bad escape.
func unescapeLenient(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// readBody reads the whole request body, failing with *http.MaxBytesError past limit. With
// pooled set, a body of declared length that fits a pooled buffer is read into one, returned as
// buf (reqbuf.go says when it goes back); buf is nil otherwise.
//
// A body read whole is closed at once: over HTTP/2 the server keeps the buffer the body arrived
// in (4 KiB) until the body is closed, which it otherwise does only when the handler returns,
// and a stream holds its handler for minutes.
func readBody(r *http.Request, limit int64, pooled bool) (body []byte, buf *requestBuf, err error) {
	if r.ContentLength > limit {
		return nil, nil, &http.MaxBytesError{Limit: limit}
	}
	if r.ContentLength >= 0 {
		// The usual case: read exactly the declared length into a buffer of that size.
		if pooled {
			buf = getRequestBuf(r.ContentLength)
		}
		if buf != nil {
			// Capped at its length: an append to the body allocates rather than reach the bytes
			// of earlier calls in the pooled buffer's tail.
			body = buf.b[:r.ContentLength:r.ContentLength]
		} else {
			body = make([]byte, r.ContentLength)
		}
		if _, err := io.ReadFull(r.Body, body); err != nil {
			if buf != nil {
				putRequestBuf(buf) // nothing else saw it
			}
			return nil, nil, err
		}
		_ = r.Body.Close()
		return body, buf, nil
	}
	b := bytes.NewBuffer(make([]byte, 0, 4096))
	n, err := b.ReadFrom(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, nil, err
	}
	if n > limit {
		return nil, nil, &http.MaxBytesError{Limit: limit}
	}
	_ = r.Body.Close()
	return b.Bytes(), nil, nil
}

// replacer returns the request's Caddy replacer, if any.
func replacer(r *http.Request) *caddy.Replacer {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	return repl
}
