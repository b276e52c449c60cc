package llmgateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// These tests drive SSE answers (SPEC §4 stream commit, §5 include_usage, §6) through a real
// Caddy, with the official client where it can tell, and raw HTTP where the framing matters.

// sseEvent is one event of a raw SSE body as the caller received it.
type sseEvent struct {
	Name    string // the event: field, "" for unnamed events
	Data    string
	Comment string // the text of a ": comment" line, for comment-only blocks
}

// parseSSE splits a complete SSE body into events. The gateway writes LF line ends.
func parseSSE(t *testing.T, body string) []sseEvent {
	t.Helper()
	if body != "" && !strings.HasSuffix(body, "\n\n") {
		t.Errorf("SSE body does not end with a blank line: %q", body)
	}
	var evs []sseEvent
	for block := range strings.SplitSeq(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		if block == "" {
			continue
		}
		var ev sseEvent
		for line := range strings.SplitSeq(block, "\n") {
			switch {
			case strings.HasPrefix(line, ":"):
				ev.Comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "event:"):
				ev.Name = strings.TrimSpace(line[len("event:"):])
			case strings.HasPrefix(line, "data:"):
				if ev.Data != "" {
					ev.Data += "\n"
				}
				ev.Data += strings.TrimPrefix(line[len("data:"):], " ")
			}
		}
		evs = append(evs, ev)
	}
	return evs
}

// chatStreamBody is a raw streaming chat request for model.
func chatStreamBody(model string) string {
	return `{"model":"` + model + `","stream":true,"messages":[{"role":"user","content":"hi"}]}`
}

// chatParams is a one-message chat request for model.
func chatParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}
}

// drain reads a stream to its end and returns its chunks; it fails the test on a stream error.
func drain[T any](t *testing.T, s *ssestream.Stream[T]) []T {
	t.Helper()
	defer s.Close()
	var out []T
	for s.Next() {
		out = append(out, s.Current())
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return out
}

// extraString returns the string value of an unknown JSON field, "" when absent or null.
func extraString(t *testing.T, raw string) string {
	t.Helper()
	if raw == "" || raw == "null" {
		return ""
	}
	var s string
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatalf("field %s is not a string: %v", raw, err)
	}
	return s
}

func TestStreamIncrementalDelivery(t *testing.T) {
	up := fake(t, "alpha")
	up.Update(func(s *fakeupstream.Settings) {
		s.Chunks = 5
		s.ChunkDelay = 100 * time.Millisecond
	})
	gw := startGateway(t, "", gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt")))
	client := gw.client()

	s := client.Chat.Completions.NewStreaming(context.Background(), chatParams("gpt-4o"))
	defer s.Close()
	var first time.Time
	var content strings.Builder
	for s.Next() {
		c := s.Current()
		if len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
			if first.IsZero() {
				first = time.Now()
			}
			content.WriteString(c.Choices[0].Delta.Content)
		}
	}
	end := time.Now()
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if first.IsZero() {
		t.Fatal("no content chunk received")
	}
	// Four 100 ms pauses follow the first chunk: a buffering gateway delivers it with the rest.
	if lead := end.Sub(first); lead < 300*time.Millisecond {
		t.Errorf("first content chunk arrived only %v before the end of the stream, want >= 300ms", lead)
	}
	if got := content.String(); got != "hello from alpha" {
		t.Errorf("content = %q", got)
	}
}

func TestStreamSpecialPrefix(t *testing.T) {
	const prefix = "<think>\n"
	up := fake(t, "alpha")
	up.Update(func(s *fakeupstream.Settings) { s.Chunks = 4 })
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("alpha", up.URL(), "match keyword gpt", `special_prefix "<think>\n"`)))
	client := gw.client()
	ctx := context.Background()
	const want = prefix + "hello from alpha"

	for _, tc := range []struct {
		name string
		run  func(t *testing.T) string // returns the text the caller received
	}{
		{"chat stream", func(t *testing.T) string {
			var b strings.Builder
			for _, c := range drain(t, client.Chat.Completions.NewStreaming(ctx, chatParams("gpt-4o"))) {
				if len(c.Choices) > 0 {
					b.WriteString(c.Choices[0].Delta.Content)
				}
			}
			return b.String()
		}},
		{"completions stream", func(t *testing.T) string {
			var b strings.Builder
			for _, c := range drain(t, client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
				Model:  "gpt-3.5-turbo-instruct",
				Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once")},
			})) {
				if len(c.Choices) > 0 {
					b.WriteString(c.Choices[0].Text)
				}
			}
			return b.String()
		}},
		{"chat", func(t *testing.T) string {
			r, err := client.Chat.Completions.New(ctx, chatParams("gpt-4o"))
			if err != nil {
				t.Fatal(err)
			}
			return r.Choices[0].Message.Content
		}},
		{"completions", func(t *testing.T) string {
			r, err := client.Completions.New(ctx, openai.CompletionNewParams{
				Model:  "gpt-3.5-turbo-instruct",
				Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once")},
			})
			if err != nil {
				t.Fatal(err)
			}
			return r.Choices[0].Text
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.run(t); got != want {
				t.Errorf("text = %q, want %q (prefix exactly once, at the start)", got, want)
			}
		})
	}
}

func TestStreamUsage(t *testing.T) {
	for _, tc := range []struct {
		name          string
		clientLines   []string
		callerAsks    bool
		wantUpstream  bool // include_usage sent upstream
		wantForwarded bool // the caller receives the usage-only chunk
	}{
		{"caller asks", nil, true, true, true},
		{"gateway injects", nil, false, true, false},
		{"inject_usage off", []string{"inject_usage off"}, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := fake(t, "alpha")
			gw := startGateway(t, "", gatewaySite("",
				clientBlock("alpha", up.URL(), append([]string{"match keyword gpt"}, tc.clientLines...)...)))
			params := chatParams("gpt-4o")
			if tc.callerAsks {
				params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			}
			client := gw.client()
			chunks := drain(t, client.Chat.Completions.NewStreaming(context.Background(), params))

			var upstream struct {
				StreamOptions struct {
					IncludeUsage bool `json:"include_usage"`
				} `json:"stream_options"`
			}
			body := up.LastRequest().Body
			if err := json.Unmarshal(body, &upstream); err != nil {
				t.Fatalf("upstream body %s: %v", body, err)
			}
			if upstream.StreamOptions.IncludeUsage != tc.wantUpstream {
				t.Errorf("upstream include_usage = %v, want %v; body %s", upstream.StreamOptions.IncludeUsage, tc.wantUpstream, body)
			}

			var usageChunks int
			var content strings.Builder
			for _, c := range chunks {
				if len(c.Choices) == 0 {
					usageChunks++
					if c.Usage.PromptTokens != fakeupstream.DefaultPromptTokens || c.Usage.CompletionTokens == 0 {
						t.Errorf("usage chunk has usage %+v", c.Usage)
					}
					continue
				}
				if raw := c.JSON.Usage.Raw(); raw != "" && raw != "null" {
					t.Errorf("content chunk carries usage %s", raw)
				}
				content.WriteString(c.Choices[0].Delta.Content)
			}
			if forwarded := usageChunks == 1; usageChunks > 1 || forwarded != tc.wantForwarded {
				t.Errorf("caller received %d usage-only chunks, want forwarded=%v", usageChunks, tc.wantForwarded)
			}
			if content.String() != "hello from alpha" {
				t.Errorf("content = %q", content.String())
			}
		})
	}
}

func TestStreamFraming(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings func(*fakeupstream.Settings)
		path     string
		body     string
	}{
		{"done kept", func(*fakeupstream.Settings) {}, "/v1/chat/completions", chatStreamBody("gpt-4o")},
		{"done added", func(s *fakeupstream.Settings) { s.NoDone = true }, "/v1/chat/completions", chatStreamBody("gpt-4o")},
		{"done added completions", func(s *fakeupstream.Settings) { s.NoDone = true },
			"/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"once","stream":true}`},
		{"ping to comment", func(s *fakeupstream.Settings) { s.Pings = true }, "/v1/chat/completions", chatStreamBody("gpt-4o")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := fake(t, "alpha")
			up.Update(tc.settings)
			gw := startGateway(t, "", gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt")))
			status, h, body := gw.post(tc.path, "application/json", tc.body)
			if status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
			if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Errorf("Content-Type = %q", ct)
			}
			evs := parseSSE(t, body)
			var dones, pings, chunks int
			for _, ev := range evs {
				switch {
				case ev.Data == "[DONE]":
					dones++
				case ev.Comment == "ping" && ev.Data == "":
					pings++
				case ev.Name != "":
					t.Errorf("unexpected named event %q in a chat stream", ev.Name)
				case ev.Data != "":
					chunks++
				}
			}
			if dones != 1 || evs[len(evs)-1].Data != "[DONE]" {
				t.Errorf("want exactly one [DONE], as the last event; got %d in\n%s", dones, body)
			}
			if chunks != fakeupstream.DefaultChunks {
				t.Errorf("got %d data chunks, want %d", chunks, fakeupstream.DefaultChunks)
			}
			if pings > 1 || (pings == 1) != up.Settings().Pings || strings.Contains(body, "event: ping") {
				t.Errorf("got %d ': ping' comments, want one per upstream ping and no ping event, body:\n%s", pings, body)
			}
		})
	}
}

func TestStreamFailoverBeforeCommit(t *testing.T) {
	first, second := fake(t, "first"), fake(t, "second")
	first.Update(func(s *fakeupstream.Settings) { s.Status = 503 })
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("first", first.URL(), "match keyword gpt"),
		clientBlock("second", second.URL(), "match keyword gpt")))

	var resp *http.Response
	client := gw.client()
	s := client.Chat.Completions.NewStreaming(context.Background(), chatParams("gpt-4o"), option.WithResponseInto(&resp))
	var content strings.Builder
	for _, c := range drain(t, s) {
		if len(c.Choices) > 0 {
			content.WriteString(c.Choices[0].Delta.Content)
		}
	}
	if got := content.String(); got != "hello from second" {
		t.Errorf("content = %q, want the second client's stream", got)
	}
	if resp == nil {
		t.Fatal("no response captured")
	}
	if tried := resp.Header.Get("X-LLM-Gateway-Tried"); tried != "first,second" {
		t.Errorf("X-LLM-Gateway-Tried = %q, want first,second", tried)
	}
	if b := resp.Header.Get("X-LLM-Gateway-Backend"); b != "second" {
		t.Errorf("X-LLM-Gateway-Backend = %q", b)
	}
	if first.Requests() != 1 || second.Requests() != 1 {
		t.Errorf("requests: first %d, second %d; want 1 each", first.Requests(), second.Requests())
	}
}

// chatErrorChunk checks the SPEC §6 error chunk of a broken chat or completions stream.
func chatErrorChunk(t *testing.T, ev sseEvent) {
	t.Helper()
	var v struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Choices []struct {
			Index        int             `json:"index"`
			Delta        json.RawMessage `json:"delta"`
			FinishReason string          `json:"finish_reason"`
		} `json:"choices"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &v); err != nil || ev.Name != "" {
		t.Fatalf("error chunk %q %q: %v", ev.Name, ev.Data, err)
	}
	if v.Error.Code != "upstream_error" || v.Error.Message == "" {
		t.Errorf("error = %+v, want code upstream_error with a message", v.Error)
	}
	if len(v.Choices) != 1 || v.Choices[0].FinishReason != "error" || string(v.Choices[0].Delta) != "{}" {
		t.Errorf("choices = %+v, want one with an empty delta and finish_reason error", v.Choices)
	}
}

// namedErrorEvent checks the "error" event ending a broken Responses or Messages stream.
func namedErrorEvent(t *testing.T, ev sseEvent) {
	t.Helper()
	var v struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &v); err != nil || ev.Name != "error" || v.Type != "error" {
		t.Errorf("last event %q %q, want an error event (%v)", ev.Name, ev.Data, err)
	}
	if !strings.Contains(ev.Data, "upstream stream interrupted") {
		t.Errorf("error event %q does not say what happened", ev.Data)
	}
}

func TestStreamUpstreamBreak(t *testing.T) {
	for _, tc := range []struct {
		name, path, body string
		before           int // events the caller gets before the error: BreakAfter deltas and any preamble
		checkLast        func(*testing.T, sseEvent)
	}{
		{"chat", "/v1/chat/completions", chatStreamBody("gpt-4o"), 2, chatErrorChunk},
		{"completions", "/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"once","stream":true}`, 2, chatErrorChunk},
		{"responses", "/v1/responses", `{"model":"gpt-4o","input":"hi","stream":true}`, 6, namedErrorEvent},
		{"messages", "/v1/messages", `{"model":"gpt-4o","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"hi"}]}`, 4, namedErrorEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, second := fake(t, "alpha"), fake(t, "second")
			up.Update(func(s *fakeupstream.Settings) {
				s.Chunks = 4
				s.BreakAfter = 2
			})
			gw := startGateway(t, "", gatewaySite("",
				clientBlock("alpha", up.URL(), "match keyword gpt"),
				clientBlock("second", second.URL(), "match keyword gpt")))
			status, h, body := gw.post(tc.path, "application/json", tc.body)
			if status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
			if strings.Contains(body, "[DONE]") {
				t.Errorf("a broken stream must not end with [DONE]:\n%s", body)
			}
			if second.Requests() != 0 || h.Get("X-LLM-Gateway-Tried") != "alpha" {
				t.Errorf("a committed stream failed over: tried %q, second saw %d requests", h.Get("X-LLM-Gateway-Tried"), second.Requests())
			}
			evs := parseSSE(t, body)
			if len(evs) != tc.before+1 {
				t.Fatalf("got %d events, want %d and the error:\n%s", len(evs), tc.before, body)
			}
			tc.checkLast(t, evs[tc.before])
		})
	}
}

func TestStreamClientCancelReachesUpstream(t *testing.T) {
	up := fake(t, "alpha")
	up.Update(func(s *fakeupstream.Settings) {
		s.Chunks = 5
		s.ChunkDelay = time.Minute
	})
	gw := startGateway(t, "", gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt")))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := gw.client()
	s := client.Chat.Completions.NewStreaming(ctx, chatParams("gpt-4o"))
	defer s.Close()
	if !s.Next() {
		t.Fatalf("no first chunk: %v", s.Err())
	}
	cancel()
	wait, stop := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer stop()
	if err := up.WaitCancelled(wait, 1); err != nil {
		t.Fatalf("upstream not cancelled within 100ms of the caller: %v", err)
	}
}

func TestStreamThinkingFormat(t *testing.T) {
	const reasoning, answer = "weighing it up", "hello from alpha"
	for _, tc := range []struct {
		name          string
		format        string
		thinkTags     bool // upstream puts reasoning in <think> tags (split across chunks)
		wantContent   string
		wantReasoning string // of the reasoning_content field
	}{
		{"tags to reasoning_content", "reasoning_content", true, answer, reasoning},
		{"reasoning_content to tags", "think_tag", false, "<think>" + reasoning + "</think>" + answer, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := fake(t, "alpha")
			up.Update(func(s *fakeupstream.Settings) {
				s.Chunks = 4
				s.Reasoning = reasoning
				s.ThinkTags = tc.thinkTags
			})
			gw := startGateway(t, "", gatewaySite("",
				clientBlock("alpha", up.URL(), "match keyword gpt", "thinking_format "+tc.format)))
			client := gw.client()
			ctx := context.Background()

			t.Run("stream", func(t *testing.T) {
				var content, reason strings.Builder
				for _, c := range drain(t, client.Chat.Completions.NewStreaming(ctx, chatParams("gpt-4o"))) {
					if len(c.Choices) == 0 {
						continue
					}
					d := c.Choices[0].Delta
					content.WriteString(d.Content)
					reason.WriteString(extraString(t, d.JSON.ExtraFields["reasoning_content"].Raw()))
				}
				if content.String() != tc.wantContent || reason.String() != tc.wantReasoning {
					t.Errorf("content %q, reasoning_content %q; want %q, %q", content.String(), reason.String(), tc.wantContent, tc.wantReasoning)
				}
			})
			t.Run("non-stream", func(t *testing.T) {
				r, err := client.Chat.Completions.New(ctx, chatParams("gpt-4o"))
				if err != nil {
					t.Fatal(err)
				}
				m := r.Choices[0].Message
				reason := extraString(t, m.JSON.ExtraFields["reasoning_content"].Raw())
				if m.Content != tc.wantContent || reason != tc.wantReasoning {
					t.Errorf("content %q, reasoning_content %q; want %q, %q", m.Content, reason, tc.wantContent, tc.wantReasoning)
				}
			})
		})
	}
}

func TestStreamNamedEventsPassThrough(t *testing.T) {
	for _, tc := range []struct {
		name, path, body string
		want             []string
	}{
		{"responses", "/v1/responses", `{"model":"gpt-4o","input":"hi","stream":true}`,
			[]string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
				"response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
				"response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}},
		{"messages", "/v1/messages", `{"model":"claude-3","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			[]string{"message_start", "content_block_start", "content_block_delta", "content_block_delta",
				"content_block_delta", "content_block_stop", "message_delta", "message_stop"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := fake(t, "alpha")
			up.Update(func(s *fakeupstream.Settings) { s.Pings = true })
			gw := startGateway(t, "", gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt claude")))
			status, _, body := gw.post(tc.path, "application/json", tc.body, "anthropic-version", "2023-06-01")
			if status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
			var names []string
			for _, ev := range parseSSE(t, body) {
				if ev.Comment == "ping" {
					continue
				}
				names = append(names, ev.Name)
				var typ struct {
					Type string `json:"type"`
				}
				if err := json.Unmarshal([]byte(ev.Data), &typ); err != nil || typ.Type != ev.Name {
					t.Errorf("event %q has data %s", ev.Name, ev.Data)
				}
			}
			if got, want := strings.Join(names, " "), strings.Join(tc.want, " "); got != want {
				t.Errorf("event names:\n got %s\nwant %s", got, want)
			}
			if strings.Contains(body, "[DONE]") {
				t.Errorf("[DONE] added to a %s stream", tc.name)
			}
		})
	}
}

// TestStreamResultPlaceholders checks the per-call Result of a stream through the {http.llm.*}
// placeholders in Caddy's access log, which is written before the response ends.
func TestStreamResultPlaceholders(t *testing.T) {
	up := fake(t, "alpha")
	up.Update(func(s *fakeupstream.Settings) {
		s.Chunks = 4
		s.Delay = 50 * time.Millisecond
	})
	logPath := filepath.Join(t.TempDir(), "access.log")
	site := "\tlog {\n\t\toutput file " + logPath + "\n\t\tformat json\n\t}\n"
	for _, p := range []string{"backend", "prompt_tokens", "completion_tokens", "total_tokens", "ttft_ms", "tried", "status"} {
		site += "\tlog_append llm_" + p + " {http.llm." + p + "}\n"
	}
	gw := startGateway(t, "", site+gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt")))
	status, _, body := gw.post("/v1/chat/completions", "application/json", chatStreamBody("gpt-4o"))
	if status != 200 || strings.Contains(body, `"choices":[]`) {
		t.Fatalf("status %d, body:\n%s", status, body)
	}

	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var entry map[string]any
	lines := bytes.Split(bytes.TrimSpace(raw), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], &entry); err != nil {
		t.Fatalf("access log %s: %v", raw, err)
	}
	str := func(k string) string { return fmt.Sprint(entry["llm_"+k]) }
	for k, want := range map[string]string{
		"backend":           "alpha",
		"tried":             "alpha",
		"status":            "200",
		"prompt_tokens":     strconv.Itoa(fakeupstream.DefaultPromptTokens),
		"completion_tokens": "4", // the fake counts stream chunks
		"total_tokens":      strconv.Itoa(fakeupstream.DefaultPromptTokens + 4),
	} {
		if got := str(k); got != want {
			t.Errorf("{http.llm.%s} = %q, want %q", k, got, want)
		}
	}
	// The fake waits 50ms before its headers; TTFT counts from the request's arrival.
	if ms, err := strconv.Atoi(str("ttft_ms")); err != nil || ms < 50 || ms > 5000 {
		t.Errorf("{http.llm.ttft_ms} = %q, want 50..5000", str("ttft_ms"))
	}
}

func TestStreamNoGoroutineLeak(t *testing.T) {
	up := fake(t, "alpha")
	up.Update(func(s *fakeupstream.Settings) {
		s.Chunks = 4
		s.ChunkDelay = 2 * time.Millisecond
	})
	gw := startGateway(t, "", gatewaySite("", clientBlock("alpha", up.URL(), "match keyword gpt")))
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	// one streams a chat answer and gives up at a random point: never, before the answer,
	// or after the first event.
	one := func(rng *rand.Rand) error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		mode := rng.IntN(3)
		if mode == 1 {
			timer := time.AfterFunc(time.Duration(rng.IntN(5000))*time.Microsecond, cancel)
			defer timer.Stop()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, gw.URL+"/v1/chat/completions",
			strings.NewReader(chatStreamBody("gpt-4o")))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		defer resp.Body.Close()
		if mode == 2 {
			_, err := bufio.NewReader(resp.Body).ReadString('\n')
			cancel()
			return err
		}
		b, err := io.ReadAll(resp.Body)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if !bytes.HasSuffix(b, []byte("data: [DONE]\n\n")) {
			return fmt.Errorf("stream did not end with [DONE]: %q", b)
		}
		return nil
	}
	const workers = 8
	run := func(n int, seed uint64) {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(w)))
				for range n / workers {
					if err := one(rng); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := up.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// The warm-up fills connection pools to the level the real run needs.
	run(4*workers, 1)
	runtime.GC()
	base := runtime.NumGoroutine()
	run(1000, 2)
	if up.Cancelled() == 0 {
		t.Error("no stream was cancelled: the test does not exercise cancels")
	}

	// Nothing signals that goroutines have exited, so poll, bounded.
	const slack = 3*workers + 10
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(5 * time.Second); n > base+slack && time.Now().Before(deadline); n = runtime.NumGoroutine() {
		time.Sleep(20 * time.Millisecond)
	}
	if n > base+slack {
		var stacks bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		t.Fatalf("goroutines: %d before, %d after 1000 streams (slack %d)\n%s", base, n, slack, stacks.String())
	}
	t.Logf("goroutines: %d before, %d after; upstream saw %d requests, %d cancelled", base, n, up.Requests(), up.Cancelled())
}
