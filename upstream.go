package llmgateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/goccy/go-json"
	"go.uber.org/zap"

	"github.com/llmgw/caddy-llm-gateway/sse"
)

// Limits on upstream bodies the gateway holds in memory.
const (
	maxErrorBody    = 1 << 20  // a retryable answer's body, kept for the final error
	maxResponseBody = 64 << 20 // a non-streaming answer
)

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
func (c *call) newUpstreamRequest(ctx context.Context, uc *upstreamClient, body []byte) (*http.Request, *upstreamBody) {
	r := c.r
	u := *uc.baseURL
	u.Path += c.upPath
	u.RawPath = ""
	// The base's own query (Azure's api-version, say) comes first, then the caller's.
	switch {
	case u.RawQuery == "":
		u.RawQuery = r.URL.RawQuery
	case r.URL.RawQuery != "":
		u.RawQuery += "&" + r.URL.RawQuery
	}

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
	} else if key := callerCredential(r.Header); key != "" {
		header["Authorization"] = []string{"Bearer " + key}
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

	ub := &upstreamBody{b: body}
	if len(body) > 0 && c.stream && !c.keepBodies() {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: ub.wrote})
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "", http.NoBody)
	req.URL = &u
	req.Host = u.Host
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

// upstreamBody is the body of one upstream request. The transport keeps the request referenced
// until the answer has been read to its end, which for a stream is its whole life, and a prompt
// can be hundreds of KiB. So release makes GetBody forget the bytes once RoundTrip returned, and
// wrote, the WroteRequest hook of streams whose bodies the audit log does not keep, makes the
// request's own reader forget them once the transport sent them.
type upstreamBody struct {
	mu      sync.Mutex
	b       []byte        // what GetBody reads; nil once released
	first   *bytes.Reader // the request's Body
	rewound bool          // GetBody was called: a retry has a reader of its own
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

// wrote empties the request's Body once the transport wrote the request. The transport calls it
// from the goroutine that read the Body, so nothing reads it concurrently; a rewound request's
// first Body may still be read by an abandoned write, so it is left alone then.
func (u *upstreamBody) wrote(httptrace.WroteRequestInfo) {
	u.mu.Lock()
	if !u.rewound {
		u.first.Reset(nil)
	}
	u.mu.Unlock()
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

// readLimited reads at most limit bytes of an upstream answer's body.
func readLimited(resp *http.Response, limit int64) ([]byte, error) {
	size := resp.ContentLength // a hint: the buffer still grows if the upstream sends more
	if size < 0 || size > limit {
		size = 512
	}
	// One byte more than the body, so ReadFrom sees EOF without growing the buffer first.
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	_, err := buf.ReadFrom(io.LimitReader(resp.Body, limit))
	return buf.Bytes(), err
}

// copyResponse relays a complete (non-streaming) answer, applying the response transforms of
// SPEC §6 to successful chat and completion answers. It reports false when the body could not
// be read, so the next client is tried: nothing was written to the caller yet.
func (c *call) copyResponse(uc *upstreamClient, resp *http.Response, probe bool) bool {
	g := c.g
	body, err := readLimited(resp, maxResponseBody+1)
	if err == nil && int64(len(body)) > maxResponseBody {
		uc.state.Breaker.Success()
		c.relayLarge(resp, body)
		return true
	}
	resp.Body.Close()
	if err != nil {
		if c.ctx.Err() != nil {
			if probe {
				uc.state.Breaker.Abandon()
			}
			c.callerGone()
			return true
		}
		uc.state.Breaker.Failure(g.policy, time.Now())
		c.last = failure{kind: failConnect, err: err}
		c.res.Backend = ""
		return false
	}
	uc.state.Breaker.Success()

	if resp.StatusCode/100 == 2 {
		if kind, ok := c.ep.sseKind(); ok && (uc.SpecialPrefix != "" || (c.ep == epChat && uc.format != sse.Passthrough)) {
			if out, err := sse.TransformResponse(body, kind, uc.SpecialPrefix, c.format(uc)); err == nil {
				body = out
			}
		}
		if u, ok := sse.ParseUsage(body); ok {
			c.res.Usage = u
		}
	}
	c.res.Status = resp.StatusCode

	h := c.w.Header()
	copyResponseHeader(h, resp.Header, true)
	if c.stream && resp.StatusCode/100 != 2 && isEventStream(resp.Header) {
		// A failed stream is answered in JSON, as the SDKs expect of an error (SPEC §6).
		body = sseErrorJSON(body, resp.StatusCode, c.r.URL.Path)
		h.Set("Content-Type", "application/json")
	}
	c.res.Response = body
	c.setGatewayHeaders()
	h.Set("Content-Length", strconv.Itoa(len(body)))
	c.w.WriteHeader(resp.StatusCode)
	_, _ = c.w.Write(body)
	return true
}

// relayLarge sends an answer too large to hold in memory as the upstream sent it, without
// transforms or usage: head is what was read of it so far.
func (c *call) relayLarge(resp *http.Response, head []byte) {
	defer resp.Body.Close()
	c.res.Status = resp.StatusCode
	c.res.Err = "answer larger than " + strconv.Itoa(maxResponseBody) + " bytes relayed without inspection"
	copyResponseHeader(c.w.Header(), resp.Header, false)
	c.setGatewayHeaders()
	c.w.WriteHeader(resp.StatusCode)
	if _, err := c.w.Write(head); err != nil {
		c.callerGone()
		return
	}
	if _, err := io.Copy(c.w, resp.Body); err != nil {
		c.res.Partial = true
		if c.ctx.Err() != nil {
			c.callerGone()
		}
	}
}

// sseErrorJSON turns an error an upstream sent as SSE into a JSON body: the first event whose
// data is a JSON object, else the text wrapped in an error of path's API.
func sseErrorJSON(body []byte, status int, path string) []byte {
	rd := sse.NewReader(bytes.NewReader(body))
	for {
		ev, err := rd.Next()
		if err != nil {
			break
		}
		if data := bytes.TrimSpace(ev.Data); !ev.Comment && len(data) > 0 && data[0] == '{' && json.Valid(data) {
			return append([]byte(nil), data...)
		}
	}
	msg := strings.TrimSpace(string(body))
	if msg == "" {
		msg = "upstream answered " + strconv.Itoa(status) + " with no body"
	}
	return (&apiError{status: status, typ: errTypeUpstream, message: msg}).encode(path)
}

// format is the thinking normalisation that applies to this call's answers from uc: only chat
// answers carry reasoning.
func (c *call) format(uc *upstreamClient) sse.Format {
	if c.ep != epChat {
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
