package llmgateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/sse"
)

// maxErrorBody bounds a retryable answer's body, kept for the final error. A non-streaming
// answer is bounded by max_buffered_response.
const maxErrorBody = 1 << 20

// droppedRequestHeaders are caller headers never sent upstream: hop-by-hop headers, the
// caller's credentials (the gateway sets its own, SPEC §2.4), proxy metadata (upstreams are
// third parties) and headers the transport manages itself.
var droppedRequestHeaders = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Host":                true,
	"Content-Length":      true,
	"Expect":              true,
	"Accept-Encoding":     true, // let the transport negotiate and decode compression
	"Authorization":       true,
	"X-Api-Key":           true,
	"Api-Key":             true,
	"Cookie":              true,
	"Forwarded":           true,
	"Via":                 true,
	"X-Forwarded-For":     true,
	"X-Forwarded-Host":    true,
	"X-Forwarded-Proto":   true,
	"X-Real-Ip":           true,
}

// hopHeaders are removed from upstream responses (RFC 9110 §7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// newUpstreamRequest builds the request for uc carrying body; release the returned body once
// RoundTrip returned.
func (c *apiRequest) newUpstreamRequest(ctx context.Context, uc *upstreamClient, body []byte) (*http.Request, *upstreamBody) {
	r := c.r

	header := make(http.Header, len(r.Header)+len(uc.headers)+2)
	for name, values := range r.Header {
		if !droppedRequestHeaders[name] {
			header[name] = values
		}
	}
	// Headers named in Connection are hop-by-hop too.
	for _, v := range r.Header["Connection"] {
		for _, name := range strings.Split(v, ",") {
			delete(header, http.CanonicalHeaderKey(strings.TrimSpace(name)))
		}
	}
	// The client's own values are built once at provision: requests share them read-only.
	if uc.apiKey != "" {
		header["Authorization"] = uc.authValue
		if c.ep == epMessages {
			header["X-Api-Key"] = uc.keyValue
		}
	} else if key := callerCredential(r.Header); key != "" && !c.keyed {
		if v := r.Header["Authorization"]; len(v) == 1 && len(v[0]) == len("Bearer ")+len(key) && strings.HasPrefix(v[0], "Bearer ") {
			// The caller's own value is the one to send (the usual case): shared read-only, as
			// the headers copied above are.
			header["Authorization"] = v
		} else {
			header["Authorization"] = []string{"Bearer " + key}
		}
		if c.ep == epMessages {
			header["X-Api-Key"] = []string{key}
		}
	}
	for i := range uc.headers {
		// The configured name is the operator's: a value that expands to nothing removes the
		// caller's header of that name rather than letting it through.
		if v := uc.headers[i].valuesFor(r.Context()); v != nil {
			header[uc.headers[i].name] = v
		} else {
			delete(header, uc.headers[i].name)
		}
	}

	ub := &upstreamBody{b: body, sent: len(body) == 0}
	if len(body) > 0 {
		ub.drop = c.stream && !c.keepBodies()
		if ub.drop || c.buf != nil {
			ub.trace.WroteRequest = ub.wrote
			ctx = httptrace.WithClientTrace(ctx, &ub.trace)
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "", http.NoBody)
	// Into the URL NewRequestWithContext made of "": a URL of its own would be one more
	// allocation per attempt.
	*req.URL = uc.url(c.upPath, r.URL.RawQuery)
	req.Host = req.URL.Host
	req.Header = header
	if len(body) > 0 {
		// A *bytes.Reader in io.NopCloser, as NewRequestWithContext makes it: the transport then
		// knows the body is in memory and sends it with the headers. GetBody lets it replay the POST
		// on a keep-alive connection the upstream closed meanwhile.
		ub.first = bytes.NewReader(body)
		req.Body = io.NopCloser(ub.first)
		req.GetBody = ub.open
		req.ContentLength = int64(len(body))
	}
	return req, ub
}

// url is the upstream URL of path (which starts with "/") under uc's base_url. Every upstream
// call is built here, so a base_url query (Azure's api-version, say) is kept whatever the
// endpoint: it comes first, then the caller's query, if any.
func (uc *upstreamClient) url(path, query string) url.URL {
	u := *uc.baseURL
	u.Path += path
	u.RawPath = ""
	switch {
	case u.RawQuery == "":
		u.RawQuery = query
	case query != "":
		u.RawQuery += "&" + query
	}
	return u
}

// upstreamBody is the body of one upstream request. The transport keeps the request referenced
// until the answer has been read to its end, which for a stream is its whole life, and a prompt
// can be hundreds of KiB. So release makes GetBody forget the bytes once RoundTrip returned, and
// wrote, the WroteRequest hook of streams whose bodies the audit log does not keep (drop), makes
// the request's own reader forget them once the transport sent them.
//
// wrote also tells when the transport is done with the bytes, for a pooled body (requestBuf):
// the hook runs on the goroutine that read the body, after its last read of that write.
type upstreamBody struct {
	mu      sync.Mutex
	b       []byte        // what GetBody reads; nil once released
	first   *bytes.Reader // the request's Body
	rewound bool          // GetBody was called: a retry has a reader of its own
	drop    bool          // wrote empties first: a stream whose bodies the audit log does not keep
	// sent is set when a write read first to its end (or there is no body): the transport reads
	// it no more, since a retry after that asks GetBody for a reader of its own.
	sent bool

	// trace holds wrote as WroteRequest, when the request's context carries it.
	trace httptrace.ClientTrace
}

// open returns a fresh reader of the body; it is the request's GetBody. The transport calls it
// only within RoundTrip.
func (u *upstreamBody) open() (io.ReadCloser, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.rewound = true
	return io.NopCloser(bytes.NewReader(u.b)), nil
}

// release drops the bytes GetBody reads; call it once RoundTrip returned.
func (u *upstreamBody) release() {
	u.mu.Lock()
	u.b = nil
	u.mu.Unlock()
}

// wrote is the WroteRequest hook: the transport calls it from the goroutine that read the Body,
// once per write of the request, so nothing reads the Body concurrently. It notes whether the
// write read the Body to its end, and empties it for a stream (drop) once a write read it. A
// rewound request's first Body may still be read by an abandoned write, so it is left alone then.
func (u *upstreamBody) wrote(httptrace.WroteRequestInfo) {
	u.mu.Lock()
	if !u.rewound {
		// A transport resends a Body it never read as it is, without GetBody (net/http's
		// rewindBody, x/net's retry of a connection found unusable): only a body read to its
		// end is done with, and only a body read at all may be emptied, whatever a write that
		// failed before the body reported.
		u.sent = u.first.Len() == 0
		if u.drop && int64(u.first.Len()) < u.first.Size() {
			u.first.Reset(nil)
		}
	}
	u.mu.Unlock()
}

// doneWith reports whether the transport is done with the body's bytes: its Body was read to its
// end by a write and no other reader was asked for. Call it once RoundTrip returned (GetBody is
// only called within it).
func (u *upstreamBody) doneWith() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sent && !u.rewound
}

// callerCredential is the caller's bearer token (scheme matched case-insensitively), else its
// X-Api-Key, else "".
func callerCredential(h http.Header) string {
	if auth := h.Get("Authorization"); len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		return strings.TrimSpace(auth[7:])
	}
	return strings.TrimSpace(h.Get("X-Api-Key"))
}

// copyResponseHeader copies upstream response headers to dst without hop-by-hop headers, and
// without Content-Length when dropLength is set (the gateway sets its own).
func copyResponseHeader(dst, src http.Header, dropLength bool) {
	for name, values := range src {
		dst[name] = values
	}
	for _, name := range src["Connection"] {
		for _, n := range strings.Split(name, ",") {
			dst.Del(strings.TrimSpace(n))
		}
	}
	for _, name := range hopHeaders {
		delete(dst, name)
	}
	if dropLength {
		delete(dst, "Content-Length")
	}
}

// isEventStream reports whether an upstream answer is SSE.
func isEventStream(h http.Header) bool {
	return hasMediaType(h.Get("Content-Type"), "text/event-stream")
}

// hasMediaType reports whether a Content-Type value names the media type mt (lower case),
// whatever its parameters. It is what mime.ParseMediaType would say for well-formed values,
// without that function's allocations on every request.
func hasMediaType(contentType, mt string) bool {
	v := strings.TrimLeft(contentType, " \t")
	if len(v) < len(mt) || !strings.EqualFold(v[:len(mt)], mt) {
		return false
	}
	rest := strings.TrimLeft(v[len(mt):], " \t")
	return rest == "" || rest[0] == ';'
}

// readLimited reads at most limit bytes of an upstream answer's body. Its buffer never grows
// past limit: it is sized by Content-Length when that is known and within limit (a hint only: it
// still grows if the upstream sends more), else it doubles from 512 bytes up to limit.
func readLimited(resp *http.Response, limit int64) ([]byte, error) {
	return readInto(resp, limit, nil)
}

// answerBufSize is the capacity of the pooled buffers that answers are read into when nothing
// keeps them past the call (pooledAnswerBuf): most non-streaming answers fit.
const answerBufSize = 4 << 10

// answerBufs holds *[answerBufSize]byte: an array pointer goes in and out of the pool without
// the allocation a *[]byte would cost on every Put.
var answerBufs = sync.Pool{New: func() any { return new([answerBufSize]byte) }}

// pooledAnswerBuf is a buffer from the pool for an answer of resp; give it back with
// putAnswerBuf once the answer has been written and nothing refers to it. It is nil when the
// answer is declared larger than the pool's buffers.
func pooledAnswerBuf(resp *http.Response) []byte {
	if resp.ContentLength >= answerBufSize {
		return nil
	}
	return answerBufs.Get().(*[answerBufSize]byte)[:0]
}

// putAnswerBuf returns buf to the pool if it is one of the pool's (an answer that outgrew its
// pooled buffer was read into a buffer of its own).
func putAnswerBuf(buf []byte) {
	if cap(buf) != answerBufSize {
		return
	}
	answerBufs.Put((*[answerBufSize]byte)(buf[:answerBufSize]))
}

// readInto is readLimited reading into buf's capacity first when buf is not nil.
func readInto(resp *http.Response, limit int64, buf []byte) ([]byte, error) {
	if buf != nil {
		buf = buf[:0:min(int64(cap(buf)), limit)]
	} else {
		size := int64(512)
		if cl := resp.ContentLength; cl >= 0 && cl < limit {
			size = cl + 1 // one byte more, so the read that sees EOF needs no growth
		}
		buf = make([]byte, 0, min(size, limit))
	}
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), limit))
			copy(grown, buf)
			buf = grown
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// writeBuffered sends a complete (non-streaming) answer, applying the response transforms of
// SPEC §6 to successful chat and completion answers.
func writeBuffered(d delivery, req *apiRequest, spec *attemptSpec, resp *http.Response, body []byte) (ans answer) {
	uc := spec.uc
	if resp.StatusCode/100 == 2 {
		if kind, ok := req.ep.sseKind(); ok && (uc.SpecialPrefix != "" || (req.ep == epChat && uc.format != sse.Passthrough)) {
			if out, err := sse.TransformResponse(body, kind, uc.SpecialPrefix, req.ep.format(uc)); err == nil {
				body = out
			}
		}
		if u, ok := sse.ParseUsage(body); ok {
			ans.usage = u
		}
	}
	ans.status = resp.StatusCode

	h := d.w.Header()
	copyResponseHeader(h, resp.Header, true)
	if req.stream && resp.StatusCode/100 != 2 && isEventStream(resp.Header) {
		// A failed stream is answered in JSON, as the SDKs expect of an error (SPEC §6).
		body = sseErrorJSON(body, resp.StatusCode, req.r.URL.Path)
		h.Set("Content-Type", "application/json")
	}
	ans.response = body
	// The three values the gateway sets share one array, each its own slice of it (capacity 1,
	// so that an append by a later handler copies instead of overwriting its neighbour).
	vals := make([]string, 3)
	vals[2] = strconv.Itoa(len(body))
	setGatewayHeadersIn(h, d.tried, d.backend, vals[:2])
	setQuotaHeaders(h, d.quota)
	h["Content-Length"] = vals[2:3:3]
	d.w.WriteHeader(resp.StatusCode)
	_, _ = d.w.Write(body)
	return ans
}

// relayLarge sends an answer larger than max_buffered_response as the upstream sends it, holding
// no more of it than the copy needs: no response transform applies and no body is kept for the
// audit log. head is what was read of it so far. The usage is read from the answer's last bytes,
// where OpenAI-style answers put it, so large answers (embeddings, mostly) are still counted.
// ctx is the call's context.
func relayLarge(ctx context.Context, d delivery, g *generation, resp *http.Response, head []byte) (ans answer) {
	defer resp.Body.Close()
	ans.status = resp.StatusCode
	ans.err = "answer larger than max_buffered_response (" + strconv.FormatInt(g.maxBuffered, 10) +
		" bytes) relayed as the upstream sent it"
	copyResponseHeader(d.w.Header(), resp.Header, false)
	setGatewayHeaders(d.w.Header(), d.tried, d.backend)
	setQuotaHeaders(d.w.Header(), d.quota)
	d.w.WriteHeader(resp.StatusCode)
	end := new(tailWriter)
	var dst io.Writer = end
	if d.keepBodies {
		// The audit row keeps the answer's first bytes and its size, as for a stream.
		kept := audit.NewBodyBuffer(d.auditMax)
		defer func() { ans.response = kept.Bytes() }()
		dst = io.MultiWriter(end, kept)
	}
	_, _ = dst.Write(head)
	if _, err := d.w.Write(head); err != nil {
		ans.callerGone()
		return ans
	}
	if _, err := io.Copy(io.MultiWriter(d.w, dst), resp.Body); err != nil {
		ans.partial = true
		if ctx.Err() != nil || d.stopCtx.Err() != nil {
			ans.callerGone()
		}
		return ans
	}
	if resp.StatusCode/100 == 2 {
		if u, ok := end.usage(); ok {
			ans.usage = u
		}
	}
	return ans
}

// tailWriter keeps the last bytes written to it: enough to hold an answer's closing usage object.
type tailWriter struct {
	buf [4 << 10]byte
	n   int
}

func (t *tailWriter) Write(p []byte) (int, error) {
	written := len(p)
	if len(p) >= len(t.buf) {
		t.n = copy(t.buf[:], p[len(p)-len(t.buf):])
		return written, nil
	}
	keep := min(t.n, len(t.buf)-len(p))
	copy(t.buf[:], t.buf[t.n-keep:t.n])
	t.n = keep + copy(t.buf[keep:], p)
	return written, nil
}

// usage parses the usage object of the answer whose end the writer holds: the members from the
// last "usage" key on, which close the answer's top-level object, read as an object of their own.
func (t *tailWriter) usage() (sse.Usage, bool) {
	tail := t.buf[:t.n]
	i := bytes.LastIndex(tail, []byte(`"usage"`))
	if i < 0 {
		return sse.Usage{}, false
	}
	obj := make([]byte, 0, 1+len(tail)-i)
	obj = append(append(obj, '{'), tail[i:]...)
	return sse.ParseUsage(obj)
}

// sseErrorJSON turns an error an upstream sent as SSE into a JSON body: the first event whose
// data is a JSON object, else the text wrapped in an error of path's API.
func sseErrorJSON(body []byte, status int, path string) []byte {
	if data, ok := sse.ErrorJSON(body); ok {
		return data
	}
	msg := strings.TrimSpace(string(body))
	if msg == "" {
		msg = "upstream answered " + strconv.Itoa(status) + " with no body"
	}
	return (&apiError{status: status, typ: errTypeUpstream, message: msg}).encode(path)
}

// format is the thinking normalisation that applies to the endpoint's answers from uc: only
// chat answers carry reasoning.
func (e endpoint) format(uc *upstreamClient) sse.Format {
	if e != epChat {
		return sse.Passthrough
	}
	return uc.format
}

// sseKind maps chat and completions to the sse transform kind.
func (e endpoint) sseKind() (sse.Kind, bool) {
	switch e {
	case epChat:
		return sse.Chat, true
	case epCompletions:
		return sse.Completion, true
	}
	return 0, false
}

func zapClient(uc *upstreamClient) zap.Field { return zap.String("client", uc.Name) }
func zapErr(err error) zap.Field             { return zap.Error(err) }
