package llmgateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/llmgw/caddy-llm-gateway/router"
)

// TestRequestBufClasses: a body goes into the smallest pooled buffer that holds it; a larger one
// gets none.
func TestRequestBufClasses(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want int // capacity; 0: no pooled buffer
	}{
		{0, 4 << 10}, {2048, 4 << 10}, {4 << 10, 4 << 10}, {4<<10 + 1, 16 << 10},
		{16 << 10, 16 << 10}, {64 << 10, 64 << 10}, {64<<10 + 1, 0},
	} {
		rb := getRequestBuf(tc.n)
		switch {
		case tc.want == 0 && rb != nil:
			t.Errorf("%d bytes: a buffer of %d, want none", tc.n, len(rb.b))
		case tc.want != 0 && (rb == nil || len(rb.b) != tc.want || cap(rb.b) != tc.want):
			t.Errorf("%d bytes: %v, want a buffer of %d", tc.n, rb, tc.want)
		}
		if rb != nil {
			putRequestBuf(rb)
		}
	}
}

// TestReadBodyPooled: a body of declared length fitting a class is read into a pooled buffer
// when asked; one of unknown length or larger is read into its own.
func TestReadBodyPooled(t *testing.T) {
	for _, tc := range []struct {
		name   string
		length int64 // ContentLength; -1: unknown
		size   int
		pooled bool
		want   bool // a pooled buffer
	}{
		{"declared", 2048, 2048, true, true},
		{"not asked", 2048, 2048, false, false},
		{"unknown length", -1, 2048, true, false},
		{"larger than every class", 70 << 10, 70 << 10, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := make([]byte, tc.size)
			for i := range body {
				body[i] = byte('a' + i%26)
			}
			r := &http.Request{Body: io.NopCloser(&readerOf{b: body}), ContentLength: tc.length}
			got, buf, err := readBody(r, 1<<20, tc.pooled)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(body) {
				t.Errorf("body of %d bytes differs from the %d sent", len(got), len(body))
			}
			if (buf != nil) != tc.want {
				t.Fatalf("pooled buffer %v, want %v", buf != nil, tc.want)
			}
			if buf != nil && &got[0] != &buf.b[0] {
				t.Error("the body is not in the pooled buffer")
			}
		})
	}
}

// readerOf is an io.Reader of b that is no known in-memory type, like a server's request body.
type readerOf struct{ b []byte }

func (r *readerOf) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// TestUpstreamBodyDoneWith: the transport is done with a pooled body only once a write reported
// through WroteRequest has read the request's Body to its end and no other reader was asked for
// (GetBody). Each transport here acts as one of net/http's cases.
func TestUpstreamBodyDoneWith(t *testing.T) {
	refused := errors.New("connection reset")
	wrote := func(r *http.Request, err error) {
		httptrace.ContextClientTrace(r.Context()).WroteRequest(httptrace.WroteRequestInfo{Err: err})
	}
	ok := answerWith(200, "application/json", `{"ok":1}`)
	release := make(chan struct{})
	written := make(chan struct{})
	for _, tc := range []struct {
		name   string
		rt     roundTripFunc
		stream bool
		body   string
		want   bool
		late   bool // the write ends after RoundTrip returned: want holds once it has
	}{
		{"written whole", func(r *http.Request) (*http.Response, error) {
			_, _ = io.ReadAll(r.Body)
			wrote(r, nil)
			return ok(r)
		}, false, `{"model":"m"}`, true, false},
		{"written in part", func(r *http.Request) (*http.Response, error) {
			_, _ = io.ReadFull(r.Body, make([]byte, 3))
			wrote(r, refused)
			return nil, refused
		}, false, `{"model":"m"}`, false, false},
		{"write never reported", func(r *http.Request) (*http.Response, error) {
			_, _ = io.ReadAll(r.Body)
			return ok(r)
		}, false, `{"model":"m"}`, false, false},
		{"no write at all", func(*http.Request) (*http.Response, error) { return nil, refused }, false, `{"model":"m"}`, false, false},
		{"rewound for a retry", func(r *http.Request) (*http.Response, error) {
			_, _ = io.ReadAll(r.Body)
			wrote(r, refused)
			again, _ := r.GetBody()
			_, _ = io.ReadAll(again)
			wrote(r, nil)
			return ok(r)
		}, false, `{"model":"m"}`, false, false},
		{"retried before reading", func(r *http.Request) (*http.Response, error) {
			// A write that failed on the headers leaves the Body unread; the retry reads it.
			wrote(r, refused)
			_, _ = io.ReadAll(r.Body)
			wrote(r, nil)
			return ok(r)
		}, false, `{"model":"m"}`, true, false},
		{"answered before the write ended", func(r *http.Request) (*http.Response, error) {
			go func() {
				<-release
				_, _ = io.ReadAll(r.Body)
				wrote(r, nil)
				close(written)
			}()
			return ok(r)
		}, false, `{"model":"m"}`, true, true},
		{"stream whose body is dropped", func(r *http.Request) (*http.Response, error) {
			_, _ = io.ReadAll(r.Body)
			wrote(r, nil)
			return answerWith(200, "text/event-stream", "data: {}\n\n")(r)
		}, true, `{"model":"m"}`, true, false},
		{"no body", func(r *http.Request) (*http.Response, error) {
			if httptrace.ContextClientTrace(r.Context()) != nil {
				t.Error("a request without a body carries a trace")
			}
			return ok(r)
		}, false, "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, _ := url.Parse("http://a.invalid/v1")
			uc := &upstreamClient{Client: &router.Client{Name: "a"}, baseURL: base, transport: &sharedTransport{RoundTripper: tc.rt}, state: new(router.ClientState)}
			g := &generation{headerTimeout: time.Minute, firstByteTimout: time.Minute, maxBuffered: 1 << 20}
			r, _ := http.NewRequest(http.MethodPost, "http://gw/v1/chat/completions", nil)
			req := &apiRequest{r: r, ep: epChat, upPath: "/chat/completions", stream: tc.stream, buf: &requestBuf{}}
			out := attempt(context.Background(), newStopper(), g, req, &attemptSpec{uc: uc, body: []byte(tc.body)}, zap.NewNop())
			defer out.release()
			if out.kind == outStream {
				out.resp.Body.Close()
			}
			if tc.late {
				if out.reqBody.doneWith() {
					t.Fatal("done with the body while the transport still writes it")
				}
				close(release)
				<-written
			}
			if got := out.reqBody.doneWith(); got != tc.want {
				t.Errorf("done with the body: %v, want %v", got, tc.want)
			}
			if tc.stream && out.reqBody.first.Len() != 0 {
				t.Error("a stream's request Body still holds the prompt once written")
			}
		})
	}
}

// TestStreamBodyKeptForRetryBeforeRead: a stream whose prompt the audit log does not keep has
// its request Body emptied once written, but a write reported failed before it read the Body
// leaves it whole: transports resend a Body they never read as it is, without GetBody, and that
// resend must carry the whole prompt. (net/http closes the Body in every write, so it rewinds
// instead; the hook does not rely on that.)
func TestStreamBodyKeptForRetryBeforeRead(t *testing.T) {
	const prompt = `{"model":"m","stream":true,"messages":[]}`
	var retried []byte
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		trace := httptrace.ContextClientTrace(r.Context())
		trace.WroteRequest(httptrace.WroteRequestInfo{Err: errors.New("broken pipe")})
		retried, _ = io.ReadAll(r.Body)
		trace.WroteRequest(httptrace.WroteRequestInfo{})
		return answerWith(200, "text/event-stream", "data: {}\n\n")(r)
	})
	base, _ := url.Parse("http://a.invalid/v1")
	uc := &upstreamClient{Client: &router.Client{Name: "a"}, baseURL: base, transport: &sharedTransport{RoundTripper: rt}, state: new(router.ClientState)}
	g := &generation{headerTimeout: time.Minute, firstByteTimout: time.Minute, maxBuffered: 1 << 20}
	r, _ := http.NewRequest(http.MethodPost, "http://gw/v1/chat/completions", nil)
	req := &apiRequest{r: r, ep: epChat, upPath: "/chat/completions", stream: true}
	out := attempt(context.Background(), newStopper(), g, req, &attemptSpec{uc: uc, body: []byte(prompt)}, zap.NewNop())
	defer out.release()
	if out.kind != outStream {
		t.Fatalf("outcome %v, want a stream", out.kind)
	}
	out.resp.Body.Close()
	if string(retried) != prompt {
		t.Errorf("the retry read %q, want the whole prompt %q", retried, prompt)
	}
	if out.reqBody.first.Len() != 0 || out.reqBody.first.Size() != 0 {
		t.Error("the stream's request Body still holds the prompt once the retry wrote it")
	}
}

// TestReleaseBody: a call gives its pooled buffer back only when nothing reads it any more, drops
// it for good when something may keep it, and waits while a transport may still read it.
func TestReleaseBody(t *testing.T) {
	done, writing := &upstreamBody{sent: true}, &upstreamBody{}
	rewound := &upstreamBody{sent: true, rewound: true}
	const (
		put    = iota // back to the pool: the call lets go of the body
		never         // never reused: the call keeps its body for whoever holds it
		notYet        // kept for a later try
	)
	for _, tc := range []struct {
		name   string
		passed bool
		stored bool // the audit log stores bodies
		bodies int
		last   *upstreamBody
		want   int
	}{
		{"no upstream request", false, false, 0, nil, put},
		{"written", false, false, 1, done, put},
		{"still being written", false, false, 1, writing, notYet},
		{"rewound", false, false, 1, rewound, notYet},
		{"two upstream requests", false, false, 2, done, never},
		{"passed on", true, false, 0, nil, never},
		{"audited, bodies stored", false, true, 1, done, never},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rb := &requestBuf{b: make([]byte, 8)}
			c := &call{passed: tc.passed, upstreamBodies: tc.bodies, upstreamBody: tc.last}
			c.req.buf, c.req.body, c.req.bodies = rb, rb.b[:4], tc.stored
			c.res.RequestBody = c.req.body
			c.releaseBody()
			got := notYet
			switch {
			case c.req.buf == nil && c.req.body == nil && c.res.RequestBody == nil:
				got = put
			case c.req.buf == nil && c.req.body != nil:
				got = never
			}
			if got != tc.want {
				t.Errorf("outcome %d, want %d", got, tc.want)
			}
		})
	}
}
