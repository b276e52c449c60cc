package fakeupstream

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/goccy/go-json"
)

// Defaults used where a Settings field is left at its zero value.
const (
	DefaultChunks           = 3
	DefaultPromptTokens     = 11
	DefaultCompletionTokens = 7 // non-stream answers; streams count their chunks
)

// Settings shape the fake's answers. The zero value is a healthy, instant
// upstream. Change them at run time with Server.Set or Server.Update, or over
// HTTP with POST /_fake/settings.
//
// In JSON (GET/POST /_fake/settings, MarshalJSON, UnmarshalJSON) the fields are
// snake_case and durations are Go duration strings such as "250ms" or "1.5s".
// Unmarshalling merges: fields absent from the JSON keep their value.
type Settings struct {
	// Status is the HTTP status of API answers; 0 means 200. A status outside
	// 2xx is answered with an error body: OpenAI's shape
	// {"error":{"message":"fake <name> status N","type":"upstream_error",...}},
	// Anthropic's shape on /v1/messages.
	Status int
	// Delay is waited before the response headers are sent. A client that
	// gives up meanwhile is counted as cancelled.
	Delay time.Duration
	// Chunks is the number of content chunks (delta events) of a stream;
	// 0 means DefaultChunks. With Reasoning set, chat streams send as many
	// reasoning chunks first.
	Chunks int
	// ChunkDelay is the pause before each stream chunk but the first.
	ChunkDelay time.Duration
	// Content is the assistant text; "" means "hello from <name>".
	Content string
	// Reasoning, when set, is returned by chat: as message.reasoning_content,
	// and in streams as delta.reasoning_content chunks before the content.
	Reasoning string
	// ThinkTags puts Reasoning inside the content as <think>…</think>
	// instead. Streams then cut the text inside both tags, so each tag
	// straddles two chunks (with Chunks >= 3; with 2 only the closing one).
	ThinkTags bool
	// Usage overrides the reported token counts; zero fields keep defaults:
	// DefaultPromptTokens, and DefaultCompletionTokens (JSON) or the number
	// of chunks sent (streams).
	Usage Usage
	// Models are the ids listed by GET /v1/models (and retrieved by GET
	// /v1/models/{id}); nil means ["<name>-model"], an empty non-nil slice an
	// empty list.
	Models []string
	// BreakAfter, when > 0 and at most the number of chunks, cuts streams
	// abruptly (no terminating chunk, no usage, no [DONE]) right after that
	// many chunks: the client sees a broken connection.
	BreakAfter int
	// Hangup closes the connection without any answer once Delay has passed,
	// like an upstream that crashes: the client sees a connection error.
	Hangup bool
	// NoDone omits the final "data: [DONE]" of chat and completions streams.
	NoDone bool
	// Pings sends an "event: ping" with data {"type":"ping"} before the
	// first chunk of every stream.
	Pings bool
	// LargeEvent, when > 0, pads the first chunk of every stream with
	// LargeEvent bytes (rounded up to KiB) of whitespace-only data lines of
	// 1 KiB: one multi-line event, like an upstream that never ends its
	// event, whose data is still the same JSON once its lines are joined.
	// The padding is written as it goes, so gigabytes cost no memory.
	LargeEvent int
	// AfterDone is the number of chat chunks (content "after [DONE]") that
	// chat and completions streams send after their [DONE], which no
	// upstream should do.
	AfterDone int
	// Linger keeps every stream's response open after its last event, until
	// the client goes away (counted as cancelled) or Close: an upstream that
	// never ends its response.
	Linger bool
	// Headers are added to every API answer, e.g. Retry-After or x-request-id.
	Headers map[string]string
	// ToolCalls are called by chat streams after the content, as OpenAI streams them: per
	// call one chunk with its index, id ("call_<i>"), type and name and empty arguments, then
	// its arguments in two chunks; the last chunk's finish_reason is "tool_calls". Each
	// counts as a chunk (ChunkDelay, BreakAfter, usage).
	ToolCalls []ToolCall
}

// ToolCall is one function call of a chat stream.
type ToolCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Usage holds token counts to report instead of the defaults.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// settingsJSON is the wire form of Settings: durations as strings.
type settingsJSON struct {
	Status     int               `json:"status"`
	Delay      string            `json:"delay"`
	Chunks     int               `json:"chunks"`
	ChunkDelay string            `json:"chunk_delay"`
	Content    string            `json:"content"`
	Reasoning  string            `json:"reasoning"`
	ThinkTags  bool              `json:"think_tags"`
	Usage      Usage             `json:"usage"`
	Models     []string          `json:"models"`
	BreakAfter int               `json:"break_after"`
	Hangup     bool              `json:"hangup"`
	NoDone     bool              `json:"no_done"`
	Pings      bool              `json:"pings"`
	LargeEvent int               `json:"large_event"`
	AfterDone  int               `json:"after_done"`
	Linger     bool              `json:"linger"`
	Headers    map[string]string `json:"headers"`
	ToolCalls  []ToolCall        `json:"tool_calls,omitempty"`
}

// MarshalJSON encodes the settings with durations as Go duration strings.
func (s Settings) MarshalJSON() ([]byte, error) {
	return json.Marshal(s.wire())
}

// UnmarshalJSON merges JSON into s: absent fields keep their value, and
// headers are added to the existing ones.
func (s *Settings) UnmarshalJSON(b []byte) error {
	w := s.wire()
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	delay, err := parseDuration("delay", w.Delay)
	if err != nil {
		return err
	}
	chunkDelay, err := parseDuration("chunk_delay", w.ChunkDelay)
	if err != nil {
		return err
	}
	*s = Settings{
		Status: w.Status, Delay: delay, Chunks: w.Chunks, ChunkDelay: chunkDelay,
		Content: w.Content, Reasoning: w.Reasoning, ThinkTags: w.ThinkTags,
		Usage: w.Usage, Models: w.Models, BreakAfter: w.BreakAfter,
		Hangup: w.Hangup, NoDone: w.NoDone, Pings: w.Pings, Headers: w.Headers,
		LargeEvent: w.LargeEvent, AfterDone: w.AfterDone, Linger: w.Linger,
		ToolCalls: w.ToolCalls,
	}
	return nil
}

func (s *Settings) wire() settingsJSON {
	c := s.clone()
	return settingsJSON{
		Status: c.Status, Delay: c.Delay.String(), Chunks: c.Chunks,
		ChunkDelay: c.ChunkDelay.String(), Content: c.Content,
		Reasoning: c.Reasoning, ThinkTags: c.ThinkTags, Usage: c.Usage,
		Models: c.Models, BreakAfter: c.BreakAfter, Hangup: c.Hangup,
		NoDone: c.NoDone, Pings: c.Pings, Headers: c.Headers,
		LargeEvent: c.LargeEvent, AfterDone: c.AfterDone, Linger: c.Linger,
		ToolCalls: c.ToolCalls,
	}
}

func parseDuration(field, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("settings %s: %w", field, err)
	}
	return d, nil
}

// clone returns a deep copy, so stored settings never share a slice or map
// with a caller who may modify it later.
func (s *Settings) clone() Settings {
	c := *s
	c.Models = slices.Clone(s.Models)
	c.Headers = maps.Clone(s.Headers)
	c.ToolCalls = slices.Clone(s.ToolCalls)
	return c
}

// plan is Settings compiled for serving: everything that does not depend on
// the request is resolved and JSON-encoded once, when the settings change.
type plan struct {
	set    Settings
	status int // resolved success or error status
	failed bool
	chunks int

	content     []byte   // quoted content, for every endpoint but chat
	chatContent []byte   // quoted chat content, <think> tags included
	reasoning   []byte   // quoted reasoning_content; nil when not sent
	pieces      [][]byte // quoted content pieces of a stream
	chatPieces  []piece  // chat stream deltas, reasoning first
	toolDeltas  [][]byte // chat stream deltas calling ToolCalls, after chatPieces

	openAIError    []byte
	anthropicError []byte
	models         []byte            // body of GET /v1/models
	model          map[string][]byte // body of GET /v1/models/{id}, by id
	headers        []header
}

// piece is one chat stream delta.
type piece struct {
	reasoning bool // delta.reasoning_content rather than delta.content
	text      []byte
}

// header is an extra response header. Its value slice is shared by every
// response, which is safe because net/http only reads it.
type header struct {
	key   string
	value []string
}

// modelsCreated is the fixed "created" of listed models, so the list body
// can be encoded once.
const modelsCreated = 1700000000

func compile(name string, s Settings) *plan {
	p := &plan{set: s, status: s.Status, chunks: s.Chunks}
	if p.status == 0 {
		p.status = http.StatusOK
	}
	p.failed = p.status < 200 || p.status > 299
	if p.chunks <= 0 {
		p.chunks = DefaultChunks
	}
	content := s.Content
	if content == "" {
		content = "hello from " + name
	}
	p.content = appendQuoted(nil, content)
	for _, t := range splitText(content, p.chunks) {
		p.pieces = append(p.pieces, appendQuoted(nil, t))
	}

	switch {
	case s.Reasoning == "":
		p.chatContent = p.content
		for _, t := range p.pieces {
			p.chatPieces = append(p.chatPieces, piece{text: t})
		}
	case s.ThinkTags:
		full := "<think>" + s.Reasoning + "</think>" + content
		p.chatContent = appendQuoted(nil, full)
		for _, t := range thinkPieces(full, len(s.Reasoning), p.chunks) {
			p.chatPieces = append(p.chatPieces, piece{text: appendQuoted(nil, t)})
		}
	default:
		p.chatContent = p.content
		p.reasoning = appendQuoted(nil, s.Reasoning)
		for _, t := range splitText(s.Reasoning, p.chunks) {
			p.chatPieces = append(p.chatPieces, piece{reasoning: true, text: appendQuoted(nil, t)})
		}
		for _, t := range p.pieces {
			p.chatPieces = append(p.chatPieces, piece{text: t})
		}
	}

	for i, tc := range s.ToolCalls {
		idx := strconv.Itoa(i)
		d := []byte(`{"tool_calls":[{"index":` + idx + `,"id":"call_` + idx + `","type":"function","function":{"name":`)
		d = append(appendQuoted(d, tc.Name), `,"arguments":""}}]}`...)
		p.toolDeltas = append(p.toolDeltas, d)
		half := len(tc.Arguments) / 2
		for _, part := range []string{tc.Arguments[:half], tc.Arguments[half:]} {
			d := []byte(`{"tool_calls":[{"index":` + idx + `,"function":{"arguments":`)
			p.toolDeltas = append(p.toolDeltas, append(appendQuoted(d, part), "}}]}"...))
		}
	}

	msg := "fake " + name + " status " + strconv.Itoa(p.status)
	p.openAIError = append(appendQuoted(append([]byte(nil), `{"error":{"message":`...), msg),
		`,"type":"upstream_error","param":null,"code":null}}`...)
	p.anthropicError = append(appendQuoted(append([]byte(nil), `{"type":"error","error":{"type":"upstream_error","message":`...), msg),
		`}}`...)

	models := s.Models
	if models == nil {
		models = []string{name + "-model"}
	}
	b := append([]byte(nil), `{"object":"list","data":[`...)
	p.model = make(map[string][]byte, len(models))
	for i, id := range models {
		if i > 0 {
			b = append(b, ',')
		}
		obj := appendQuoted([]byte(`{"id":`), id)
		obj = append(obj, `,"object":"model","created":`...)
		obj = strconv.AppendInt(obj, modelsCreated, 10)
		obj = append(appendQuoted(append(obj, `,"owned_by":`...), name), '}')
		if _, dup := p.model[id]; !dup {
			p.model[id] = obj
		}
		b = append(b, obj...)
	}
	p.models = append(b, "]}"...)

	for k, v := range s.Headers {
		p.headers = append(p.headers, header{key: http.CanonicalHeaderKey(k), value: []string{v}})
	}
	return p
}

// thinkPieces cuts full ("<think>R</think>C", R being reasoningLen bytes)
// into n pieces such that the cuts fall inside the tags: "<thi|nk>" and
// "</t|hink>". A stream transformer must then carry partial tags across
// chunks, which is the case worth testing.
func thinkPieces(full string, reasoningLen, n int) []string {
	const open = len("<think>")
	inClose := open + reasoningLen + len("</t")
	switch {
	case n <= 1:
		return []string{full}
	case n == 2:
		return []string{full[:inClose], full[inClose:]}
	}
	return append([]string{full[:4], full[4:inClose]}, splitText(full[inClose:], n-2)...)
}

// usage resolves the token counts to report; completion is the default
// completion count of the answer at hand.
func (p *plan) usage(completion int) (int, int) {
	prompt := DefaultPromptTokens
	if p.set.Usage.PromptTokens > 0 {
		prompt = p.set.Usage.PromptTokens
	}
	if p.set.Usage.CompletionTokens > 0 {
		completion = p.set.Usage.CompletionTokens
	}
	return prompt, completion
}
