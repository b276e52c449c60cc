package router

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

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
		{"negative buffered response", func(c *Config) { c.MaxBufferedResponse = -1 }, "max_buffered_response"},
		{"negative response header timeout", func(c *Config) { c.ResponseHeaderTimeout = -1 }, "response_header_timeout"},
		{"negative first byte timeout", func(c *Config) { c.StreamFirstByteTimeout = -1 }, "stream_first_byte_timeout"},
		{"negative idle timeout", func(c *Config) { c.StreamIdleTimeout = -1 }, "stream_idle_timeout"},
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

func TestConfigSettings(t *testing.T) {
	zero, two := 0, 2
	ttl := caddy.Duration(time.Minute)
	noTTL := caddy.Duration(0)
	defaults := Settings{
		Strategy:               StrategyRandom,
		ThinkingFormat:         ThinkingPassthrough,
		ModelsCacheTTL:         DefaultModelsCacheTTL,
		MaxRequestBody:         DefaultMaxRequestBody,
		MaxFallbackHops:        DefaultMaxFallbackHops,
		StreamFirstByteTimeout: DefaultStreamFirstByteTimeout,
		StreamIdleTimeout:      DefaultStreamIdleTimeout,
		ResponseHeaderTimeout:  DefaultResponseHeaderTimeout,
		MaxBufferedResponse:    DefaultMaxBufferedResponse,
		HealthCheck:            (*HealthCheck)(nil).Policy(),
	}
	tests := []struct {
		name string
		cfg  Config
		want func(s *Settings)
	}{
		{"empty", Config{}, func(*Settings) {}},
		{"set", Config{
			Strategy:               StrategyLeastConnections,
			ThinkingFormat:         ThinkingThinkTag,
			ModelsCacheTTL:         &ttl,
			MaxRequestBody:         1024,
			MaxFallbackHops:        &two,
			StreamFirstByteTimeout: caddy.Duration(5 * time.Second),
			StreamIdleTimeout:      caddy.Duration(time.Minute),
			ResponseHeaderTimeout:  caddy.Duration(2 * time.Minute),
			MaxBufferedResponse:    1 << 20,
			HealthCheck:            &HealthCheck{FailureThreshold: 7},
		}, func(s *Settings) {
			s.Strategy = StrategyLeastConnections
			s.ThinkingFormat = ThinkingThinkTag
			s.ModelsCacheTTL = time.Minute
			s.MaxRequestBody = 1024
			s.MaxFallbackHops = 2
			s.StreamFirstByteTimeout = 5 * time.Second
			s.StreamIdleTimeout = time.Minute
			s.ResponseHeaderTimeout = 2 * time.Minute
			s.MaxBufferedResponse = 1 << 20
			s.HealthCheck.FailureThreshold = 7
		}},
		// Pointers distinguish "0 = off" from "unset = default".
		{"explicit zeros", Config{ModelsCacheTTL: &noTTL, MaxFallbackHops: &zero}, func(s *Settings) {
			s.ModelsCacheTTL = 0
			s.MaxFallbackHops = 0
		}},
		{"health check disabled", Config{HealthCheck: &HealthCheck{Disabled: true}}, func(s *Settings) {
			s.HealthCheck.Enabled = false
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := defaults
			tt.want(&want)
			if got := tt.cfg.Settings(); got != want {
				t.Errorf("Settings() = %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestBaseURL(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // error substring; "" means valid
	}{
		{"http://h/v1", ""},
		{"https://h/v1/", ""},
		{"{env.UPSTREAM}/v1", ""}, // checked after expansion
		{"", "base_url is required"},
		{"ftp://h", `base_url "ftp://h" must start with http:// or https://`},
		{"h/v1", "must start with"},
	} {
		err := CheckBaseURL(tt.in)
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("CheckBaseURL(%q) = %v, want %q", tt.in, err, tt.want)
		}
	}
	for _, tt := range []struct {
		in, base string // base "" means an error
	}{
		{"http://h:8080/v1", "http://h:8080/v1"},
		{"https://h/v1//", "https://h/v1"},
		{"http:///v1", ""},   // no host
		{"ftp://h/v1", ""},   // placeholder expanded to another scheme
		{"http://h/%zz", ""}, // unparsable
		{"/v1", ""},          // placeholder expanded to nothing
	} {
		base, u, err := ParseBaseURL(tt.in)
		switch {
		case tt.base == "" && err == nil:
			t.Errorf("ParseBaseURL(%q) = %q, want an error", tt.in, base)
		case tt.base != "" && (err != nil || base != tt.base || u.String() != tt.base):
			t.Errorf("ParseBaseURL(%q) = %q, %v, %v; want %q", tt.in, base, u, err, tt.base)
		case err != nil && !strings.Contains(err.Error(), "invalid base_url"):
			t.Errorf("ParseBaseURL(%q) error %q", tt.in, err)
		}
	}
}

func TestClientNames(t *testing.T) {
	n := make(ClientNames)
	if err := n.Add("a", 0); err != nil {
		t.Fatal(err)
	}
	if err := n.Add("b", 1); err != nil {
		t.Fatal(err)
	}
	if err := n.Add("a", 2); err == nil || err.Error() != `duplicate client name "a"` {
		t.Errorf("second a: %v", err)
	}
	if n["a"] != 0 || n["b"] != 1 {
		t.Errorf("names = %v", n)
	}
}
