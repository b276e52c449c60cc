package llmgateway

import (
	"bytes"
	"io"
	"net/http"
	"time"

	"github.com/goccy/go-json"

	"github.com/llmgw/caddy-llm-gateway/sse"
)

// copyStream relays a committed SSE answer event by event (SPEC §6). Events are written as they
// arrive and flushed whenever the upstream has nothing more buffered, so bursts coalesce while
// every token still leaves at once.
func (c *call) copyStream(uc *upstreamClient, resp *http.Response) {
	defer resp.Body.Close()
	c.res.Status = resp.StatusCode

	h := c.w.Header()
	copyResponseHeader(h, resp.Header, true)
	c.setGatewayHeaders()
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-cache")
	}
	h.Set("X-Accel-Buffering", "no")
	c.w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(c.w)
	_ = rc.Flush()

	kind, chunked := c.ep.sseKind()
	var tr *sse.ChunkTransformer
	if chunked {
		tr = sse.NewChunkTransformer(sse.Options{
			Kind:               kind,
			Prefix:             uc.SpecialPrefix,
			Thinking:           c.format(uc),
			DropUsageOnlyChunk: c.injectedUsage,
		})
	}

	rd := sse.NewReader(resp.Body)
	buf := make([]byte, 0, 4096)
	sawDone := false
	// transcript keeps what the caller received, for the audit record.
	var transcript *bytes.Buffer
	if c.keepBodies() {
		transcript = new(bytes.Buffer)
	}
	defer func() {
		if transcript != nil {
			c.res.Response = transcript.Bytes()
		}
	}()
	for {
		ev, err := rd.Next()
		if err != nil {
			if err == io.EOF {
				break
			}
			if c.r.Context().Err() != nil {
				c.callerGone()
				c.res.Partial = true
				return
			}
			c.res.Err = "upstream stream interrupted: " + err.Error()
			buf = c.appendStreamError(buf, c.res.Err)
			if c.write(rc, buf) && transcript != nil {
				transcript.Write(buf)
			}
			c.res.Partial = true
			return
		}
		if ev.Comment {
			continue
		}
		if sse.IsPing(ev.Name, ev.Data) {
			buf = sse.AppendComment(buf, commentPing)
		} else if chunked {
			if sse.IsDone(ev.Data) {
				if flush := tr.Flush(); flush != nil {
					buf = sse.AppendEvent(buf, nil, flush)
				}
				buf = append(buf, sse.DoneEvent...)
				sawDone = true
			} else {
				out, forward := tr.Transform(ev.Data)
				if forward {
					if c.res.TTFT == 0 && tr.FirstContent() {
						c.res.TTFT = time.Since(c.start)
					}
					buf = sse.AppendEvent(buf, ev.Name, out)
				}
			}
		} else {
			if c.res.TTFT == 0 {
				c.res.TTFT = time.Since(c.start)
			}
			c.passThroughUsage(ev)
			buf = sse.AppendEvent(buf, ev.Name, ev.Data)
		}
		if rd.Buffered() == 0 && len(buf) > 0 {
			if !c.write(rc, buf) {
				c.res.Partial = true
				return
			}
			if transcript != nil {
				transcript.Write(buf)
			}
			buf = buf[:0]
		}
	}
	if chunked && !sawDone {
		if flush := tr.Flush(); flush != nil {
			buf = sse.AppendEvent(buf, nil, flush)
		}
		buf = append(buf, sse.DoneEvent...)
	}
	if len(buf) > 0 && c.write(rc, buf) && transcript != nil {
		transcript.Write(buf)
	}
	if chunked {
		if u, ok := tr.Usage(); ok {
			c.res.Usage = u
		}
		c.res.FinishReason = tr.FinishReason()
	}
}

// commentPing replaces upstream ping events: SSE clients ignore comments.
var commentPing = []byte("ping")

// write sends buf to the caller and flushes; false means the caller is gone.
func (c *call) write(rc *http.ResponseController, buf []byte) bool {
	if _, err := c.w.Write(buf); err != nil {
		c.callerGone()
		return false
	}
	if err := rc.Flush(); err != nil {
		c.callerGone()
		return false
	}
	return true
}

// appendStreamError appends the event that tells the caller the upstream broke mid-stream, in
// the shape of the endpoint's protocol; no [DONE] follows it.
func (c *call) appendStreamError(buf []byte, msg string) []byte {
	switch c.ep {
	case epResponses:
		data, _ := json.Marshal(map[string]any{"type": "error", "code": "upstream_error", "message": msg, "param": nil})
		return sse.AppendEvent(buf, []byte("error"), data)
	case epMessages:
		data, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": "api_error", "message": msg}})
		return sse.AppendEvent(buf, []byte("error"), data)
	}
	return sse.AppendEvent(buf, nil, sse.ErrorChunk(msg))
}

// passThroughUsage picks usage out of Responses and Anthropic Messages stream events, which
// carry it in named events rather than in a final chunk.
func (c *call) passThroughUsage(ev sse.Event) {
	switch string(ev.Name) {
	case "response.completed":
		var v struct {
			Response struct {
				Usage struct {
					InputTokens  int64 `json:"input_tokens"`
					OutputTokens int64 `json:"output_tokens"`
					TotalTokens  int64 `json:"total_tokens"`
				} `json:"usage"`
			} `json:"response"`
		}
		if json.Unmarshal(ev.Data, &v) == nil {
			u := v.Response.Usage
			c.res.Usage = sse.Usage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens, TotalTokens: u.TotalTokens}
			if u.TotalTokens == 0 {
				c.res.Usage.TotalTokens = u.InputTokens + u.OutputTokens
			}
		}
	case "message_start":
		var v struct {
			Message struct {
				Usage struct {
					InputTokens  int64 `json:"input_tokens"`
					OutputTokens int64 `json:"output_tokens"`
				} `json:"usage"`
			} `json:"message"`
		}
		if json.Unmarshal(ev.Data, &v) == nil {
			c.res.Usage.PromptTokens = v.Message.Usage.InputTokens
			c.res.Usage.CompletionTokens = v.Message.Usage.OutputTokens
			c.res.Usage.TotalTokens = c.res.Usage.PromptTokens + c.res.Usage.CompletionTokens
		}
	case "message_delta":
		var v struct {
			Usage struct {
				OutputTokens int64 `json:"output_tokens"`
			} `json:"usage"`
		}
		if json.Unmarshal(ev.Data, &v) == nil && v.Usage.OutputTokens > 0 {
			c.res.Usage.CompletionTokens = v.Usage.OutputTokens
			c.res.Usage.TotalTokens = c.res.Usage.PromptTokens + c.res.Usage.CompletionTokens
		}
	}
}
