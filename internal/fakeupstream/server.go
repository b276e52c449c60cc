// Package fakeupstream is a fake OpenAI-compatible upstream for end-to-end
// tests, the example config and the benchmark.
//
// It serves, under /v1: chat/completions and completions (JSON, or SSE with
// "stream":true), embeddings (floats, or base64 with "encoding_format"),
// audio/transcriptions and audio/translations (multipart), models and
// models/{id}, responses and messages (SSE with named events, in the order
// of the real APIs, which the SDKs' stream accumulators rely on), rerank,
// and echoes any other POST with a JSON body. Answers name the
// server ("hello from <name>") and echo the request's model, so a test can
// tell which backend answered. Settings change failure modes and timing at
// run time; counters and wait helpers let tests observe what the upstream
// saw without sleeping.
//
// A request carrying "X-Fake-Digest: 1" is answered with "X-Fake-Body-Sha256", the hex SHA-256 of
// the body as the fake received it, so a test can check what reached the upstream request by
// request.
//
// Besides the Go API, two control endpoints serve command mode
// (cmd/fakeupstream, and fake_openai in Caddy): GET/POST/DELETE /_fake/settings (read, merge, reset;
// see Settings for the JSON form) and GET /_fake/stats.
package fakeupstream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goccy/go-json"
)

// Server is a fake upstream. It is an http.Handler; Listen also serves it on
// a socket of its own. All methods are safe for concurrent use.
type Server struct {
	name       string
	nameHeader []string // X-Fake-Upstream value, shared by all answers

	mu   sync.Mutex // serialises settings read-modify-write, guards paths
	plan atomic.Pointer[plan]

	requests  atomic.Int64
	http2     atomic.Int64
	cancelled atomic.Int64
	inFlight  atomic.Int64
	seq       atomic.Uint64 // source of answer ids
	paths     map[string]int64
	last      atomic.Pointer[Request]
	changed   notifier

	closeOnce sync.Once
	closing   chan struct{} // closed by Close: pending waits give up
	srv       *http.Server
	ln        net.Listener
	served    chan struct{} // closed when Serve returned
}

// Request is a copy of a request the fake received.
type Request struct {
	Method   string
	Path     string
	RawQuery string // the query, without "?"
	Header   http.Header
	Body     []byte
}

// Stats are the fake's counters, as served by GET /_fake/stats.
type Stats struct {
	Name      string           `json:"name"`
	Requests  int64            `json:"requests"`
	HTTP2     int64            `json:"http2"` // of Requests, those received over HTTP/2
	Cancelled int64            `json:"cancelled"`
	InFlight  int64            `json:"in_flight"`
	Paths     map[string]int64 `json:"paths"`
}

// New returns a fake upstream named name with default Settings, usable as
// a plain handler.
func New(name string) *Server {
	s := &Server{
		name:       name,
		nameHeader: []string{name},
		paths:      make(map[string]int64),
		closing:    make(chan struct{}),
	}
	s.plan.Store(compile(name, Settings{}))
	return s
}

// Listen returns a fake upstream serving HTTP/1.1 on addr (use "127.0.0.1:0"
// in tests) until Close.
func Listen(name, addr string) (*Server, error) {
	return listen(name, addr, false)
}

// ListenH2C is Listen serving HTTP/2 without TLS too: a client that opens with
// the HTTP/2 preface (prior knowledge, as Caddy's transport with versions h2c
// does) speaks HTTP/2, any other HTTP/1.1. Stats counts the HTTP/2 requests.
func ListenH2C(name, addr string) (*Server, error) {
	return listen(name, addr, true)
}

func listen(name, addr string, h2c bool) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fake upstream %s: listen: %w", name, err)
	}
	s := New(name)
	s.ln = ln
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	if h2c {
		s.srv.Protocols = new(http.Protocols)
		s.srv.Protocols.SetHTTP1(true)
		s.srv.Protocols.SetUnencryptedHTTP2(true)
	}
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		_ = s.srv.Serve(ln) // always an error; ErrServerClosed after Close
	}()
	return s, nil
}

// Name returns the server's name.
func (s *Server) Name() string { return s.name }

// Addr returns the listening address (host:port), or "" for a server made
// with New.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL returns the base URL of the API, "http://host:port/v1", or "" for a
// server made with New.
func (s *Server) URL() string {
	if s.ln == nil {
		return ""
	}
	return "http://" + s.Addr() + "/v1"
}

// Close stops listening, closes every connection and waits for running
// handlers to return. Answers waiting (Delay, ChunkDelay) are cut at once,
// also those of a server made with New.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closing) // first, so stalled answers are cut, not counted as cancelled
		if s.srv != nil {
			err = s.srv.Close()
			<-s.served
		}
	})
	if werr := s.WaitIdle(context.Background()); werr != nil && err == nil {
		err = werr
	}
	return err
}

func (s *Server) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// Settings returns a copy of the current settings.
func (s *Server) Settings() Settings {
	return s.plan.Load().set.clone()
}

// Set replaces the settings; requests already running keep the old ones.
func (s *Server) Set(set Settings) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plan.Store(compile(s.name, set.clone()))
}

// Update applies fn to a copy of the current settings and stores the result,
// atomically with respect to other Set and Update calls.
func (s *Server) Update(fn func(*Settings)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.plan.Load().set.clone()
	fn(&set)
	s.plan.Store(compile(s.name, set.clone()))
}

// Requests returns the number of API requests received (control endpoints
// under /_fake/ excluded).
func (s *Server) Requests() int64 { return s.requests.Load() }

// Cancelled returns the number of requests the client abandoned before the
// answer was complete: its context was cancelled or a write to it failed.
// Answers cut by BreakAfter, Hangup or Close are not counted.
func (s *Server) Cancelled() int64 { return s.cancelled.Load() }

// HTTP2 returns the number of API requests received over HTTP/2.
func (s *Server) HTTP2() int64 { return s.http2.Load() }

// InFlight returns the number of API requests being handled.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// Count returns the number of API requests received for path, e.g.
// "/v1/chat/completions".
func (s *Server) Count(path string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paths[path]
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{Name: s.name, Requests: s.Requests(), HTTP2: s.HTTP2(), Cancelled: s.Cancelled(), InFlight: s.InFlight()}
	s.mu.Lock()
	st.Paths = make(map[string]int64, len(s.paths))
	for k, v := range s.paths {
		st.Paths[k] = v
	}
	s.mu.Unlock()
	return st
}

// LastRequest returns a copy of the last API request received; its Method is
// "" when there was none.
func (s *Server) LastRequest() Request {
	r := s.last.Load()
	if r == nil {
		return Request{}
	}
	return Request{Method: r.Method, Path: r.Path, RawQuery: r.RawQuery, Header: r.Header.Clone(), Body: append([]byte(nil), r.Body...)}
}

// WaitCancelled returns nil once at least n requests were cancelled (see
// Cancelled), or an error when ctx ends first.
func (s *Server) WaitCancelled(ctx context.Context, n int64) error {
	return s.waitUntil(ctx, func() bool { return s.Cancelled() >= n }, "cancelled requests")
}

// WaitInFlight returns nil once at least n API requests are in flight, or an
// error when ctx ends first.
func (s *Server) WaitInFlight(ctx context.Context, n int64) error {
	return s.waitUntil(ctx, func() bool { return s.InFlight() >= n }, "requests in flight")
}

// WaitIdle returns nil once no API request is in flight, or an error when ctx
// ends first. After a client gave up, it tells that the fake noticed.
func (s *Server) WaitIdle(ctx context.Context) error {
	return s.waitUntil(ctx, func() bool { return s.InFlight() == 0 }, "idle")
}

func (s *Server) waitUntil(ctx context.Context, cond func() bool, what string) error {
	for {
		ch := s.changed.wait() // taken before cond: no change can slip between
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fake upstream %s: waiting for %s: %w", s.name, what, ctx.Err())
		}
	}
}

// notifier wakes waiters when a counter changes. The channel is made only
// when someone waits, so requests pay one uncontended lock, no allocation.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) broadcast() {
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}

// maxBody bounds request bodies; audio uploads in tests stay far below.
const maxBody = 64 << 20

// ServeHTTP answers API requests under /v1 and control requests under /_fake.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_fake/") {
		s.serveControl(w, r)
		return
	}
	s.requests.Add(1)
	if r.ProtoMajor == 2 {
		s.http2.Add(1)
	}
	s.inFlight.Add(1)
	s.mu.Lock()
	s.paths[r.URL.Path]++
	s.mu.Unlock()
	s.changed.broadcast()

	x := &exchange{s: s, w: w, r: r, p: s.plan.Load()}
	bp := bufPool.Get().(*[]byte)
	x.buf = (*bp)[:0]
	defer func() {
		*bp = x.buf[:0]
		bufPool.Put(bp)
		x.finish()
	}()
	x.serve()
}

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 2048)
	return &b
}}

// exchange is one API request being answered.
type exchange struct {
	s   *Server
	w   http.ResponseWriter
	r   *http.Request
	p   *plan // settings snapshot: stable for the whole answer
	buf []byte

	id      uint64 // answer id, taken on first use
	created int64  // unix time of the answer

	rc       *http.ResponseController
	timer    *time.Timer
	sent     int  // stream chunks sent, for BreakAfter
	complete bool // the whole answer was written
	gone     bool // a write to the client failed
	aborted  bool // cut on purpose (BreakAfter, Hangup)
}

func (x *exchange) finish() {
	if !x.complete && !x.aborted && !x.s.isClosing() && (x.gone || x.r.Context().Err() != nil) {
		x.s.cancelled.Add(1)
	}
	x.s.inFlight.Add(-1)
	x.s.changed.broadcast()
}

func (x *exchange) serve() {
	body, err := readBody(x.w, x.r)
	if x.r.Header.Get("X-Fake-Digest") == "1" {
		sum := sha256.Sum256(body)
		x.w.Header().Set("X-Fake-Body-Sha256", hex.EncodeToString(sum[:]))
	}
	x.s.last.Store(&Request{Method: x.r.Method, Path: x.r.URL.Path, RawQuery: x.r.URL.RawQuery, Header: x.r.Header, Body: body})
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			x.invalid(http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		x.invalid(http.StatusBadRequest, "reading request body: "+err.Error())
		return
	}
	if !x.sleep(x.p.set.Delay) {
		return
	}
	if x.p.set.Hangup {
		x.abort()
	}
	if x.p.failed {
		errBody := x.p.openAIError
		if x.r.URL.Path == "/v1/messages" {
			errBody = x.p.anthropicError
		}
		x.writeJSON(x.p.status, errBody)
		return
	}
	x.route(body)
}

// readBody reads the whole body, sized by Content-Length when known. The
// slice is kept as LastRequest, so it is not pooled.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > maxBody {
		return nil, &http.MaxBytesError{Limit: maxBody}
	}
	if r.ContentLength == 0 {
		return nil, nil
	}
	if r.ContentLength < 0 { // unknown length: chunked
		return io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	}
	// Asking for one byte more reaches EOF, so net/http starts its
	// background read and cancels the request's context when the client
	// goes away.
	n := int(r.ContentLength)
	b := make([]byte, n+1)
	switch got, err := io.ReadFull(r.Body, b); {
	case got == n && errors.Is(err, io.ErrUnexpectedEOF):
		return b[:n], nil
	case err == nil:
		return nil, errors.New("body longer than Content-Length")
	default:
		return nil, err
	}
}

// sleep waits d; false when the client went away first. Close cuts the
// answer instead.
func (x *exchange) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	if x.timer == nil {
		x.timer = time.NewTimer(d)
	} else {
		x.timer.Reset(d)
	}
	select {
	case <-x.timer.C:
		return true
	case <-x.r.Context().Done():
		x.timer.Stop()
		select {
		case <-x.s.closing: // Close ended the context: not the client's doing
			x.abort()
		default:
		}
		return false
	case <-x.s.closing:
		x.abort() // a closing server cuts answers, it does not finish them
		return false
	}
}

// abort cuts the connection without finishing the answer: net/http closes
// it on this panic without logging, and the client reads an unexpected EOF.
func (x *exchange) abort() {
	x.aborted = true
	panic(http.ErrAbortHandler)
}

// Response header values shared by all answers (net/http only reads them).
var (
	jsonType = []string{"application/json"}
	sseType  = []string{"text/event-stream"}
	noCache  = []string{"no-cache"}
)

func (x *exchange) setHeaders(contentType []string) {
	h := x.w.Header()
	h["Content-Type"] = contentType
	h["X-Fake-Upstream"] = x.s.nameHeader
	for _, kv := range x.p.headers {
		h[kv.key] = kv.value
	}
}

// writeJSON sends a complete JSON answer. Left unflushed, net/http sets
// Content-Length itself.
func (x *exchange) writeJSON(status int, body []byte) {
	x.setHeaders(jsonType)
	x.w.WriteHeader(status)
	_, err := x.w.Write(body)
	x.complete = err == nil
	x.gone = err != nil
}

// invalid answers a request the fake refuses, in OpenAI's error shape.
func (x *exchange) invalid(status int, msg string) {
	b := append(x.buf[:0], `{"error":{"message":`...)
	b = appendQuoted(b, "fake "+x.s.name+": "+msg)
	b = append(b, `,"type":"invalid_request_error","param":null,"code":null}}`...)
	x.buf = b
	x.writeJSON(status, b)
}

// serveControl serves the /_fake/ endpoints of command mode.
func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	var out any
	switch r.URL.Path {
	case "/_fake/stats":
		if r.Method != http.MethodGet {
			controlError(w, http.StatusMethodNotAllowed, "use GET")
			return
		}
		out = s.Stats()
	case "/_fake/settings":
		switch r.Method {
		case http.MethodGet:
		case http.MethodPost, http.MethodPut:
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
			if err != nil {
				controlError(w, http.StatusBadRequest, "reading body: "+err.Error())
				return
			}
			s.mu.Lock()
			set := s.plan.Load().set.clone()
			err = json.Unmarshal(body, &set)
			if err == nil {
				s.plan.Store(compile(s.name, set))
			}
			s.mu.Unlock()
			if err != nil {
				controlError(w, http.StatusBadRequest, "decoding settings: "+err.Error())
				return
			}
		case http.MethodDelete:
			s.Set(Settings{})
		default:
			controlError(w, http.StatusMethodNotAllowed, "use GET, POST or DELETE")
			return
		}
		out = s.Settings()
	default:
		controlError(w, http.StatusNotFound, "no control endpoint "+r.URL.Path)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		controlError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header()["Content-Type"] = jsonType
	_, _ = w.Write(b)
}

func controlError(w http.ResponseWriter, status int, msg string) {
	b := appendQuoted([]byte(`{"error":{"message":`), msg)
	b = append(b, `,"type":"invalid_request_error","param":null,"code":null}}`...)
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
