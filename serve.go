package llmgateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

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

// serveAPI reads and sniffs the body, then routes the call.
func (h *Handler) serveAPI(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, g *generation, ep endpoint, upPath string) error {
	h.inflight.Add(1)
	defer h.inflight.Done()
	gauge := inFlightGauge(ep)
	gauge.Inc()
	defer gauge.Dec()

	// Upstream calls end with the caller's request, or when the process exits.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(h.stopCtx, cancel)()

	c := &call{
		h:      h,
		g:      g,
		w:      w,
		r:      r,
		ctx:    ctx,
		ep:     ep,
		upPath: upPath,
		start:  time.Now(),
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
	defer c.finish()
	defer c.recoverPanic()

	body, err := readBody(r, g.maxBody)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			c.fail(&apiError{
				status:  http.StatusRequestEntityTooLarge,
				typ:     errTypeInvalidRequest,
				code:    errCodeBodyTooLarge,
				message: "request body exceeds the limit of " + strconv.FormatInt(g.maxBody, 10) + " bytes",
			})
			return nil
		}
		c.fail(errInvalidRequest("reading request body: " + err.Error()))
		return nil
	}
	c.body = body

	ct := r.Header.Get("Content-Type")
	if hasMediaType(ct, "multipart/form-data") {
		c.multipart = true
		model, err := reqbody.MultipartModel(ct, body)
		if err != nil {
			if ep == epGeneric {
				return c.passOn(next, body) // an upload without a model (say, /v1/files) is not ours
			}
			if errors.Is(err, reqbody.ErrNoModel) {
				c.fail(errInvalidRequest("multipart form has no 'model' field"))
			} else {
				c.fail(errInvalidRequest("malformed multipart form: " + err.Error()))
			}
			return nil
		}
		c.info.Model, c.info.ModelPresent = model, true
	} else {
		if ep == epAudio {
			c.fail(errInvalidRequest("expected a multipart/form-data body with a 'model' field"))
			return nil
		}
		info, err := reqbody.Sniff(body, g.wantKeys && (ep == epChat || ep == epCompletions))
		if err != nil {
			if ep == epGeneric && !errors.Is(err, reqbody.ErrModelNotString) {
				return c.passOn(next, body) // an unknown /v1/ path without a model is not ours
			}
			c.fail(sniffError(err))
			return nil
		}
		c.info = info
		c.stream = info.Stream && ep.streams()
	}
	c.res.Model = c.info.Model
	c.route()
	return nil
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
		c.fail(&apiError{status: http.StatusInternalServerError, typ: "server_error", message: "internal error in the gateway"})
	}
	c.res.Err = "internal error in the gateway"
}

// passOn hands the request, with the body already read, to the next handler.
func (c *call) passOn(next caddyhttp.Handler, body []byte) error {
	c.passed = true
	c.r.Body = io.NopCloser(bytes.NewReader(body))
	c.r.ContentLength = int64(len(body))
	return next.ServeHTTP(c.w, c.r)
}

// sniffError turns a body-sniffing error into the caller's 400.
func sniffError(err error) *apiError {
	switch {
	case errors.Is(err, reqbody.ErrNoModel):
		return errInvalidRequest("you must provide a model parameter")
	case errors.Is(err, reqbody.ErrModelNotString):
		return errInvalidRequest("'model' must be a string")
	}
	return errInvalidRequest(err.Error()) // reqbody.ErrNotJSON, with the reason
}

// readBody reads the whole request body, failing with *http.MaxBytesError past limit.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	if r.ContentLength >= 0 {
		// The usual case: read exactly the declared length into a buffer of that size.
		body := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, err
		}
		return body, nil
	}
	buf := bytes.NewBuffer(make([]byte, 0, 4096))
	n, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	return buf.Bytes(), nil
}

// replacer returns the request's Caddy replacer, if any.
func replacer(r *http.Request) *caddy.Replacer {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	return repl
}
