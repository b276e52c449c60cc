// Package router holds the gateway's configuration types and the pure routing logic built on
// them: model matching, the ordering strategies, the per-client breaker and the model-fallback
// plan. It knows nothing of HTTP plumbing; the handler feeds it model names and outcomes.
package router

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
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

	// ModelsCacheTTL is how long an aggregated /v1/models answer is cached per credential.
	// Zero disables the cache. Default: 10m.
	ModelsCacheTTL *caddy.Duration `json:"models_cache_ttl,omitempty"`

	// MaxRequestBody is the largest request body accepted, in bytes; larger bodies get 413.
	// Default: 32 MiB.
	MaxRequestBody int64 `json:"max_request_body,omitempty"`

	// MaxFallbackHops bounds how many model fallbacks one request may follow. Zero disables
	// model fallback. Default: 3.
	MaxFallbackHops *int `json:"max_fallback_hops,omitempty"`

	// StreamFirstByteTimeout is how long a streaming request waits for the upstream's response
	// headers before the attempt counts as failed and the next client is tried. Default: 60s.
	StreamFirstByteTimeout caddy.Duration `json:"stream_first_byte_timeout,omitempty"`

	// HealthCheck configures the passive per-client breaker. Default: enabled with the
	// defaults documented on HealthCheck.
	HealthCheck *HealthCheck `json:"health_check,omitempty"`

	// Clients are the upstreams, in config order.
	Clients []*Client `json:"clients,omitempty"`
}

// Defaults of the handler configuration.
const (
	DefaultMaxRequestBody         = 32 << 20
	DefaultMaxFallbackHops        = 3
	DefaultModelsCacheTTL         = 10 * time.Minute
	DefaultStreamFirstByteTimeout = 60 * time.Second
)

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
	// transport modules. Default: {"protocol":"http"} with Caddy's defaults.
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
	if c.BaseURL == "" {
		return fmt.Errorf("client %s: base_url is required", c.Name)
	}
	if !strings.HasPrefix(c.BaseURL, "http://") && !strings.HasPrefix(c.BaseURL, "https://") && !strings.Contains(c.BaseURL, "{") {
		return fmt.Errorf("client %s: base_url %q must start with http:// or https://", c.Name, c.BaseURL)
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
	if c.StreamFirstByteTimeout < 0 {
		return fmt.Errorf("stream_first_byte_timeout must not be negative")
	}
	if err := c.HealthCheck.Validate(); err != nil {
		return err
	}
	seen := make(map[string]bool, len(c.Clients))
	for i, cl := range c.Clients {
		if cl == nil { // "clients": [null] in JSON
			return fmt.Errorf("client #%d is empty", i)
		}
		if err := cl.Validate(); err != nil {
			return err
		}
		if seen[cl.Name] {
			return fmt.Errorf("duplicate client name %q", cl.Name)
		}
		seen[cl.Name] = true
	}
	return nil
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

	regexps []*regexp.Regexp
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
		if len(m.regexps) == len(m.Values) {
			return nil
		}
		// Build into a local slice so a failed Compile leaves no half-filled list behind that a
		// second call would mistake for a finished one.
		res := make([]*regexp.Regexp, len(m.Values))
		for i, v := range m.Values {
			re, err := regexp.Compile(v)
			if err != nil {
				return fmt.Errorf("match regex %q: %w", v, err)
			}
			res[i] = re
		}
		m.regexps = res
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
		for _, re := range m.regexps {
			if re.MatchString(model) {
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
