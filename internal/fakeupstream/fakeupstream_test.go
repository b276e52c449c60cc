package fakeupstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-json"
	"go.uber.org/goleak"

	"github.com/llmgw/caddy-llm-gateway/sse"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start listens on a fresh port and returns the server and a client of its own.
func start(t *testing.T, name string) (*Server, *http.Client) {
	t.Helper()
	s, err := Listen(name, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s, &http.Client{Transport: tr}
}

func do(t *testing.T, c *http.Client, method, url, contentType, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// field walks a decoded JSON value along keys (strings) and indexes (ints).
func field(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("at %q: not an object: %v", k, v)
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				t.Fatalf("at [%d]: not an array that long: %v", k, v)
			}
			v = a[k]
		}
	}
	return v
}

func decode(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("invalid JSON %q: %v", b, err)
	}
	return v
}

// check is a JSON path and the value expected there.
type check struct {
	path []any
	want any
}

func TestJSONEndpoints(t *testing.T) {
	s, c := start(t, "b1")
	s.Set(Settings{Reasoning: "mull", Usage: Usage{PromptTokens: 5}})
	tests := []struct {
		name, method, path, body string
		checks                   []check
	}{
		{"chat", "POST", "/chat/completions", `{"model":"m1","messages":[{"role":"user","content":"hi"}]}`, []check{
			{[]any{"object"}, "chat.completion"},
			{[]any{"model"}, "m1"},
			{[]any{"choices", 0, "message", "content"}, "hello from b1"},
			{[]any{"choices", 0, "message", "reasoning_content"}, "mull"},
			{[]any{"choices", 0, "finish_reason"}, "stop"},
			{[]any{"usage", "prompt_tokens"}, 5.0},
			{[]any{"usage", "completion_tokens"}, 7.0},
			{[]any{"usage", "total_tokens"}, 12.0},
		}},
		{"completions", "POST", "/completions", `{"model":"m\"2","prompt":"x"}`, []check{
			{[]any{"object"}, "text_completion"},
			{[]any{"model"}, `m"2`},
			{[]any{"choices", 0, "text"}, "hello from b1"},
			{[]any{"usage", "total_tokens"}, 12.0},
		}},
		{"embeddings one", "POST", "/embeddings", `{"model":"e","input":"a"}`, []check{
			{[]any{"object"}, "list"},
			{[]any{"data", 0, "object"}, "embedding"},
			{[]any{"usage", "prompt_tokens"}, 5.0},
		}},
		{"embeddings batch", "POST", "/embeddings", `{"model":"e","input":["a","b","c"]}`, []check{
			{[]any{"data", 2, "index"}, 2.0},
		}},
		{"responses", "POST", "/responses", `{"model":"r","input":"hi"}`, []check{
			{[]any{"object"}, "response"},
			{[]any{"status"}, "completed"},
			{[]any{"model"}, "r"},
			{[]any{"output", 0, "content", 0, "text"}, "hello from b1"},
			{[]any{"usage", "input_tokens"}, 5.0},
			{[]any{"usage", "output_tokens"}, 7.0},
		}},
		{"messages", "POST", "/messages", `{"model":"claude","max_tokens":5,"messages":[]}`, []check{
			{[]any{"type"}, "message"},
			{[]any{"model"}, "claude"},
			{[]any{"content", 0, "text"}, "hello from b1"},
			{[]any{"stop_reason"}, "end_turn"},
			{[]any{"usage", "input_tokens"}, 5.0},
		}},
		{"rerank", "POST", "/rerank", `{"model":"rr","query":"q","documents":["a","b"]}`, []check{
			{[]any{"model"}, "rr"},
			{[]any{"results", 1, "index"}, 1.0},
			{[]any{"results", 0, "relevance_score"}, 0.9},
		}},
		{"echo", "POST", "/images/generations", `{"model":"img","prompt":"cat"}`, []check{
			{[]any{"object"}, "echo"},
			{[]any{"backend"}, "b1"},
			{[]any{"path"}, "/v1/images/generations"},
			{[]any{"model"}, "img"},
		}},
		{"models", "GET", "/models", "", []check{
			{[]any{"object"}, "list"},
			{[]any{"data", 0, "id"}, "b1-model"},
			{[]any{"data", 0, "owned_by"}, "b1"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := do(t, c, tt.method, s.URL()+tt.path, "application/json", tt.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if got := resp.Header.Get("X-Fake-Upstream"); got != "b1" {
				t.Errorf("X-Fake-Upstream %q", got)
			}
			v := decode(t, b)
			for _, ck := range tt.checks {
				if got := field(t, v, ck.path...); got != ck.want {
					t.Errorf("%v = %#v, want %#v", ck.path, got, ck.want)
				}
			}
		})
	}
}

// event is one SSE event.
type event struct{ name, data string }

func readEvents(t *testing.T, r io.Reader) ([]event, error) {
	t.Helper()
	var events []event
	var cur event
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			events = append(events, cur)
			cur = event{}
		case strings.HasPrefix(line, "event: "):
			cur.name = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[len("data: "):]
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	return events, sc.Err()
}

func stream(t *testing.T, c *http.Client, url, body string) []event {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events, err := readEvents(t, resp.Body)
	if err != nil {
		t.Fatalf("reading stream: %v", err)
	}
	return events
}

func TestChatStream(t *testing.T) {
	tests := []struct {
		name      string
		set       Settings
		body      string
		content   string // concatenated delta.content
		reasoning string // concatenated delta.reasoning_content
		chunks    int    // chunks with choices
		usage     float64
		ping      bool
		done      bool
	}{
		{name: "default", body: `{"model":"m","stream":true}`,
			content: "hello from s", chunks: 3, done: true},
		{name: "include usage", body: `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
			content: "hello from s", chunks: 3, usage: 3, done: true},
		{name: "settings", set: Settings{Chunks: 5, Content: "ab\"c", Usage: Usage{CompletionTokens: 40}, Pings: true, NoDone: true},
			body:    `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
			content: "ab\"c", chunks: 5, usage: 40, ping: true},
		{name: "reasoning", set: Settings{Reasoning: "thought", Chunks: 2}, body: `{"model":"m","stream":true}`,
			content: "hello from s", reasoning: "thought", chunks: 4, done: true},
		{name: "think tags", set: Settings{Reasoning: "thought", ThinkTags: true}, body: `{"model":"m","stream":true}`,
			content: "<think>thought</think>hello from s", chunks: 3, done: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := start(t, "s")
			s.Set(tt.set)
			events := stream(t, c, s.URL()+"/chat/completions", tt.body)
			if tt.ping {
				if events[0] != (event{"ping", `{"type":"ping"}`}) {
					t.Fatalf("first event %+v, want a ping", events[0])
				}
				events = events[1:]
			}
			if tt.done {
				if events[len(events)-1].data != "[DONE]" {
					t.Fatalf("last event %+v, want [DONE]", events[len(events)-1])
				}
				events = events[:len(events)-1]
			}
			if tt.usage > 0 {
				u := decode(t, []byte(events[len(events)-1].data))
				if n := len(field(t, u, "choices").([]any)); n != 0 {
					t.Errorf("usage chunk has %d choices", n)
				}
				if got := field(t, u, "usage", "completion_tokens"); got != tt.usage {
					t.Errorf("completion_tokens %v, want %v", got, tt.usage)
				}
				if got := field(t, u, "usage", "prompt_tokens"); got != float64(DefaultPromptTokens) {
					t.Errorf("prompt_tokens %v", got)
				}
				events = events[:len(events)-1]
			}
			if len(events) != tt.chunks {
				t.Fatalf("%d chunks, want %d: %+v", len(events), tt.chunks, events)
			}
			var content, reasoning strings.Builder
			for i, e := range events {
				v := decode(t, []byte(e.data))
				if field(t, v, "object") != "chat.completion.chunk" || field(t, v, "model") != "m" {
					t.Errorf("chunk %d: %s", i, e.data)
				}
				if role := field(t, v, "choices", 0, "delta", "role"); (i == 0) != (role == "assistant") {
					t.Errorf("chunk %d: role %v", i, role)
				}
				if fr := field(t, v, "choices", 0, "finish_reason"); (i == len(events)-1) != (fr == "stop") {
					t.Errorf("chunk %d: finish_reason %v", i, fr)
				}
				if _, has := v.(map[string]any)["usage"]; has != (tt.usage > 0) {
					t.Errorf("chunk %d: usage key present %v", i, has)
				}
				if s, ok := field(t, v, "choices", 0, "delta", "content").(string); ok {
					content.WriteString(s)
				}
				if s, ok := field(t, v, "choices", 0, "delta", "reasoning_content").(string); ok {
					reasoning.WriteString(s)
				}
			}
			if content.String() != tt.content || reasoning.String() != tt.reasoning {
				t.Errorf("content %q reasoning %q, want %q %q", content.String(), reasoning.String(), tt.content, tt.reasoning)
			}
		})
	}
}

func TestChatThinking(t *testing.T) {
	tests := []struct {
		name      string
		set       Settings
		content   string
		reasoning any
	}{
		{"none", Settings{}, "hello from s", nil},
		{"field", Settings{Reasoning: "r\n1"}, "hello from s", "r\n1"},
		{"tags", Settings{Reasoning: "r", ThinkTags: true}, "<think>r</think>hello from s", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := start(t, "s")
			s.Set(tt.set)
			_, b := do(t, c, "POST", s.URL()+"/chat/completions", "application/json", `{"model":"m"}`)
			msg := field(t, decode(t, b), "choices", 0, "message")
			if got := field(t, msg, "content"); got != tt.content {
				t.Errorf("content %q, want %q", got, tt.content)
			}
			if got := field(t, msg, "reasoning_content"); got != tt.reasoning {
				t.Errorf("reasoning_content %v, want %v", got, tt.reasoning)
			}
		})
	}
}

// TestEchoWritesStringsAsTheGateway checks that the fake escapes strings as the gateway does
// (internal/jsonspan): a path that is not UTF-8 comes back as \ufffd, never as a raw byte, and
// U+2028 escaped.
func TestEchoWritesStringsAsTheGateway(t *testing.T) {
	s, c := start(t, "b1")
	resp, b := do(t, c, "POST", s.URL()+"/images/%FF%E2%80%A8", "application/json", `{"model":"img"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if want := `"path":"/v1/images/\ufffd\u2028"`; !bytes.Contains(b, []byte(want)) {
		t.Errorf("body %q lacks %s", b, want)
	}
}

func TestThinkTagsStraddleChunks(t *testing.T) {
	got := thinkPieces("<think>R</think>C", 1, 3)
	want := []string{"<thi", "nk>R</t", "hink>C"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("thinkPieces = %q, want %q", got, want)
	}
}

func TestSplitText(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want []string
	}{
		{"abcdef", 3, []string{"ab", "cd", "ef"}},
		{"héllo", 2, []string{"hé", "llo"}},
		{"ab", 4, []string{"", "a", "", "b"}},
		{"abc", 0, []string{"abc"}},
	}
	for _, tt := range tests {
		got := splitText(tt.s, tt.n)
		if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("splitText(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

func TestCompletionsStream(t *testing.T) {
	s, c := start(t, "s")
	events := stream(t, c, s.URL()+"/completions", `{"model":"m","prompt":"p","stream":true,"stream_options":{"include_usage":true}}`)
	if len(events) != 5 || events[4].data != "[DONE]" {
		t.Fatalf("events %+v, want 3 chunks, usage, [DONE]", events)
	}
	var text strings.Builder
	for _, e := range events[:3] {
		text.WriteString(field(t, decode(t, []byte(e.data)), "choices", 0, "text").(string))
	}
	if text.String() != "hello from s" {
		t.Errorf("text %q", text.String())
	}
	if got := field(t, decode(t, []byte(events[3].data)), "usage", "total_tokens"); got != 14.0 {
		t.Errorf("total_tokens %v, want 14", got)
	}
}

func TestNamedEventStreams(t *testing.T) {
	tests := []struct {
		path, body string
		names      []string
		deltaPath  []any // where a delta event carries its text
	}{
		{"/responses", `{"model":"m","input":"x","stream":true}`,
			[]string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
				"response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
				"response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"},
			[]any{"delta"}},
		{"/messages", `{"model":"m","max_tokens":9,"stream":true}`,
			[]string{"message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop", "message_delta", "message_stop"},
			[]any{"delta", "text"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			s, c := start(t, "s")
			events := stream(t, c, s.URL()+tt.path, tt.body)
			var names []string
			var text strings.Builder
			for _, e := range events {
				names = append(names, e.name)
				v := decode(t, []byte(e.data))
				if field(t, v, "type") != e.name {
					t.Errorf("event %s has type %v", e.name, field(t, v, "type"))
				}
				if strings.HasSuffix(e.name, "delta") && e.name != "message_delta" {
					text.WriteString(field(t, v, tt.deltaPath...).(string))
				}
			}
			if strings.Join(names, ",") != strings.Join(tt.names, ",") {
				t.Errorf("events %v, want %v", names, tt.names)
			}
			if text.String() != "hello from s" {
				t.Errorf("streamed text %q", text.String())
			}
		})
	}
}

func multipartBody(t *testing.T, fields ...[2]string) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		var err error
		if f[0] == "file" {
			var w io.Writer
			if w, err = mw.CreateFormFile("file", "a.wav"); err == nil {
				_, err = w.Write([]byte(f[1]))
			}
		} else {
			err = mw.WriteField(f[0], f[1])
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.String()
}

func TestAudio(t *testing.T) {
	s, c := start(t, "a")
	tests := []struct {
		name   string
		path   string
		fields [][2]string
		status int
	}{
		{"model after file", "/audio/transcriptions", [][2]string{{"file", "RIFF...."}, {"model", "whisper-1"}}, 200},
		{"translation", "/audio/translations", [][2]string{{"model", "whisper-1"}, {"file", "RIFF"}}, 200},
		{"no model", "/audio/transcriptions", [][2]string{{"file", "RIFF"}}, 400},
		{"no file", "/audio/transcriptions", [][2]string{{"model", "whisper-1"}}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct, body := multipartBody(t, tt.fields...)
			resp, b := do(t, c, "POST", s.URL()+tt.path, ct, body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.status == 200 {
				if got := field(t, decode(t, b), "text"); got != "hello from a" {
					t.Errorf("text %v", got)
				}
				if last := s.LastRequest(); last.Path != "/v1"+tt.path || string(last.Body) != body {
					t.Errorf("last request %s with %d body bytes", last.Path, len(last.Body))
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name          string
		set           Settings
		method, path  string
		body          string
		status        int
		errorType     string
		message       string // substring of error.message
		anthropic     bool
		header, value string
	}{
		{name: "not JSON", method: "POST", path: "/v1/chat/completions", body: "{oops", status: 400, errorType: "invalid_request_error", message: "invalid JSON"},
		{name: "no model", method: "POST", path: "/v1/chat/completions", body: `{"messages":[]}`, status: 400, errorType: "invalid_request_error", message: "model"},
		{name: "wrong method", method: "GET", path: "/v1/chat/completions", status: 405, errorType: "invalid_request_error"},
		{name: "unknown GET", method: "GET", path: "/v1/nothing", status: 404, errorType: "invalid_request_error"},
		{name: "outside v1", method: "POST", path: "/chat/completions", body: `{"model":"m"}`, status: 404, errorType: "invalid_request_error"},
		{name: "status", set: Settings{Status: 429, Headers: map[string]string{"retry-after": "7"}},
			method: "POST", path: "/v1/chat/completions", body: `{"model":"m","stream":true}`,
			status: 429, errorType: "upstream_error", message: "fake e status 429", header: "Retry-After", value: "7"},
		{name: "status on models", set: Settings{Status: 503}, method: "GET", path: "/v1/models",
			status: 503, errorType: "upstream_error", message: "fake e status 503"},
		{name: "anthropic shape", set: Settings{Status: 500}, method: "POST", path: "/v1/messages", body: `{"model":"m"}`,
			status: 500, errorType: "upstream_error", message: "fake e status 500", anthropic: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := start(t, "e")
			s.Set(tt.set)
			resp, b := do(t, c, tt.method, "http://"+s.Addr()+tt.path, "application/json", tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
			}
			v := decode(t, b)
			if tt.anthropic && field(t, v, "type") != "error" {
				t.Errorf("not Anthropic-shaped: %s", b)
			}
			if got := field(t, v, "error", "type"); got != tt.errorType {
				t.Errorf("error.type %v, want %s", got, tt.errorType)
			}
			if msg, _ := field(t, v, "error", "message").(string); !strings.Contains(msg, tt.message) {
				t.Errorf("error.message %q lacks %q", msg, tt.message)
			}
			if tt.header != "" && resp.Header.Get(tt.header) != tt.value {
				t.Errorf("%s: %q, want %q", tt.header, resp.Header.Get(tt.header), tt.value)
			}
		})
	}
}

func TestBrokenUpstream(t *testing.T) {
	tests := []struct {
		name   string
		set    Settings
		chunks int // chunks the client receives before the error
	}{
		{"break after 2", Settings{Chunks: 5, BreakAfter: 2}, 2},
		{"break after last", Settings{Chunks: 3, BreakAfter: 3}, 3},
		{"hangup", Settings{Hangup: true}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := start(t, "x")
			s.Set(tt.set)
			resp, err := c.Post(s.URL()+"/chat/completions", "application/json",
				strings.NewReader(`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`))
			if tt.chunks < 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got status %d, want a connection error", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			events, err := readEvents(t, resp.Body)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("stream ended with %v, want unexpected EOF", err)
			}
			if len(events) != tt.chunks {
				t.Errorf("received %d events, want %d: %+v", len(events), tt.chunks, events)
			}
			if err := s.WaitIdle(t.Context()); err != nil {
				t.Fatal(err)
			}
			if n := s.Cancelled(); n != 0 {
				t.Errorf("a deliberate break counted as %d cancellations", n)
			}
		})
	}
}

func TestCancellation(t *testing.T) {
	s, c := start(t, "c")
	// A stream that stalls after its first chunk, and an answer that
	// stalls before its headers: the client gives up on both.
	s.Set(Settings{Chunks: 3, ChunkDelay: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL()+"/chat/completions", strings.NewReader(`{"model":"m","stream":true}`))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: {") {
		t.Fatalf("first chunk %q, %v", line, err)
	}
	if s.InFlight() != 1 || s.Cancelled() != 0 {
		t.Fatalf("in flight %d, cancelled %d before the cancel", s.InFlight(), s.Cancelled())
	}
	cancel()
	resp.Body.Close()
	wait, stop := context.WithTimeout(t.Context(), 10*time.Second)
	defer stop()
	if err := s.WaitCancelled(wait, 1); err != nil {
		t.Fatal(err)
	}

	s.Set(Settings{Delay: time.Hour})
	ctx, cancel = context.WithCancel(t.Context())
	req, _ = http.NewRequestWithContext(ctx, "POST", s.URL()+"/embeddings", strings.NewReader(`{"model":"m","input":"x"}`))
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	if err := s.waitUntil(wait, func() bool { return s.Count("/v1/embeddings") == 1 }, "request"); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client error %v, want context.Canceled", err)
	}
	if err := s.WaitCancelled(wait, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitIdle(wait); err != nil {
		t.Fatal(err)
	}

	// WaitCancelled reports a context that ends first.
	short, stop2 := context.WithTimeout(t.Context(), time.Millisecond)
	defer stop2()
	if err := s.WaitCancelled(short, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitCancelled past its deadline: %v", err)
	}
}

func TestCloseEndsStalledHandlers(t *testing.T) {
	s, err := Listen("z", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	s.Set(Settings{ChunkDelay: time.Hour})
	resp, err := (&http.Client{Transport: tr}).Post(s.URL()+"/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := s.InFlight(); n != 0 {
		t.Errorf("%d handlers still running after Close", n)
	}
	if n := s.Cancelled(); n != 0 {
		t.Errorf("Close counted %d client cancellations", n)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("stream ended cleanly although the server closed it mid-way")
	}
}

func TestControlEndpoints(t *testing.T) {
	s, c := start(t, "ctl")
	base := "http://" + s.Addr() + "/_fake/"

	resp, b := do(t, c, "POST", base+"settings", "application/json",
		`{"chunks":2,"chunk_delay":"1ms","content":"yo","models":["a","b"],"headers":{"x-request-id":"r1"}}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	want := Settings{Chunks: 2, ChunkDelay: time.Millisecond, Content: "yo", Models: []string{"a", "b"}, Headers: map[string]string{"x-request-id": "r1"}}
	if got := s.Settings(); !equalSettings(got, want) {
		t.Errorf("settings %+v, want %+v", got, want)
	}
	// Merging: an absent field keeps its value.
	if resp, b = do(t, c, "POST", base+"settings", "", `{"delay":"2s"}`); resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	want.Delay = 2 * time.Second
	if got := s.Settings(); !equalSettings(got, want) {
		t.Errorf("after merge %+v, want %+v", got, want)
	}
	if got := field(t, decode(t, b), "delay"); got != "2s" {
		t.Errorf("answer's delay %v, want \"2s\"", got)
	}
	for _, bad := range []string{`{"delay":"soon"}`, `{"chunks":"many"}`, `nope`} {
		if resp, b = do(t, c, "POST", base+"settings", "", bad); resp.StatusCode != 400 {
			t.Errorf("%s: status %d: %s", bad, resp.StatusCode, b)
		}
	}
	if got := s.Settings(); !equalSettings(got, want) {
		t.Errorf("a rejected body changed the settings: %+v", got)
	}
	if resp, _ = do(t, c, "DELETE", base+"settings", "", ""); resp.StatusCode != 200 || !equalSettings(s.Settings(), Settings{}) {
		t.Errorf("DELETE: status %d, settings %+v", resp.StatusCode, s.Settings())
	}

	// An explicit empty list is served as such, not replaced by the default.
	do(t, c, "POST", base+"settings", "", `{"models":[]}`)
	if _, b = do(t, c, "GET", s.URL()+"/models", "", ""); string(b) != `{"object":"list","data":[]}` {
		t.Errorf("models %s, want an empty list", b)
	}
	do(t, c, "POST", s.URL()+"/chat/completions", "application/json", `{"model":"m"}`)
	do(t, c, "POST", s.URL()+"/chat/completions", "application/json", `{"model":"m"}`)
	resp, b = do(t, c, "GET", base+"stats", "", "")
	var st Stats
	if err := json.Unmarshal(b, &st); err != nil || resp.StatusCode != 200 {
		t.Fatalf("stats %d %s: %v", resp.StatusCode, b, err)
	}
	if st.Name != "ctl" || st.Requests != 3 || st.Paths["/v1/chat/completions"] != 2 || st.Paths["/v1/models"] != 1 {
		t.Errorf("stats %+v", st)
	}
	if resp, _ = do(t, c, "GET", base+"nothing", "", ""); resp.StatusCode != 404 {
		t.Errorf("unknown control endpoint: status %d", resp.StatusCode)
	}
}

func equalSettings(a, b Settings) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func TestLastRequestIsACopy(t *testing.T) {
	s, c := start(t, "l")
	if s.LastRequest().Method != "" {
		t.Fatal("a last request before any request")
	}
	req, _ := http.NewRequest("POST", s.URL()+"/embeddings", strings.NewReader(`{"model":"m","input":"x"}`))
	req.Header.Set("Authorization", "Bearer k")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	last := s.LastRequest()
	if last.Method != "POST" || last.Path != "/v1/embeddings" || last.Header.Get("Authorization") != "Bearer k" || string(last.Body) != `{"model":"m","input":"x"}` {
		t.Fatalf("last request %+v", last)
	}
	last.Header.Set("Authorization", "changed")
	last.Body[0] = 'X'
	if again := s.LastRequest(); again.Header.Get("Authorization") != "Bearer k" || again.Body[0] != '{' {
		t.Error("LastRequest shares memory with the stored request")
	}
}

func TestSetCopiesCallerData(t *testing.T) {
	s := New("n")
	models := []string{"a"}
	s.Set(Settings{Models: models})
	models[0] = "changed"
	s.Update(func(set *Settings) { set.Chunks = 9 })
	if got := s.Settings(); got.Models[0] != "a" || got.Chunks != 9 {
		t.Errorf("settings %+v", got)
	}
	// New works as a plain handler.
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/models", nil))
	if got := field(t, decode(t, rec.Body.Bytes()), "data", 0, "id"); got != "a" {
		t.Errorf("models served %v", got)
	}
}

// discard is a minimal ResponseWriter, so the benchmark measures the fake.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Flush()                      {}

func BenchmarkServe(b *testing.B) {
	for _, bc := range []struct{ name, body string }{
		{"chat", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}`},
		{"stream64", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := New("bench")
			s.Set(Settings{Chunks: 64})
			w := &discard{h: make(http.Header)}
			body := []byte(bc.body)
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(body))
				s.ServeHTTP(w, r)
			}
		})
	}
}

func TestLargeEvent(t *testing.T) {
	for _, tc := range []struct {
		path, body string
		first      int // the index of the first chunk (a delta)
	}{
		{"/chat/completions", `{"model":"m","stream":true}`, 0},
		{"/completions", `{"model":"m","prompt":"p","stream":true}`, 0},
		{"/responses", `{"model":"m","input":"p","stream":true}`, 4}, // after created, in_progress, output_item.added, content_part.added
	} {
		t.Run(tc.path, func(t *testing.T) {
			const size = 100_000
			s, c := start(t, "s")
			normal := readSSE(t, c, s.URL()+tc.path, tc.body)
			s.Set(Settings{LargeEvent: size})
			padded := readSSE(t, c, s.URL()+tc.path, tc.body)
			if len(padded) != len(normal) {
				t.Fatalf("%d events with padding, %d without", len(padded), len(normal))
			}
			first := tc.first
			p, n := padded[first], normal[first]
			// The size counts the padding lines' "data: " prefixes, which the data does not hold.
			if !p.Multiline || len(p.Data) < size*(padLine-len("data: "))/padLine || p.Name != n.Name {
				t.Fatalf("padded event %d: multi-line %v, %d bytes, name %q; want about %d bytes named %q",
					first, p.Multiline, len(p.Data), p.Name, size, n.Name)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, []byte(p.Data)); err != nil || sameAnswer(compact.String()) != sameAnswer(n.Data) {
				t.Errorf("padded event is not the same JSON (%v):\n%.200s\nwant %s", err, compact.String(), n.Data)
			}
			for i := range normal {
				if i != first && sameAnswer(padded[i].Data) != sameAnswer(normal[i].Data) {
					t.Errorf("event %d changed: %s, want %s", i, padded[i].Data, normal[i].Data)
				}
			}
		})
	}
}

func TestAfterDoneAndLinger(t *testing.T) {
	s, c := start(t, "s")
	s.Set(Settings{AfterDone: 2})
	events := readSSE(t, c, s.URL()+"/chat/completions", `{"model":"m","stream":true}`)
	if len(events) != 6 || events[3].Data != "[DONE]" {
		t.Fatalf("events %+v, want 3 chunks, [DONE] and 2 more", events)
	}
	for _, e := range events[4:] {
		if got := field(t, decode(t, []byte(e.Data)), "choices", 0, "delta", "content"); got != "after [DONE]" {
			t.Errorf("chunk after [DONE] has content %v", got)
		}
	}

	// With Linger, the response stays open after [DONE] until the client goes away.
	s.Set(Settings{Linger: true})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL()+"/chat/completions", strings.NewReader(`{"model":"m","stream":true}`))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := sse.NewReader(resp.Body)
	for {
		ev, err := rd.Next()
		if err != nil {
			t.Fatalf("stream ended before [DONE]: %v", err)
		}
		if string(ev.Data) == "[DONE]" {
			break
		}
	}
	if n := s.Cancelled(); n != 0 {
		t.Fatalf("%d cancelled before the client went away", n)
	}
	cancel()
	wait, stop := context.WithTimeout(t.Context(), 10*time.Second)
	defer stop()
	if err := s.WaitCancelled(wait, 1); err != nil {
		t.Fatalf("the lingering stream did not wait for its client: %v", err)
	}
}

// answerIDs matches what differs between two answers to the same request: ids and times.
var answerIDs = regexp.MustCompile(`(chatcmpl-|cmpl-|resp_|msg_)[0-9]+|"created(_at)?":[0-9]+`)

// sameAnswer blanks the ids and times of an answer's data, for comparison with another answer.
func sameAnswer(data string) string { return answerIDs.ReplaceAllString(data, "$1") }

// sseEvent is a copy of an sse.Event.
type sseEvent struct {
	Name, Data string
	Multiline  bool
}

// readSSE posts body to url and reads the SSE answer with the gateway's own reader, which keeps
// multi-line events whole.
func readSSE(t *testing.T, c *http.Client, url, body string) []sseEvent {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var evs []sseEvent
	rd := sse.NewReader(resp.Body)
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			return evs
		}
		if err != nil {
			t.Fatalf("reading stream: %v", err)
		}
		evs = append(evs, sseEvent{string(ev.Name), string(ev.Data), ev.Multiline})
	}
}

// TestListenH2C: ListenH2C serves HTTP/2 with prior knowledge (as Caddy's transport with versions
// h2c speaks it) and HTTP/1.1 on the same port, and counts only the HTTP/2 requests as such, in
// Stats and on GET /_fake/stats, which the benchmark's h2c phase relies on to fail loudly.
func TestListenH2C(t *testing.T) {
	s, err := ListenH2C("h2", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	h1 := &http.Transport{}
	t.Cleanup(func() {
		h2.CloseIdleConnections()
		h1.CloseIdleConnections()
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	for range 2 {
		resp, b := do(t, &http.Client{Transport: h2}, http.MethodPost, s.URL()+"/chat/completions", "application/json", body)
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("h2c: %s %d: %s", resp.Proto, resp.StatusCode, b)
		}
	}
	resp, b := do(t, &http.Client{Transport: h1}, http.MethodPost, s.URL()+"/chat/completions", "application/json", body)
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
		t.Fatalf("HTTP/1.1: %s %d: %s", resp.Proto, resp.StatusCode, b)
	}
	if st := s.Stats(); st.Requests != 3 || st.HTTP2 != 2 || s.HTTP2() != 2 {
		t.Errorf("stats: %d requests, %d over HTTP/2 (HTTP2() %d), want 3 and 2", st.Requests, st.HTTP2, s.HTTP2())
	}
	_, b = do(t, &http.Client{Transport: h1}, http.MethodGet, "http://"+s.Addr()+"/_fake/stats", "", "")
	var st Stats
	if err := json.Unmarshal(b, &st); err != nil || st.HTTP2 != 2 {
		t.Errorf("GET /_fake/stats: %s (%v), want http2 2", b, err)
	}

	// Listen stays HTTP/1.1 only: a prior-knowledge client fails there.
	plain, _ := start(t, "h1")
	req, _ := http.NewRequest(http.MethodPost, plain.URL()+"/chat/completions", strings.NewReader(body))
	if resp, err := (&http.Client{Transport: h2}).Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("h2c to Listen's server: %s, want an error", resp.Proto)
	}
}

// TestBodyDigest: a request with X-Fake-Digest: 1 gets the SHA-256 of the body the fake received,
// on JSON answers and streams alike; one without gets none.
func TestBodyDigest(t *testing.T) {
	s, c := start(t, "digest")
	for _, tc := range []struct {
		name, body string
		digest     bool
	}{
		{"json", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, true},
		{"stream", `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, true},
		{"not asked", `{"model":"m","messages":[]}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, s.URL()+"/chat/completions", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			if tc.digest {
				req.Header.Set("X-Fake-Digest", "1")
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			want := ""
			if tc.digest {
				sum := sha256.Sum256([]byte(tc.body))
				want = hex.EncodeToString(sum[:])
			}
			if got := resp.Header.Get("X-Fake-Body-Sha256"); resp.StatusCode != http.StatusOK || got != want {
				t.Errorf("status %d, digest %q, want 200 and %q", resp.StatusCode, got, want)
			}
		})
	}
}
