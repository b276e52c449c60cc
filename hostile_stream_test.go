package llmgateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
	"github.com/llmgw/caddy-llm-gateway/sse"
)

// These tests play upstreams that break the SSE contract on purpose (SPEC §6): an event that
// never ends, events after [DONE], a stream that stops sending. Each must end the caller's
// stream in bounded time and memory, in the shape SPEC §6 gives, with an audit row that says
// what happened.

// hostileStreamCase is one streaming endpoint: its request and how its cut ends.
type hostileStreamCase struct {
	name, path, body string
	checkError       func(*testing.T, sseEvent)
}

var hostileStreamCases = []hostileStreamCase{
	{"chat", "/v1/chat/completions", chatStreamBody("gpt-4o"), chatErrorChunk},
	{"responses", "/v1/responses", `{"model":"gpt-4o","input":"hi","stream":true}`, namedErrorEvent},
}

// auditedStream runs one streaming call through a gateway with the audit log on, then closes
// the audit writer and returns the caller's events and the call's audit row.
func auditedStream(t *testing.T, up *fakeupstream.Server, options string, tc hostileStreamCase) ([]sseEvent, auditRow) {
	t.Helper()
	dbPath := filepath.Join(t.TempDir(), "record.db")
	site := gatewaySite(options, clientBlock("alpha", up.URL(), "match keyword gpt"))
	gw := startGateway(t, auditGlobals(dbPath), site)
	status, _, body := gw.post(tc.path, "application/json", tc.body, "X-Request-Id", "hostile")
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	if len(body) > sse.DefaultMaxLineSize {
		// No answer here is that long unless an oversized event went through whole.
		t.Fatalf("the caller got %d bytes, over one event's limit of %d", len(body), sse.DefaultMaxLineSize)
	}
	evs := parseSSE(t, body)
	gw.reload("", site, false)
	awaitCallsEnded(t)
	rows := readAuditRows(t, dbPath)
	if len(rows) != 1 || rows[0].RequestID != "hostile" {
		t.Fatalf("audit rows %+v, want one for the call", rows)
	}
	return evs, rows[0]
}

// awaitUpstreamCut waits until the fake upstream noticed that the gateway stopped reading
// before its answer was complete.
func awaitUpstreamCut(t *testing.T, up *fakeupstream.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := up.WaitCancelled(ctx, 1); err != nil {
		t.Fatalf("the gateway did not let go of the upstream: %v", err)
	}
}

// TestHostileStreamLargeEvent: an upstream event of many data lines that never ends (64 MiB
// here; any size in production) is cut at the reader's limit of one line's size: the caller gets
// the error event, the audit row says why, and the gateway stops reading the upstream instead of
// buffering the event whole.
func TestHostileStreamLargeEvent(t *testing.T) {
	for _, tc := range hostileStreamCases {
		t.Run(tc.name, func(t *testing.T) {
			up := fake(t, "alpha")
			up.Update(func(s *fakeupstream.Settings) { s.LargeEvent = 16 * sse.DefaultMaxLineSize })
			evs, row := auditedStream(t, up, "", tc)
			if len(evs) == 0 {
				t.Fatal("empty stream")
			}
			last := evs[len(evs)-1]
			tc.checkError(t, last)
			if !strings.Contains(last.Data, "event too large") {
				t.Errorf("error event %q does not name the oversized event", last.Data)
			}
			for _, ev := range evs {
				if ev.Data == "[DONE]" {
					t.Errorf("a cut stream ends with [DONE]")
				}
				if len(ev.Data) > sse.DefaultMaxLineSize {
					t.Errorf("an event of %d bytes was forwarded, over the %d-byte limit", len(ev.Data), sse.DefaultMaxLineSize)
				}
			}
			awaitUpstreamCut(t, up)
			if row.Status != 200 || !row.Stream || !strings.Contains(row.Error, "event too large") {
				t.Errorf("audit row: Status %d Stream %v Error %q, want a 200 stream cut for its event size", row.Status, row.Stream, row.Error)
			}
		})
	}
}

// TestStreamLargeEventUnderLimit: a multi-line event below the limit is relayed whole, still one
// event with the same data.
func TestStreamLargeEventUnderLimit(t *testing.T) {
	up := fake(t, "alpha")
	up.Update(func(s *fakeupstream.Settings) { s.LargeEvent = 512 << 10 })
	gw := startGateway(t, "", gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt")))
	status, _, body := gw.post("/v1/chat/completions", "application/json", chatStreamBody("gpt-4o"))
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	evs := parseSSE(t, body)
	if len(evs) != 4 || evs[3].Data != "[DONE]" {
		t.Fatalf("got %d events, want 3 chunks and [DONE]", len(evs))
	}
	first := evs[0].Data
	if len(first) < 500<<10 || !json.Valid([]byte(first)) || !strings.Contains(first, `"role":"assistant"`) {
		t.Errorf("first event of %d bytes (%.100q…) is not the padded first chunk", len(first), first)
	}
}

// TestHostileStreamAfterDone: nothing follows [DONE], whatever the upstream sends after it, and an
// upstream that keeps the response open after [DONE] does not keep the caller's open.
func TestHostileStreamAfterDone(t *testing.T) {
	for _, linger := range []bool{false, true} {
		name := "ends"
		if linger {
			name = "lingers"
		}
		t.Run(name, func(t *testing.T) {
			up := fake(t, "alpha")
			up.Update(func(s *fakeupstream.Settings) {
				s.AfterDone = 3
				s.Linger = linger
			})
			evs, row := auditedStream(t, up, "", hostileStreamCases[0])
			if len(evs) == 0 || evs[len(evs)-1].Data != "[DONE]" {
				t.Fatalf("stream does not end with [DONE]: %+v", evs)
			}
			for i, ev := range evs[:len(evs)-1] {
				if ev.Data == "[DONE]" || strings.Contains(ev.Data, "after [DONE]") {
					t.Errorf("event %d of %d forwarded after [DONE]: %q", i, len(evs), ev.Data)
				}
			}
			if linger {
				awaitUpstreamCut(t, up)
			}
			if row.Status != 200 || row.Error != "" || row.Completion != 3 {
				t.Errorf("audit row: Status %d Error %q completion tokens %d, want a complete 200 with the upstream's usage", row.Status, row.Error, row.Completion)
			}
		})
	}
}

// TestHostileStreamIdleTimeout: an upstream that stops sending mid-stream is cut after
// stream_idle_timeout with the error event, and the audit row records the timeout.
func TestHostileStreamIdleTimeout(t *testing.T) {
	for _, tc := range hostileStreamCases {
		t.Run(tc.name, func(t *testing.T) {
			up := fake(t, "alpha")
			up.Update(func(s *fakeupstream.Settings) {
				s.Chunks = 3
				s.ChunkDelay = time.Hour // the first chunk, then silence
			})
			evs, row := auditedStream(t, up, "stream_idle_timeout 300ms", tc)
			if len(evs) < 2 {
				t.Fatalf("got %+v, want the first chunk and the error", evs)
			}
			last := evs[len(evs)-1]
			tc.checkError(t, last)
			if !strings.Contains(last.Data, "stream_idle_timeout") {
				t.Errorf("error event %q does not name the idle timeout", last.Data)
			}
			if !strings.Contains(evs[len(evs)-2].Data, "hell") {
				t.Errorf("the chunk before the error is %q, want the first content chunk", evs[len(evs)-2].Data)
			}
			awaitUpstreamCut(t, up)
			if row.Status != 200 || !row.Stream || !strings.Contains(row.Error, "stream_idle_timeout") {
				t.Errorf("audit row: Status %d Stream %v Error %q, want a 200 stream cut by the idle timeout", row.Status, row.Stream, row.Error)
			}
		})
	}
}

// TestStreamAfterDoneKeepsUpstreamConnection: stopping at [DONE] must not cost a connection per
// stream. An upstream that ends its response soon after [DONE] is read to its end, so the
// transport keeps the connection for the next call. The upstream here ends its response only
// once the caller has received [DONE], so the end never arrives together with it.
func TestStreamAfterDoneKeepsUpstreamConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	release := make(chan struct{}, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}`+"\n\n")
			io.WriteString(w, "data: [DONE]\n\n")
			http.NewResponseController(w).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	gw := startGateway(t, "", gatewaySite("", clientBlock("alpha", "http://"+ln.Addr().String()+"/v1", "match keyword gpt")))
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gw.URL+"/v1/chat/completions", strings.NewReader(chatStreamBody("gpt-4o")))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		rd := sse.NewReader(resp.Body)
		for {
			ev, err := rd.Next()
			if err != nil {
				t.Fatalf("stream %d ended before [DONE]: %v", i, err)
			}
			if sse.IsDone(ev.Data) {
				break
			}
		}
		release <- struct{}{}
		if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
			t.Fatalf("stream %d: after [DONE] got %q, %v; want the end of the stream", i, rest, err)
		}
		resp.Body.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("3 streams in a row opened %d upstream connections, want 1", n)
	}
}
