package llmgateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/llmgw/caddy-llm-gateway/router"
)

// TestStreamPanicEndsWithErrorEvent checks that a panic in the gateway's own code in the middle of
// a stream ends the stream with the §6 error event of the endpoint's protocol, not a bare cut, and
// that recoverPanic still logs it and records the call as an error. No input reaches such a
// panic, so the caller's writer provokes one on its second write of events, a stand-in for any
// bug on the relay path.
func TestStreamPanicEndsWithErrorEvent(t *testing.T) {
	for _, tc := range []struct {
		path string
		ep   endpoint
		want string // in the error event
	}{
		{"/v1/chat/completions", epChat, `data: {"error":{"code":"upstream_error","message":"internal error in the gateway"},"choices":[{"index":0,"delta":{},"finish_reason":"error"}]}`},
		{"/v1/messages", epMessages, "event: error\ndata: {\"error\":{\"message\":\"internal error in the gateway\",\"type\":\"api_error\"},\"type\":\"error\"}"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			core, logs := observer.New(zap.ErrorLevel)
			w := &panickyWriter{ResponseRecorder: httptest.NewRecorder(), panicAt: 2}
			r := httptest.NewRequest(http.MethodPost, tc.path, nil)
			c := &call{h: &Handler{logger: zap.New(core)}, w: w, req: apiRequest{r: r, ep: tc.ep, stream: true, start: time.Now()}}
			c.res.Status, c.res.Stream = http.StatusOK, true

			// One event per upstream read: every read is followed by one write to the caller.
			events := []string{
				"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"one\"}}]}\n\n",
				"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"two\"}}]}\n\n",
				"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"three\"}}]}\n\n",
				"data: [DONE]\n\n",
			}
			resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/event-stream"}},
				Body: io.NopCloser(&eventReader{events: events})}
			uc := &upstreamClient{Client: &router.Client{Name: "a"}}
			func() {
				defer c.recoverPanic()
				copyStream(delivery{w: w, stopCtx: context.Background()}, &generation{}, &c.req, &attemptSpec{uc: uc}, resp, nil)
				t.Fatal("the writer did not panic")
			}()

			got := w.Body.String()
			// The event whose write panicked was not written: it leaves with the error event.
			if !strings.Contains(got, "one") || !strings.Contains(got, "two") || strings.Contains(got, "three") {
				t.Errorf("caller got %q: want the events before the panic and none after it", got)
			}
			if !strings.HasSuffix(got, tc.want+"\n\n") {
				t.Errorf("caller got %q: want it to end with the error event %q", got, tc.want)
			}
			if strings.Contains(got, "[DONE]") {
				t.Errorf("caller got %q: [DONE] after an error", got)
			}
			if c.res.Err != msgInternalError {
				t.Errorf("recorded error %q, want %q", c.res.Err, msgInternalError)
			}
			if n := logs.FilterMessageSnippet("panic serving an API call").Len(); n != 1 {
				t.Errorf("%d panic log entries, want 1", n)
			}
		})
	}
}

// panickyWriter panics on its panicAt-th Write (counting from 1), and writes otherwise.
type panickyWriter struct {
	*httptest.ResponseRecorder
	writes, panicAt int
}

func (w *panickyWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.writes == w.panicAt {
		panic("stand-in for a bug on the relay path")
	}
	return w.ResponseRecorder.Write(p)
}

// eventReader returns one of events per Read.
type eventReader struct{ events []string }

func (r *eventReader) Read(p []byte) (int, error) {
	if len(r.events) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.events[0])
	r.events[0] = r.events[0][n:]
	if r.events[0] == "" {
		r.events = r.events[1:]
	}
	return n, nil
}
