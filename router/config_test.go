package router

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestConfigValidate(t *testing.T) {
	valid := func() *Client { return client("a", 1, keyword("gpt")) }
	neg := -1
	negDur := caddy.Duration(-1)
	tests := []struct {
		name string
		mod  func(c *Config)
		want string // "" means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"placeholder base_url", func(c *Config) { c.Clients[0].BaseURL = "{env.UPSTREAM}" }, ""},
		{"unknown strategy", func(c *Config) { c.Strategy = "round_robin" }, "unknown strategy"},
		{"unknown thinking format", func(c *Config) { c.ThinkingFormat = "xml" }, "unknown thinking_format"},
		{"negative body limit", func(c *Config) { c.MaxRequestBody = -1 }, "max_request_body"},
		{"negative hops", func(c *Config) { c.MaxFallbackHops = &neg }, "max_fallback_hops"},
		{"negative cache ttl", func(c *Config) { c.ModelsCacheTTL = &negDur }, "models_cache_ttl"},
		{"negative first byte timeout", func(c *Config) { c.StreamFirstByteTimeout = -1 }, "stream_first_byte_timeout"},
		{"negative threshold", func(c *Config) { c.HealthCheck = &HealthCheck{FailureThreshold: -1} }, "failure_threshold"},
		{"negative cooldown", func(c *Config) { c.HealthCheck = &HealthCheck{Cooldown: -1} }, "cooldown"},
		{"negative backoff means 1", func(c *Config) { c.HealthCheck = &HealthCheck{Backoff: -1} }, ""},
		{"null client", func(c *Config) { c.Clients = append(c.Clients, nil) }, "client #1 is empty"},
		{"duplicate name", func(c *Config) { c.Clients = append(c.Clients, valid()) }, `duplicate client name "a"`},
		{"no name", func(c *Config) { c.Clients[0].Name = "" }, "without a name"},
		{"no base_url", func(c *Config) { c.Clients[0].BaseURL = "" }, "base_url is required"},
		{"bad scheme", func(c *Config) { c.Clients[0].BaseURL = "ftp://x" }, "must start with http"},
		{"no match", func(c *Config) { c.Clients[0].Match = nil }, "match rule is required"},
		{"bad regex", func(c *Config) { c.Clients[0].Match = []MatchRule{regex("(")} }, "match regex"},
		{"negative priority", func(c *Config) { c.Clients[0].Priority = -1 }, "priority"},
		{"negative max_tokens", func(c *Config) { c.Clients[0].MaxTokens = -1 }, "max_tokens"},
		{"extra_body array", func(c *Config) { c.Clients[0].ExtraBody = json.RawMessage(`[1]`) }, "extra_body"},
		{"extra_body null", func(c *Config) { c.Clients[0].ExtraBody = json.RawMessage(`null`) }, "extra_body"},
		{"extra_body object", func(c *Config) { c.Clients[0].ExtraBody = json.RawMessage(`{"top_k":5}`) }, ""},
		{"client thinking format", func(c *Config) { c.Clients[0].ThinkingFormat = "xml" }, "client a: unknown thinking_format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Config{Clients: []*Client{valid()}}
			tt.mod(c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestClientDefaults(t *testing.T) {
	off := false
	c := &Client{}
	if !c.StripsThink() || !c.InjectsUsage() {
		t.Errorf("unset strip_think/inject_usage must default to true")
	}
	c.StripThink, c.InjectUsage = &off, &off
	if c.StripsThink() || c.InjectsUsage() {
		t.Errorf("explicit false ignored")
	}
}
