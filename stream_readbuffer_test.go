package llmgateway_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3/option"
)

// TestStreamOverReadBuffer streams through the gateway's default transport (a 2 KiB read buffer,
// and the SSE reader waiting for each next event without a buffer) an answer whose headers and
// first event are each several times that size, and whose events then come one at a time with
// pauses: the caller gets every header and every event intact, in order.
func TestStreamOverReadBuffer(t *testing.T) {
	big := strings.Repeat("y", 10<<10)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		for i := range 60 {
			w.Header().Set(fmt.Sprintf("X-Upstream-%02d", i), strings.Repeat("h", 100))
		}
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		chunk := func(content string) string {
			return `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"` + content + `"},"finish_reason":null}]}` + "\n\n"
		}
		io.WriteString(w, chunk(big))
		rc.Flush()
		for i := range 5 {
			time.Sleep(20 * time.Millisecond)
			io.WriteString(w, chunk(fmt.Sprintf("-%d", i)))
			rc.Flush()
		}
		io.WriteString(w, "data: [DONE]\n\n")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	gw := startGateway(t, "", gatewaySite("", clientBlock("big", "http://"+ln.Addr().String()+"/v1", "match keyword gpt")))
	client := gw.client()
	var resp *http.Response
	s := client.Chat.Completions.NewStreaming(context.Background(), chatParams("gpt-4o"), option.WithResponseInto(&resp))
	defer s.Close()
	var content strings.Builder
	for s.Next() {
		if c := s.Current(); len(c.Choices) > 0 {
			content.WriteString(c.Choices[0].Delta.Content)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if want := big + "-0-1-2-3-4"; content.String() != want {
		t.Errorf("content: %d bytes ending %q, want %d bytes ending %q", content.Len(), tail(content.String()), len(want), tail(want))
	}
	for i := range 60 {
		if got := resp.Header.Get(fmt.Sprintf("X-Upstream-%02d", i)); got != strings.Repeat("h", 100) {
			t.Fatalf("header X-Upstream-%02d = %q", i, got)
		}
	}
}

func tail(s string) string { return s[max(0, len(s)-12):] }
