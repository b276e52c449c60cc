package sse

import (
	"bytes"

	"github.com/goccy/go-json"
)

// Protocol is the stream protocol of an API: it decides the shape of the
// error event that ends a broken stream.
type Protocol uint8

const (
	// OpenAI is the chunk protocol of chat and text completions (and of any
	// other OpenAI-style stream).
	OpenAI Protocol = iota
	// Responses is the OpenAI Responses API: named, typed events.
	Responses
	// Anthropic is the Anthropic Messages API: named, typed events.
	Anthropic
)

// AppendStreamError appends the event that tells a caller the upstream
// broke mid-stream, in the shape of protocol p. No [DONE] follows it:
// OpenAI-style streams get ErrorChunk, the others their own error event.
func AppendStreamError(dst []byte, p Protocol, message string) []byte {
	switch p {
	case Responses:
		data, _ := json.Marshal(map[string]any{"type": "error", "code": "upstream_error", "message": message, "param": nil})
		return AppendEvent(dst, eventError, data)
	case Anthropic:
		data, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": "api_error", "message": message}})
		return AppendEvent(dst, eventError, data)
	}
	return AppendEvent(dst, nil, ErrorChunk(message))
}

var eventError = []byte("error")

// EventUsage returns u updated by one named event of a Responses or
// Anthropic Messages stream, which carry usage in named events rather than
// in a final chunk: response.completed holds the whole usage,
// message_start the prompt's, and message_delta the running output count.
// Any other event, or one that does not parse, leaves u as it is.
func EventUsage(u Usage, name, data []byte) Usage {
	switch string(name) {
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
		if json.Unmarshal(data, &v) == nil {
			r := v.Response.Usage
			u = Usage{PromptTokens: r.InputTokens, CompletionTokens: r.OutputTokens, TotalTokens: r.TotalTokens}
			if r.TotalTokens == 0 {
				u.TotalTokens = r.InputTokens + r.OutputTokens
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
		if json.Unmarshal(data, &v) == nil {
			u.PromptTokens = v.Message.Usage.InputTokens
			u.CompletionTokens = v.Message.Usage.OutputTokens
			u.TotalTokens = u.PromptTokens + u.CompletionTokens
		}
	case "message_delta":
		var v struct {
			Usage struct {
				OutputTokens int64 `json:"output_tokens"`
			} `json:"usage"`
		}
		if json.Unmarshal(data, &v) == nil && v.Usage.OutputTokens > 0 {
			u.CompletionTokens = v.Usage.OutputTokens
			u.TotalTokens = u.PromptTokens + u.CompletionTokens
		}
	}
	return u
}

// ErrorJSON returns the JSON error an upstream sent as SSE (a failed
// stream): a copy of the data of the first event that is a JSON object.
// ok is false when no event is one; the caller then wraps the text itself.
func ErrorJSON(body []byte) (data []byte, ok bool) {
	rd := NewReader(bytes.NewReader(body))
	for {
		ev, err := rd.Next()
		if err != nil {
			return nil, false
		}
		if d := bytes.TrimSpace(ev.Data); !ev.Comment && len(d) > 0 && d[0] == '{' && json.Valid(d) {
			return append([]byte(nil), d...), true
		}
	}
}
