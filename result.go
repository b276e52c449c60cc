package llmgateway

import (
	"strconv"
	"strings"
	"time"

	"github.com/llmgw/caddy-llm-gateway/sse"
)

// Result is everything the gateway learned about one API call. It is completed in one place,
// call.finish, which hands it to the placeholders, the metrics and the audit log.
type Result struct {
	Model        string        // the model finally routed (the fallback model after a fallback)
	Backend      string        // the client that answered, if any
	Tried        []string      // clients attempted, in order
	Fallbacks    int           // model fallback hops taken
	Status       int           // status sent to the caller (499 when the caller went away)
	Stream       bool          // the answer was an SSE stream
	Partial      bool          // the stream broke before its end
	Usage        sse.Usage     // token usage reported by the upstream
	TTFT         time.Duration // time to the first content byte of a stream
	FinishReason string        // the last finish_reason of a chat/completion stream
	Err          string        // why the call failed, if it did
	RequestBody  []byte        // the body sent upstream
	Response     []byte        // the body (or stream transcript) the caller received
	Latency      time.Duration // from the request's arrival to the end of the answer
}

// finish completes the call's Result and publishes it.
func (c *call) finish() {
	if c.passed {
		return
	}
	c.res.Latency = time.Since(c.start)
	if repl := replacer(c.r); repl != nil {
		repl.Set("http.llm.model", c.res.Model)
		repl.Set("http.llm.backend", c.res.Backend)
		repl.Set("http.llm.prompt_tokens", strconv.FormatInt(c.res.Usage.PromptTokens, 10))
		repl.Set("http.llm.completion_tokens", strconv.FormatInt(c.res.Usage.CompletionTokens, 10))
		repl.Set("http.llm.total_tokens", strconv.FormatInt(c.res.Usage.TotalTokens, 10))
		repl.Set("http.llm.ttft_ms", strconv.FormatInt(c.res.TTFT.Milliseconds(), 10))
		repl.Set("http.llm.tried", strings.Join(c.res.Tried, ","))
		repl.Set("http.llm.status", strconv.Itoa(c.res.Status))
	}
}
