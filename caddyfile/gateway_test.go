package caddyfile_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	gwcaddyfile "github.com/llmgw/caddy-llm-gateway/caddyfile"
	"github.com/llmgw/caddy-llm-gateway/router"
)

// specGateway is the llm_gateway block of SPEC §2.1.
const specGateway = `llm_gateway {
	config           config/config.yaml
	strategy         random
	thinking_format  passthrough
	models_cache_ttl 10m
	max_request_body 32MiB
	max_fallback_hops 3
	stream_first_byte_timeout 60s
	stream_idle_timeout 5m
	access_log_filtered
	health_check {
		failure_threshold 3
		cooldown          30s
		max_cooldown      5m
		backoff           2
	}
	client primary_gpt4 {
		base_url        https://api.openai.com/v1
		api_key         {env.OPENAI_API_KEY}
		match           keyword gpt-4
		match           exact gpt-4o-mini o3
		priority        10
		fallback        gpt-4-backup
		upstream_model  gpt-4-0613
		special_prefix  "<think>\n"
		stop            "<|endoftext|>"
		max_tokens      4096
		extra_body      ` + "`{\"frequency_penalty\": 1}`" + `
		thinking_format reasoning
		strip_think     on
		inject_usage    off
		header          X-Org-Id acme
		transport http {
			dial_timeout 5s
			response_header_timeout 120s
		}
	}
}`

func TestUnmarshalGatewaySpecExample(t *testing.T) {
	var cfg router.Config
	if err := gwcaddyfile.UnmarshalGateway(caddyfile.NewTestDispenser(specGateway), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("parsed config does not validate: %v", err)
	}

	if cfg.Config != "config/config.yaml" || cfg.Strategy != router.StrategyRandom || cfg.ThinkingFormat != router.ThinkingPassthrough {
		t.Errorf("config/strategy/thinking_format = %q/%q/%q", cfg.Config, cfg.Strategy, cfg.ThinkingFormat)
	}
	if cfg.ModelsCacheTTL == nil || time.Duration(*cfg.ModelsCacheTTL) != 10*time.Minute {
		t.Errorf("models_cache_ttl = %v", cfg.ModelsCacheTTL)
	}
	if cfg.MaxRequestBody != 32<<20 {
		t.Errorf("max_request_body = %d", cfg.MaxRequestBody)
	}
	if cfg.MaxFallbackHops == nil || *cfg.MaxFallbackHops != 3 {
		t.Errorf("max_fallback_hops = %v", cfg.MaxFallbackHops)
	}
	if time.Duration(cfg.StreamFirstByteTimeout) != time.Minute {
		t.Errorf("stream_first_byte_timeout = %v", cfg.StreamFirstByteTimeout)
	}
	if time.Duration(cfg.StreamIdleTimeout) != 5*time.Minute {
		t.Errorf("stream_idle_timeout = %v", cfg.StreamIdleTimeout)
	}
	if !cfg.AccessLogFiltered {
		t.Error("access_log_filtered not set")
	}
	wantHC := router.HealthCheck{FailureThreshold: 3, Cooldown: caddy.Duration(30 * time.Second), MaxCooldown: caddy.Duration(5 * time.Minute), Backoff: 2}
	if cfg.HealthCheck == nil || *cfg.HealthCheck != wantHC {
		t.Errorf("health_check = %+v, want %+v", cfg.HealthCheck, wantHC)
	}

	if len(cfg.Clients) != 1 {
		t.Fatalf("got %d clients", len(cfg.Clients))
	}
	c := cfg.Clients[0]
	checks := []struct{ field, got, want string }{
		{"name", c.Name, "primary_gpt4"},
		{"base_url", c.BaseURL, "https://api.openai.com/v1"},
		{"api_key", c.APIKey, "{env.OPENAI_API_KEY}"},
		{"fallback", c.Fallback, "gpt-4-backup"},
		{"upstream_model", c.UpstreamModel, "gpt-4-0613"},
		{"special_prefix", c.SpecialPrefix, "<think>\n"},
		{"stop", strings.Join(c.Stop, "|"), "<|endoftext|>"},
		{"extra_body", string(c.ExtraBody), `{"frequency_penalty":1}`},
		{"thinking_format", string(c.ThinkingFormat), "reasoning"},
		{"header", c.Headers["X-Org-Id"], "acme"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.field, ch.got, ch.want)
		}
	}
	if c.Priority != 10 || c.MaxTokens != 4096 {
		t.Errorf("priority/max_tokens = %d/%d", c.Priority, c.MaxTokens)
	}
	if !c.StripsThink() || c.InjectsUsage() || c.StripThink == nil {
		t.Errorf("strip_think/inject_usage = %v/%v", c.StripThink, c.InjectUsage)
	}
	if len(c.Match) != 2 || c.Match[0].Type != router.MatchKeyword || c.Match[1].Type != router.MatchExact ||
		strings.Join(c.Match[1].Values, ",") != "gpt-4o-mini,o3" {
		t.Errorf("match = %+v", c.Match)
	}
	if !c.MatchesModel("gpt-4-turbo") || !c.MatchesModel("o3") || c.MatchesModel("o3-mini") {
		t.Error("match rules do not select the expected models")
	}

	var transport map[string]any
	if err := json.Unmarshal(c.TransportRaw, &transport); err != nil {
		t.Fatalf("transport %s: %v", c.TransportRaw, err)
	}
	if transport["protocol"] != "http" || transport["dial_timeout"] != float64(5*time.Second) ||
		transport["response_header_timeout"] != float64(120*time.Second) {
		t.Errorf("transport = %s", c.TransportRaw)
	}
}

func TestUnmarshalGatewayValues(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		check func(*router.Config) bool
	}{
		{"empty block", `llm_gateway`, func(c *router.Config) bool {
			return c.Strategy == "" && c.HealthCheck == nil && len(c.Clients) == 0
		}},
		{"models cache disabled", gw(`models_cache_ttl 0`), func(c *router.Config) bool {
			return c.ModelsCacheTTL != nil && *c.ModelsCacheTTL == 0
		}},
		{"plain byte count", gw(`max_request_body 1024`), func(c *router.Config) bool { return c.MaxRequestBody == 1024 }},
		{"SI size", gw(`max_request_body 10MB`), func(c *router.Config) bool { return c.MaxRequestBody == 10_000_000 }},
		{"buffered response size", gw(`max_buffered_response 64KiB`), func(c *router.Config) bool { return c.MaxBufferedResponse == 64<<10 }},
		{"response header timeout", gw(`response_header_timeout 15m`), func(c *router.Config) bool {
			return time.Duration(c.ResponseHeaderTimeout) == 15*time.Minute
		}},
		{"no fallback", gw(`max_fallback_hops 0`), func(c *router.Config) bool {
			return c.MaxFallbackHops != nil && *c.MaxFallbackHops == 0
		}},
		{"day duration", gw(`models_cache_ttl 1d`), func(c *router.Config) bool {
			return time.Duration(*c.ModelsCacheTTL) == 24*time.Hour
		}},
		{"breaker disabled", gw(hc(`disabled`)), func(c *router.Config) bool {
			return c.HealthCheck.Disabled && !c.HealthCheck.Policy().Enabled
		}},
		{"breaker enabled off then on", gw(hc("enabled off\nenabled on")), func(c *router.Config) bool { return !c.HealthCheck.Disabled }},
		{"fractional backoff", gw(hc(`backoff 1.5`)), func(c *router.Config) bool { return c.HealthCheck.Backoff == 1.5 }},
		// Below 1 means 1, as in JSON and YAML; 0 too (in HealthCheck 0 would be the default 2).
		{"backoff below one", gw(hc(`backoff 0.5`)), func(c *router.Config) bool { return c.HealthCheck.Backoff == 1 }},
		{"backoff zero", gw(hc(`backoff 0`)), func(c *router.Config) bool { return c.HealthCheck.Policy().Backoff == 1 }},
		{"backoff negative", gw(hc(`backoff -2`)), func(c *router.Config) bool { return c.HealthCheck.Backoff == 1 }},
		{"backoff NaN", gw(hc(`backoff NaN`)), func(c *router.Config) bool { return c.HealthCheck.Backoff == 1 }},
		{"backoff Inf", gw(hc(`backoff +Inf`)), func(c *router.Config) bool { return c.HealthCheck.Backoff == 1 }},
		{"backoff out of range", gw(hc(`backoff 1e999`)), func(c *router.Config) bool { return c.HealthCheck.Backoff == 1 }},
		{"stop appends and unescapes", `llm_gateway {
client a {
			base_url http://h/v1
			match regex ^gpt-[0-9]+$
			stop "\n\n" x
			stop "a\\nb" "\q"
		}
}`, func(c *router.Config) bool {
			s := c.Clients[0].Stop
			return len(s) == 4 && s[0] == "\n\n" && s[1] == "x" && s[2] == `a\nb` && s[3] == `\q`
		}},
		{"regex compiled", `llm_gateway {
client a {
			base_url http://h/v1
			match regex ^gpt-[0-9]+$
		}
}`, func(c *router.Config) bool {
			return c.Clients[0].MatchesModel("gpt-4") && !c.Clients[0].MatchesModel("gpt-4o")
		}},
		{"headers and placeholder base", `llm_gateway {
client a {
			base_url {env.BASE}
			match exact m
			header X-A 1
			header X-B "two words"
		}
}`, func(c *router.Config) bool {
			h := c.Clients[0].Headers
			return c.Clients[0].BaseURL == "{env.BASE}" && len(h) == 2 && h["X-A"] == "1" && h["X-B"] == "two words"
		}},
		{"clients in order", `llm_gateway {
			client b {
				base_url http://b/v1
				match exact m
			}
			client a {
				base_url http://a/v1
				match exact m
			}
		}`, func(c *router.Config) bool {
			return len(c.Clients) == 2 && c.Clients[0].Name == "b" && c.Clients[1].Name == "a"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg router.Config
			if err := gwcaddyfile.UnmarshalGateway(caddyfile.NewTestDispenser(tc.input), &cfg); err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("does not validate: %v", err)
			}
			if !tc.check(&cfg) {
				out, _ := json.Marshal(cfg)
				t.Errorf("unexpected config: %s", out)
			}
		})
	}
}

// TestUnmarshalGatewayErrors has one row per error branch of the parser.
func TestUnmarshalGatewayErrors(t *testing.T) {
	for _, tc := range []struct {
		name, input, want string
	}{
		{"directive argument", `llm_gateway foo`, "wrong argument count"},
		{"unknown option", gw(`bogus 1`), `unrecognized llm_gateway option "bogus"`},
		{"config without path", gw(`config`), "wrong argument count"},
		{"config two paths", gw(`config a b`), "wrong argument count"},
		{"bad strategy", gw(`strategy fastest`), `unknown strategy "fastest"`},
		{"bad thinking_format", gw(`thinking_format xml`), `unknown thinking_format "xml"`},
		{"bad ttl", gw(`models_cache_ttl soon`), `invalid models_cache_ttl "soon"`},
		{"negative ttl", gw(`models_cache_ttl -1s`), `invalid models_cache_ttl "-1s": must not be negative`},
		{"bad body size", gw(`max_request_body lots`), `invalid max_request_body "lots"`},
		{"zero body size", gw(`max_request_body 0`), "out of range"},
		{"huge body size", gw(`max_request_body 9EiB`), "out of range"},
		{"bad buffered response size", gw(`max_buffered_response lots`), `invalid max_buffered_response "lots"`},
		{"zero buffered response size", gw(`max_buffered_response 0`), "out of range"},
		{"huge buffered response size", gw(`max_buffered_response 9EiB`), "out of range"},
		{"buffered response size twice", gw(`max_buffered_response 1MiB 2MiB`), "wrong argument count"},
		{"bad response header timeout", gw(`response_header_timeout soon`), `invalid response_header_timeout "soon"`},
		{"zero response header timeout", gw(`response_header_timeout 0`), "must be positive"},
		{"response header timeout without value", gw(`response_header_timeout`), "wrong argument count"},
		{"bad hops", gw(`max_fallback_hops many`), `invalid max_fallback_hops "many": want an integer`},
		{"negative hops", gw(`max_fallback_hops -1`), "must be >= 0"},
		{"zero first byte timeout", gw(`stream_first_byte_timeout 0`), "must be positive"},
		{"zero idle timeout", gw(`stream_idle_timeout 0`), "must be positive"},
		{"bad idle timeout", gw(`stream_idle_timeout forever`), `invalid stream_idle_timeout "forever"`},
		{"idle timeout without value", gw(`stream_idle_timeout`), "wrong argument count"},
		{"access_log_filtered with a value", gw(`access_log_filtered yes`), "wrong argument count"},
		{"health_check argument", gw(`health_check on`), "wrong argument count"},
		{"health_check unknown", gw(hc(`threshold 3`)), `unrecognized health_check option "threshold"`},
		{"zero threshold", gw(hc(`failure_threshold 0`)), "must be >= 1"},
		{"bad cooldown", gw(hc(`cooldown 5`)), `invalid cooldown "5"`},
		{"max_cooldown missing", gw(hc(`max_cooldown`)), "wrong argument count"},
		{"backoff not a number", gw(hc(`backoff fast`)), `invalid backoff "fast": want a number`},
		{"enabled maybe", gw(hc(`enabled maybe`)), `invalid enabled "maybe": want on or off`},
		{"disabled argument", gw(hc(`disabled yes`)), "wrong argument count"},
		{"client without name", gw(`client`), "client needs a name"},
		{"client two names", gw(`client a b`), "wrong argument count"},
		{"client unknown option", client("weight 3"), `unrecognized client option "weight"`},
		{"base_url scheme", `llm_gateway {
client c {
			base_url ftp://h
			match exact m
		}
}`, `base_url "ftp://h" must start with http:// or https://`},
		{"base_url missing", `llm_gateway {
client c {
			match exact m
		}
}`, "client c: base_url is required"},
		{"match missing", `llm_gateway {
client c {
			base_url http://h/v1
		}
}`, "client c: at least one match rule is required"},
		{"match without arguments", client("match"), "wrong argument count"},
		{"match without values", client("match keyword"), "match keyword needs at least one value"},
		{"match bad type", client("match prefix gpt"), `unknown match type "prefix"`},
		{"match bad regex", client("match regex gpt-(4"), "match regex \"gpt-(4\""},
		{"negative priority", client("priority -1"), "invalid priority -1: must be >= 0"},
		{"priority not a number", client("priority high"), `invalid priority "high"`},
		{"bad max_tokens", client("max_tokens 1e3"), `invalid max_tokens "1e3"`},
		{"fallback missing", client("fallback"), "wrong argument count"},
		{"upstream_model two", client("upstream_model a b"), "wrong argument count"},
		{"special_prefix missing", client("special_prefix"), "wrong argument count"},
		{"api_key missing", client("api_key"), "wrong argument count"},
		{"stop without words", client("stop"), "wrong argument count"},
		{"extra_body missing", client("extra_body"), "wrong argument count"},
		{"extra_body invalid", client("extra_body `{\"a\":`"), "extra_body: invalid JSON"},
		{"extra_body array", client("extra_body `[1]`"), "extra_body: not a JSON object"},
		{"extra_body null", client("extra_body null"), "extra_body: not a JSON object"},
		{"extra_body unquoted", client(`extra_body {"a": 1}`), "quote it with backticks"},
		{"client thinking_format", client("thinking_format none"), `unknown thinking_format "none"`},
		{"strip_think yes", client("strip_think yes"), `invalid strip_think "yes": want on or off`},
		{"inject_usage missing", client("inject_usage"), "wrong argument count"},
		{"header one argument", client("header X-A"), "wrong argument count"},
		{"header three arguments", client("header X-A b c"), "wrong argument count"},
		{"header twice", client("header X-A 1\n header x-a 2"), `header "x-a" set twice`},
		{"transport without module", client("transport"), "wrong argument count"},
		{"transport unknown module", client("transport carrier-pigeon"), "getting module named 'http.reverse_proxy.transport.carrier-pigeon'"},
		{"transport twice", client("transport http\n transport http"), "transport already specified"},
		{"transport bad option", client("transport http {\n warp_speed 9\n }"), "warp_speed"},
		{"duplicate client", `llm_gateway {
			client c {
				base_url http://h/v1
				match exact m
			}
			client c {
				base_url http://h2/v1
				match exact m
			}
		}`, `duplicate client name "c"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg router.Config
			err := gwcaddyfile.UnmarshalGateway(caddyfile.NewTestDispenser(tc.input), &cfg)
			if err == nil {
				t.Fatalf("no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "Testfile:") {
				t.Errorf("error %q does not name the file and line", err)
			}
		})
	}
}

// TestUnmarshalGatewayExistingClients checks that names already in the config count for the
// duplicate check, so a handler can parse into a config that holds clients already.
func TestUnmarshalGatewayExistingClients(t *testing.T) {
	cfg := router.Config{Clients: []*router.Client{{Name: "c"}}}
	err := gwcaddyfile.UnmarshalGateway(caddyfile.NewTestDispenser(`llm_gateway {
client c {
		base_url http://h/v1
		match exact m
	}
}`), &cfg)
	if err == nil || !strings.Contains(err.Error(), `duplicate client name "c"`) {
		t.Fatalf("err = %v, want a duplicate name error", err)
	}
}

// TestUnmarshalGatewayPositioned checks both entry states: a fresh dispenser and one already on
// the directive name, as httpcaddyfile hands it over.
func TestUnmarshalGatewayPositioned(t *testing.T) {
	d := caddyfile.NewTestDispenser(gw(`strategy deterministic`))
	d.Next()
	var cfg router.Config
	if err := gwcaddyfile.UnmarshalGateway(d, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Strategy != router.StrategyDeterministic {
		t.Errorf("strategy = %q", cfg.Strategy)
	}
}

// gw wraps options in an llm_gateway block.
func gw(body string) string { return "llm_gateway {\n" + body + "\n}" }

// hc wraps options in a health_check block.
func hc(body string) string { return "health_check {\n" + body + "\n}" }

// client wraps options in an llm_gateway block with one otherwise valid client.
func client(body string) string {
	return gw("client c {\nbase_url http://h/v1\nmatch exact m\n" + body + "\n}")
}
