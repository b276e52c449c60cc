// Package router holds the gateway's configuration types and the pure routing logic built on
// them: model matching, the ordering strategies, the per-client breaker and the model-fallback
// plan. It knows nothing of HTTP plumbing; the handler feeds it model names and outcomes.
package router

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmgw/caddy-llm-gateway/keys"
)

// Config is the whole configuration of one llm_gateway handler. It is embedded in the handler's
// JSON so every field below appears in `caddy adapt` output under the same name.
type Config struct {
	// Config is the path of an origin-format YAML file (config.yaml with openai_clients). Its
	// clients are added to Clients and its global settings apply where this config leaves the
	// field unset. The file is watched and re-applied on change. Default: none.
	Config string `json:"config,omitempty"`

	// Strategy orders the candidate clients of a request: "random" (weighted by priority),
	// "deterministic" (prompt affinity) or "least_connections". Default: random.
	Strategy Strategy `json:"strategy,omitempty"`

	// ThinkingFormat normalises reasoning in chat responses: "passthrough", "think_tag",
	// "reasoning" or "reasoning_content". A client's own thinking_format overrides it.
	// Default: passthrough.
	ThinkingFormat ThinkingFormat `json:"thinking_format,omitempty"`

	// ModelsCacheTTL is how long a client's /v1/models list is cached per credential sent upstream.
	// Zero disables the cache. Default: 10m.
	ModelsCacheTTL *caddy.Duration `json:"models_cache_ttl,omitempty"`

	// MaxRequestBody is the largest request body accepted, in bytes; larger bodies get 413.
	// Default: 32 MiB.
	MaxRequestBody int64 `json:"max_request_body,omitempty"`

	// MaxBufferedResponse is the largest non-streaming answer the gateway holds in memory, in
	// bytes. An answer is buffered whole so that the response transforms (special_prefix,
	// thinking_format) can apply to it; a larger one is relayed as it arrives, as the upstream
	// sent it: untransformed, its usage read from its last bytes, and no body stored in the audit
	// log. So one call never holds more than this, whatever the upstream sends. Default: 4 MiB.
	MaxBufferedResponse int64 `json:"max_buffered_response,omitempty"`

	// MaxFallbackHops bounds how many model fallbacks one request may follow. Zero disables
	// model fallback. Default: 3.
	MaxFallbackHops *int `json:"max_fallback_hops,omitempty"`

	// ResponseHeaderTimeout is how long a non-streaming attempt waits for the upstream's response
	// headers, and the longest pause allowed in a non-streaming answer's body, before the attempt
	// counts as failed (a timeout) and the next client is tried. A non-streaming answer's headers
	// come only once the whole answer is generated, which takes minutes for long answers and
	// reasoning models: the default matches the OpenAI SDKs' own request timeout, so the gateway
	// never gives up on a call its caller still waits for. Default: 10m.
	ResponseHeaderTimeout caddy.Duration `json:"response_header_timeout,omitempty"`

	// StreamFirstByteTimeout is how long a streaming request waits for the upstream's response
	// headers before the attempt counts as failed and the next client is tried. Default: 60s.
	StreamFirstByteTimeout caddy.Duration `json:"stream_first_byte_timeout,omitempty"`

	// StreamIdleTimeout ends a committed stream when the upstream sends no byte for this long:
	// the caller gets the SPEC §6 error event and the audit row records the cut. Reasoning
	// models can think for minutes between two chunks without sending a byte, so the default is
	// generous; it bounds how long a silently dead upstream holds a connection. Default: 5m.
	StreamIdleTimeout caddy.Duration `json:"stream_idle_timeout,omitempty"`

	// AccessLogFiltered tells the gateway that the access log of its site already filters the
	// credential headers Caddy would log in clear (X-Api-Key, Api-Key: see the operations
	// guide's filter), which silences the warning given at provision when access logging is
	// on. Caddy gives a handler no view of the site's log encoder, so the gateway cannot check
	// this itself. Default: false.
	AccessLogFiltered bool `json:"access_log_filtered,omitempty"`

	// HealthCheck configures the passive per-client breaker. Default: enabled with the
	// defaults documented on HealthCheck.
	HealthCheck *HealthCheck `json:"health_check,omitempty"`

	// Clients are the upstreams, in config order.
	Clients []*Client `json:"clients,omitempty"`

	// Keys turns on gateway keys (SPEC §12): every API call must then carry one of them.
	// Default: none, the gateway is open.
	Keys *keys.Config `json:"keys,omitempty"`

	// Prices are the USD prices per 1M input and output tokens of models (exact names or glob
	// patterns; an exact name wins): the audit log's CostUSD and usd budgets. Default: none.
	Prices []keys.Price `json:"prices,omitempty"`
}

// Defaults of the handler configuration.
const (
	DefaultMaxRequestBody         = 32 << 20
	DefaultResponseHeaderTimeout  = 10 * time.Minute
	DefaultMaxBufferedResponse    = 4 << 20
	DefaultMaxFallbackHops        = 3
	DefaultModelsCacheTTL         = 10 * time.Minute
	DefaultStreamFirstByteTimeout = 60 * time.Second
	DefaultStreamIdleTimeout      = 5 * time.Minute
)

// Settings are the handler-wide options of a Config with every default applied: what a running
// config generation uses. Defaults are applied here and nowhere else; a new option gets its
// field below and its default in Config.Settings.
type Settings struct {
	Strategy               Strategy
	ThinkingFormat         ThinkingFormat
	ModelsCacheTTL         time.Duration // 0: no cache
	MaxRequestBody         int64
	MaxFallbackHops        int // 0: no model fallback
	StreamFirstByteTimeout time.Duration
	StreamIdleTimeout      time.Duration
	ResponseHeaderTimeout  time.Duration
	MaxBufferedResponse    int64
	HealthCheck            Policy
}

// Settings returns c's handler-wide options with defaults where c leaves them unset. c should
// have passed Validate.
func (c *Config) Settings() Settings {
	s := Settings{
		Strategy:               c.Strategy,
		ThinkingFormat:         c.ThinkingFormat,
		ModelsCacheTTL:         DefaultModelsCacheTTL,
		MaxRequestBody:         c.MaxRequestBody,
		MaxFallbackHops:        DefaultMaxFallbackHops,
		StreamFirstByteTimeout: time.Duration(c.StreamFirstByteTimeout),
		StreamIdleTimeout:      time.Duration(c.StreamIdleTimeout),
		ResponseHeaderTimeout:  time.Duration(c.ResponseHeaderTimeout),
		MaxBufferedResponse:    c.MaxBufferedResponse,
		HealthCheck:            c.HealthCheck.Policy(),
	}
	if s.Strategy == "" {
		s.Strategy = StrategyRandom
	}
	if s.ThinkingFormat == "" {
		s.ThinkingFormat = ThinkingPassthrough
	}
	if c.ModelsCacheTTL != nil {
		s.ModelsCacheTTL = time.Duration(*c.ModelsCacheTTL)
	}
	if s.MaxRequestBody == 0 {
		s.MaxRequestBody = DefaultMaxRequestBody
	}
	if c.MaxFallbackHops != nil {
		s.MaxFallbackHops = *c.MaxFallbackHops
	}
	if s.StreamFirstByteTimeout == 0 {
		s.StreamFirstByteTimeout = DefaultStreamFirstByteTimeout
	}
	if s.StreamIdleTimeout == 0 {
		s.StreamIdleTimeout = DefaultStreamIdleTimeout
	}
	if s.ResponseHeaderTimeout == 0 {
		s.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if s.MaxBufferedResponse == 0 {
		s.MaxBufferedResponse = DefaultMaxBufferedResponse
	}
	// Answers are read up to one byte more than the bound.
	s.MaxBufferedResponse = min(s.MaxBufferedResponse, math.MaxInt64-1)
	return s
}

// Strategy names a client-ordering strategy.
type Strategy string

// Strategies.
const (
	StrategyRandom           Strategy = "random"
	StrategyDeterministic    Strategy = "deterministic"
	StrategyLeastConnections Strategy = "least_connections"
)

// Validate reports whether s names a known strategy; the empty string means the default.
func (s Strategy) Validate() error {
	switch s {
	case "", StrategyRandom, StrategyDeterministic, StrategyLeastConnections:
		return nil
	}
	return fmt.Errorf("unknown strategy %q (want random, deterministic or least_connections)", string(s))
}

// ThinkingFormat names a reasoning normalisation target.
type ThinkingFormat string

// Thinking formats.
const (
	ThinkingPassthrough      ThinkingFormat = "passthrough"
	ThinkingThinkTag         ThinkingFormat = "think_tag"
	ThinkingReasoning        ThinkingFormat = "reasoning"
	ThinkingReasoningContent ThinkingFormat = "reasoning_content"
)

// Validate reports whether f names a known format; the empty string means "inherit".
func (f ThinkingFormat) Validate() error {
	switch f {
	case "", ThinkingPassthrough, ThinkingThinkTag, ThinkingReasoning, ThinkingReasoningContent:
		return nil
	}
	return fmt.Errorf("unknown thinking_format %q (want passthrough, think_tag, reasoning or reasoning_content)", string(f))
}

// HealthCheck configures the passive breaker kept for every client.
type HealthCheck struct {
	// Disabled turns the breaker off: every client is always tried. Default: false.
	Disabled bool `json:"disabled,omitempty"`

	// FailureThreshold is the number of consecutive failed attempts that opens the breaker.
	// Default: 3.
	FailureThreshold int `json:"failure_threshold,omitempty"`

	// Cooldown is how long an open breaker stays open before one probe request is let through.
	// Default: 30s.
	Cooldown caddy.Duration `json:"cooldown,omitempty"`

	// MaxCooldown caps the cooldown as it grows after failed probes. Default: 5m.
	MaxCooldown caddy.Duration `json:"max_cooldown,omitempty"`

	// Backoff multiplies the cooldown after each failed probe. Values below 1 (negative ones
	// included) mean 1, in every config format; in JSON, 0 is the same as absent.
	// Default: 2.
	Backoff float64 `json:"backoff,omitempty"`
}

// Defaults of the breaker.
const (
	DefaultFailureThreshold = 3
	DefaultCooldown         = 30 * time.Second
	DefaultMaxCooldown      = 5 * time.Minute
	DefaultBackoff          = 2.0
)

// Policy is a HealthCheck with every default applied.
type Policy struct {
	Enabled          bool
	FailureThreshold int
	Cooldown         time.Duration
	MaxCooldown      time.Duration
	Backoff          float64
}

// Policy returns h with defaults applied; a nil HealthCheck gives the default policy.
func (h *HealthCheck) Policy() Policy {
	p := Policy{
		Enabled:          true,
		FailureThreshold: DefaultFailureThreshold,
		Cooldown:         DefaultCooldown,
		MaxCooldown:      DefaultMaxCooldown,
		Backoff:          DefaultBackoff,
	}
	if h == nil {
		return p
	}
	p.Enabled = !h.Disabled
	if h.FailureThreshold > 0 {
		p.FailureThreshold = h.FailureThreshold
	}
	if h.Cooldown > 0 {
		p.Cooldown = time.Duration(h.Cooldown)
	}
	if h.MaxCooldown > 0 {
		p.MaxCooldown = time.Duration(h.MaxCooldown)
	}
	if p.MaxCooldown < p.Cooldown {
		p.MaxCooldown = p.Cooldown
	}
	if h.Backoff != 0 {
		p.Backoff = h.Backoff
	}
	if !(p.Backoff >= 1) { // also catches NaN
		p.Backoff = 1
	}
	return p
}

// Validate rejects negative values.
func (h *HealthCheck) Validate() error {
	if h == nil {
		return nil
	}
	if h.FailureThreshold < 0 {
		return fmt.Errorf("health_check: failure_threshold must be >= 0, got %d", h.FailureThreshold)
	}
	if h.Cooldown < 0 || h.MaxCooldown < 0 {
		return fmt.Errorf("health_check: cooldown and max_cooldown must not be negative")
	}
	return nil
}

// Client is one upstream: where to send requests, which models it serves and how requests and
// responses are adjusted for it.
type Client struct {
	// Name identifies the client in headers, logs, metrics, the audit log and fallbacks. Required,
	// unique within a handler.
	Name string `json:"name"`

	// BaseURL is the upstream's OpenAI-style base, normally ending in /v1. The request path after
	// /v1 is appended to it. Required.
	BaseURL string `json:"base_url"`

	// APIKey is sent as "Authorization: Bearer <key>". When empty, the caller's own credentials
	// are passed through. Placeholders such as {env.OPENAI_API_KEY} are expanded at provision
	// time. Default: none.
	APIKey string `json:"api_key,omitempty"`

	// Match lists the rules selecting the models this client serves; a model matching any rule
	// makes the client a candidate. Required.
	Match []MatchRule `json:"match,omitempty"`

	// Priority is the client's weight (>= 0) for the random and deterministic strategies and the
	// divisor for least_connections; it is not a rank. Default: 0 (tried last).
	Priority int `json:"priority,omitempty"`

	// Fallback names a model (matched again) or, if no client matches it as a model, a client by
	// name, tried when every candidate for the request's model failed. Default: none.
	Fallback string `json:"fallback,omitempty"`

	// UpstreamModel replaces the request's model in what is sent to this client. Default: none.
	UpstreamModel string `json:"upstream_model,omitempty"`

	// SpecialPrefix is prepended to the response text (chat and completions). Default: none.
	SpecialPrefix string `json:"special_prefix,omitempty"`

	// Stop words put first in the request's stop list. Default: none.
	Stop []string `json:"stop,omitempty"`

	// MaxTokens caps the request's max_tokens. Zero means no cap. Default: 0.
	MaxTokens int `json:"max_tokens,omitempty"`

	// ExtraBody is a JSON object whose top-level keys are added to the request where it lacks
	// them. Default: none.
	ExtraBody json.RawMessage `json:"extra_body,omitempty"`

	// ThinkingFormat overrides the handler's thinking_format for this client. Default: inherit.
	ThinkingFormat ThinkingFormat `json:"thinking_format,omitempty"`

	// StripThink removes <think>…</think> blocks from assistant messages in chat history before
	// the request is sent. Default: true.
	StripThink *bool `json:"strip_think,omitempty"`

	// InjectUsage adds stream_options.include_usage to streaming chat and completion requests so
	// usage is always captured. Turn it off for servers that reject the option. Default: true.
	InjectUsage *bool `json:"inject_usage,omitempty"`

	// Headers are extra request headers sent to this upstream, replacing the caller's header of
	// the same name. Values may hold placeholders, expanded for each request
	// ({http.request.header.X-Team}, {http.request.remote.host}, {http.llm.model}, {env.X}…);
	// a value that expands to nothing, or to one no header may carry, is not sent.
	// Default: none.
	Headers map[string]string `json:"headers,omitempty"`

	// TransportRaw configures how requests reach the upstream, using Caddy's reverse_proxy
	// transport modules. Default: {"protocol":"http"} with Caddy's defaults, except that an http
	// transport without read_buffer_size reads through a 2 KiB buffer (net/http's is 4 KiB).
	TransportRaw json.RawMessage `json:"transport,omitempty" caddy:"namespace=http.reverse_proxy.transport inline_key=protocol"`
}

// StripsThink reports the effective strip_think setting.
func (c *Client) StripsThink() bool { return c.StripThink == nil || *c.StripThink }

// InjectsUsage reports the effective inject_usage setting.
func (c *Client) InjectsUsage() bool { return c.InjectUsage == nil || *c.InjectUsage }

// Validate checks the client on its own; uniqueness of names is checked by Config.Validate.
func (c *Client) Validate() error {
	if c.Name == "" {
		return fmt.Errorf("client without a name")
	}
	if err := CheckBaseURL(c.BaseURL); err != nil {
		return fmt.Errorf("client %s: %w", c.Name, err)
	}
	if len(c.Match) == 0 {
		return fmt.Errorf("client %s: at least one match rule is required", c.Name)
	}
	for i := range c.Match {
		if err := c.Match[i].Compile(); err != nil {
			return fmt.Errorf("client %s: %w", c.Name, err)
		}
	}
	if c.Priority < 0 {
		return fmt.Errorf("client %s: priority must be >= 0, got %d", c.Name, c.Priority)
	}
	if c.MaxTokens < 0 {
		return fmt.Errorf("client %s: max_tokens must be >= 0, got %d", c.Name, c.MaxTokens)
	}
	if len(c.ExtraBody) > 0 {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(c.ExtraBody, &obj); err != nil || obj == nil {
			return fmt.Errorf("client %s: extra_body must be a JSON object", c.Name)
		}
	}
	if err := c.ThinkingFormat.Validate(); err != nil {
		return fmt.Errorf("client %s: %w", c.Name, err)
	}
	return nil
}

// Validate checks every option and that client names are unique.
func (c *Config) Validate() error {
	if err := c.Strategy.Validate(); err != nil {
		return err
	}
	if err := c.ThinkingFormat.Validate(); err != nil {
		return err
	}
	if c.MaxRequestBody < 0 {
		return fmt.Errorf("max_request_body must not be negative")
	}
	if c.MaxFallbackHops != nil && *c.MaxFallbackHops < 0 {
		return fmt.Errorf("max_fallback_hops must not be negative")
	}
	if c.ModelsCacheTTL != nil && *c.ModelsCacheTTL < 0 {
		return fmt.Errorf("models_cache_ttl must not be negative")
	}
	if c.MaxBufferedResponse < 0 {
		return fmt.Errorf("max_buffered_response must not be negative")
	}
	if c.ResponseHeaderTimeout < 0 {
		return fmt.Errorf("response_header_timeout must not be negative")
	}
	if c.StreamFirstByteTimeout < 0 {
		return fmt.Errorf("stream_first_byte_timeout must not be negative")
	}
	if c.StreamIdleTimeout < 0 {
		return fmt.Errorf("stream_idle_timeout must not be negative")
	}
	if err := c.HealthCheck.Validate(); err != nil {
		return err
	}
	if c.Keys != nil {
		if err := c.Keys.Validate(); err != nil {
			return err
		}
	}
	for i := range c.Prices {
		if err := c.Prices[i].Check(); err != nil {
			return err
		}
	}
	names := make(ClientNames, len(c.Clients))
	for i, cl := range c.Clients {
		if cl == nil { // "clients": [null] in JSON
			return fmt.Errorf("client #%d is empty", i)
		}
		if err := cl.Validate(); err != nil {
			return err
		}
		if err := names.Add(cl.Name, i); err != nil {
			return err
		}
	}
	return nil
}

// ClientNames maps the client names of one config to their index. Adding through it is the one
// place the rule "client names are unique" lives: Config.Validate, NewTable and both parsers
// (which report the position of the second client) use it.
type ClientNames map[string]int

// Add records name as the name of client i, or reports that another client has it.
func (n ClientNames) Add(name string, i int) error {
	if _, dup := n[name]; dup {
		return fmt.Errorf("duplicate client name %q", name)
	}
	n[name] = i
	return nil
}

// CheckBaseURL checks a base_url as written in a config: it is required and must start with
// http:// or https://. A value holding a placeholder such as {env.UPSTREAM} passes; it is
// checked whole by ParseBaseURL once expanded. Config.Validate and both parsers use it.
func CheckBaseURL(s string) error {
	if s == "" {
		return fmt.Errorf("base_url is required")
	}
	if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") && !strings.Contains(s, "{") {
		return fmt.Errorf("base_url %q must start with http:// or https://", s)
	}
	return nil
}

// ParseBaseURL parses a base_url after placeholder expansion. It returns the URL without
// trailing slashes, as requests are built by appending a path to it, and that URL parsed.
func ParseBaseURL(expanded string) (string, *url.URL, error) {
	base := strings.TrimRight(expanded, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", nil, fmt.Errorf("invalid base_url %q", base)
	}
	return base, u, nil
}

// MatchType names how a rule compares model names.
type MatchType string

// Match types.
const (
	MatchKeyword MatchType = "keyword" // case-sensitive substring
	MatchExact   MatchType = "exact"   // equality
	MatchRegex   MatchType = "regex"   // Go RE2, unanchored
)

// MatchRule selects models by name.
type MatchRule struct {
	// Type is keyword (substring), exact (equality) or regex (RE2). Required.
	Type MatchType `json:"type"`

	// Values are the keywords, names or expressions; any one matching is enough. Required.
	Values []string `json:"values"`

	// A regex rule's compiled values: for each, either the fixed strings it stands for (see
	// analyzeRegex), compared without running a regex and indexed by Table, or else the regex.
	literals []regexLiterals
	regexps  []*regexp.Regexp // nil where literals[i] has a kind
}

// regexLiterals is a regex that matches exactly the names that equal, start with, end with or
// contain one of strs, according to kind; litNone for any other regex.
type regexLiterals struct {
	kind litKind
	strs []string
}

// matches reports whether model matches the regex l stands for; l.kind is not litNone.
func (l *regexLiterals) matches(model string) bool {
	for _, s := range l.strs {
		var ok bool
		switch l.kind {
		case litExact:
			ok = model == s
		case litPrefix:
			ok = strings.HasPrefix(model, s)
		case litSuffix:
			ok = strings.HasSuffix(model, s)
		case litSubstr:
			ok = strings.Contains(model, s)
		}
		if ok {
			return true
		}
	}
	return false
}

// Compile validates the rule and prepares its regular expressions. It is idempotent.
func (m *MatchRule) Compile() error {
	if len(m.Values) == 0 {
		return fmt.Errorf("match %s: no values", m.Type)
	}
	switch m.Type {
	case MatchKeyword, MatchExact:
		return nil
	case MatchRegex:
		if len(m.literals) == len(m.Values) {
			return nil
		}
		// Build into local slices so a failed Compile leaves no half-filled list behind that a
		// second call would mistake for a finished one.
		res := make([]*regexp.Regexp, len(m.Values))
		lits := make([]regexLiterals, len(m.Values))
		for i, v := range m.Values {
			re, err := regexp.Compile(v)
			if err != nil {
				return fmt.Errorf("match regex %q: %w", v, err)
			}
			// A regex that stands for fixed strings is compared as them; its compiled form,
			// some KiB, is not kept: configs of thousands of ^model-N$ rules exist.
			if lits[i].kind, lits[i].strs = analyzeRegex(v); lits[i].kind == litNone {
				res[i] = re
			}
		}
		m.regexps, m.literals = res, lits
		return nil
	}
	return fmt.Errorf("unknown match type %q (want keyword, exact or regex)", string(m.Type))
}

// Matches reports whether model satisfies the rule. Compile must have succeeded.
func (m *MatchRule) Matches(model string) bool {
	switch m.Type {
	case MatchKeyword:
		for _, v := range m.Values {
			if strings.Contains(model, v) {
				return true
			}
		}
	case MatchExact:
		for _, v := range m.Values {
			if model == v {
				return true
			}
		}
	case MatchRegex:
		for i, re := range m.regexps {
			if re != nil && re.MatchString(model) || re == nil && m.literals[i].matches(model) {
				return true
			}
		}
	}
	return false
}

// MatchesModel reports whether any of the client's rules match model.
func (c *Client) MatchesModel(model string) bool {
	for i := range c.Match {
		if c.Match[i].Matches(model) {
			return true
		}
	}
	return false
}
