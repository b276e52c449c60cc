package caddyfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	gwcaddyfile "github.com/llmgw/caddy-llm-gateway/caddyfile"
	"github.com/llmgw/caddy-llm-gateway/router"
)

// originYAML is the example of SPEC §2.2, as written for the origin system.
const originYAML = `load_balancing: {strategy: deterministic}        # optional
thinking_format: passthrough                     # optional
models_cache: {ttl_seconds: 600}                 # optional; 0 disables
health_check: {enabled: true, failure_threshold: 3, cooldown_seconds: 30,
               max_cooldown_seconds: 300, backoff_multiplier: 2.0}
openai_clients:
  - name: primary
    base_url: https://host/v1
    api_key: "sk-..."          # empty or absent: pass the caller's key through (2.4)
    model_match: {type: keyword, value: ["gpt-4"]}
    priority: 10
    fallback: other-model
    special_prefix: "<think>"
    stop: ["<|endoftext|>"]
    max_tokens: 4096
    extra_body: '{"frequency_penalty":1}'   # a JSON string, or a YAML mapping
    thinking_format: reasoning
    headers: {X-Org-Id: acme}               # documented by the origin, never built there: build it
  - name: local
    base_url: "http://127.0.0.1:8080/v1"
    model_match:
      type: exact
      value:
        - qwen
        - llama
`

func noEnv(string) string { return "" }

func TestParseYAMLOrigin(t *testing.T) {
	cfg, warnings, err := gwcaddyfile.ParseYAML([]byte(originYAML), "config.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("unexpected warnings: %q", warnings)
	}
	if cfg.Strategy != router.StrategyDeterministic || cfg.ThinkingFormat != router.ThinkingPassthrough {
		t.Errorf("strategy/thinking_format = %q/%q", cfg.Strategy, cfg.ThinkingFormat)
	}
	if cfg.ModelsCacheTTL == nil || time.Duration(*cfg.ModelsCacheTTL) != 10*time.Minute {
		t.Errorf("models_cache_ttl = %v", cfg.ModelsCacheTTL)
	}
	wantHC := router.HealthCheck{FailureThreshold: 3, Cooldown: caddy.Duration(30 * time.Second), MaxCooldown: caddy.Duration(5 * time.Minute), Backoff: 2}
	if cfg.HealthCheck == nil || *cfg.HealthCheck != wantHC {
		t.Errorf("health_check = %+v, want %+v", cfg.HealthCheck, wantHC)
	}
	if len(cfg.Clients) != 2 {
		t.Fatalf("got %d clients", len(cfg.Clients))
	}
	c := cfg.Clients[0]
	checks := []struct{ field, got, want string }{
		{"name", c.Name, "primary"},
		{"base_url", c.BaseURL, "https://host/v1"},
		{"api_key", c.APIKey, "sk-..."},
		{"fallback", c.Fallback, "other-model"},
		{"special_prefix", c.SpecialPrefix, "<think>"},
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
	if c.StripThink != nil || c.InjectUsage != nil || c.UpstreamModel != "" {
		t.Error("extensions set although the file has none")
	}
	if !c.MatchesModel("gpt-4o") || c.MatchesModel("gpt-3.5") {
		t.Error("keyword rule does not select the expected models")
	}
	local := cfg.Clients[1]
	if local.Name != "local" || len(local.Match) != 1 || !slices.Equal(local.Match[0].Values, []string{"qwen", "llama"}) {
		t.Errorf("second client = %+v", local)
	}
}

func TestParseYAMLExtensions(t *testing.T) {
	const doc = `openai_clients:
  - name: ext
    base_url: http://h/v1
    upstream_model: gpt-4-0613
    strip_think: false
    inject_usage: false
    stop: "\n\n"
    model_match:
      - {type: regex, value: "^gpt-[0-9]+$"}
      - {type: exact, value: o3}
    extra_body:
      temperature: 0.5
      n: 2
      chat_template_kwargs: {enable_thinking: false}
      tags: [a, "${TAG}"]
      seed: null
`
	cfg, warnings, err := gwcaddyfile.ParseYAML([]byte(doc), "ext.yaml", env(map[string]string{"TAG": "b"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("unexpected warnings: %q", warnings)
	}
	c := cfg.Clients[0]
	if c.UpstreamModel != "gpt-4-0613" || c.StripsThink() || c.InjectsUsage() {
		t.Errorf("upstream_model/strip_think/inject_usage = %q/%v/%v", c.UpstreamModel, c.StripsThink(), c.InjectsUsage())
	}
	if !slices.Equal(c.Stop, []string{"\n\n"}) {
		t.Errorf("stop = %q", c.Stop)
	}
	if len(c.Match) != 2 || c.Match[0].Type != router.MatchRegex || c.Match[1].Type != router.MatchExact {
		t.Fatalf("match = %+v", c.Match)
	}
	for model, want := range map[string]bool{"gpt-4": true, "o3": true, "gpt-4o": false, "o3-mini": false} {
		if got := c.MatchesModel(model); got != want {
			t.Errorf("MatchesModel(%q) = %v, want %v", model, got, want)
		}
	}
	// Mapping order is kept, nested values and env expansion too.
	want := `{"temperature":0.5,"n":2,"chat_template_kwargs":{"enable_thinking":false},"tags":["a","b"],"seed":null}`
	if string(c.ExtraBody) != want {
		t.Errorf("extra_body = %s\nwant        %s", c.ExtraBody, want)
	}
}

func TestParseYAMLGlobals(t *testing.T) {
	const clients = "openai_clients: []\n"
	for _, tc := range []struct {
		name, doc string
		check     func(*router.Config) bool
	}{
		{"absent globals stay unset", clients, func(c *router.Config) bool {
			return c.Strategy == "" && c.ThinkingFormat == "" && c.ModelsCacheTTL == nil && c.HealthCheck == nil
		}},
		{"cache disabled", "models_cache: {ttl_seconds: 0}\n" + clients, func(c *router.Config) bool {
			return c.ModelsCacheTTL != nil && *c.ModelsCacheTTL == 0
		}},
		{"breaker disabled", "health_check: {enabled: false}\n" + clients, func(c *router.Config) bool {
			return c.HealthCheck.Disabled && !c.HealthCheck.Policy().Enabled
		}},
		{"origin normalisation", "health_check: {failure_threshold: 0, backoff_multiplier: 0.5}\n" + clients, func(c *router.Config) bool {
			p := c.HealthCheck.Policy()
			return p.Enabled && p.FailureThreshold == 1 && p.Backoff == 1
		}},
		{"infinite backoff", "health_check: {backoff_multiplier: .inf}\n" + clients, func(c *router.Config) bool {
			return c.HealthCheck.Backoff == 1
		}},
		{"integer backoff", "health_check: {backoff_multiplier: 3}\n" + clients, func(c *router.Config) bool {
			return c.HealthCheck.Backoff == 3
		}},
		{"nulls are absent", "load_balancing:\nthinking_format: ~\n" + clients, func(c *router.Config) bool {
			return c.Strategy == "" && c.ThinkingFormat == ""
		}},
		{"least connections", "load_balancing: {strategy: least_connections}\n" + clients, func(c *router.Config) bool {
			return c.Strategy == router.StrategyLeastConnections
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := gwcaddyfile.ParseYAML([]byte(tc.doc), "g.yaml", noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(cfg) {
				t.Errorf("unexpected config %+v (health_check %+v)", cfg, cfg.HealthCheck)
			}
		})
	}
}

func TestParseYAMLEnv(t *testing.T) {
	const doc = `openai_clients:
  - name: e
    base_url: ${BASE}/v1
    api_key: "${KEY}"
    model_match: {type: exact, value: ["${MODEL}", "$${MODEL}", "$MODEL", "${not-a-name}", "${UNCLOSED"]}
    headers: {X-Team: "team-${MISSING}"}
`
	getenv := env(map[string]string{"BASE": "https://api.example", "KEY": "sk-1", "MODEL": "m"})
	cfg, warnings, err := gwcaddyfile.ParseYAML([]byte(doc), "env.yaml", getenv)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Clients[0]
	if c.BaseURL != "https://api.example/v1" || c.APIKey != "sk-1" || c.Headers["X-Team"] != "team-" {
		t.Errorf("base_url/api_key/header = %q/%q/%q", c.BaseURL, c.APIKey, c.Headers["X-Team"])
	}
	wantValues := []string{"m", "${MODEL}", "$MODEL", "${not-a-name}", "${UNCLOSED"}
	if !slices.Equal(c.Match[0].Values, wantValues) {
		t.Errorf("values = %q, want %q", c.Match[0].Values, wantValues)
	}
	wantWarnings := []string{`env.yaml:6: ${MISSING} is empty or not set; expanded to ""`}
	if !slices.Equal(warnings, wantWarnings) {
		t.Errorf("warnings = %q, want %q", warnings, wantWarnings)
	}
}

func TestParseYAMLWarnings(t *testing.T) {
	const doc = `load_balancing: {strategy: random, sticky: true}
check_config: {enabled: true}
openai_clients:
  - name: a
    base_url: http://a/v1
    model_match: {type: exact, value: [m], case: insensitive}
  - name: b
    base_url: http://b/v1
    heders: {X-A: "1"}
    model_match:
      - {type: exact, value: [m]}
      - {type: prefix, value: [m]}
    extra_body: '[1, 2]'
  - name: c
    base_url: http://c/v1
    model_match: {type: keyword, value: []}
  - name: d
    base_url: http://d/v1
    model_match: {type: exact, value: [m]}
    extra_body: "   "
`
	cfg, warnings, err := gwcaddyfile.ParseYAML([]byte(doc), "config.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"config.yaml:1: unknown key load_balancing.sticky (ignored)",
		"config.yaml:2: unknown key check_config (ignored)",
		"config.yaml:6: unknown key openai_clients[0].model_match.case (ignored)",
		"config.yaml:9: unknown key openai_clients[1].heders (ignored)",
		`config.yaml:12: openai_clients[1].model_match[1]: unknown match type "prefix" never matches (want keyword, exact or regex); rule dropped`,
		"config.yaml:13: openai_clients[1].extra_body: not a valid JSON object (not a JSON object), skipping",
		"config.yaml:16: openai_clients[2].model_match: rule without values never matches; rule dropped",
		`config.yaml:14: openai_clients[2]: client "c" has no usable model_match rule and never matches; skipped`,
	}
	if !slices.Equal(warnings, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warnings, "\n"), strings.Join(want, "\n"))
	}
	var names []string
	for _, c := range cfg.Clients {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"a", "b", "d"}) {
		t.Errorf("clients = %q, want a, b, d", names)
	}
	if b := cfg.Clients[1]; len(b.Match) != 1 || b.ExtraBody != nil || b.Headers != nil {
		t.Errorf("client b = %+v", b)
	}
	if d := cfg.Clients[2]; d.ExtraBody != nil {
		t.Errorf("blank extra_body kept: %q", d.ExtraBody)
	}
}

func TestParseYAMLErrors(t *testing.T) {
	const head = "openai_clients:\n  - name: a\n    base_url: http://a/v1\n    model_match: {type: exact, value: [m]}\n"
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"syntax", "a: b\nc: d: e\n", "f.yaml:2: mapping values are not allowed in this context"},
		{"tab indentation", "openai_clients:\n\t- name: a\n", "f.yaml:2: found character that cannot start any token"},
		{"empty file", "", "f.yaml: openai_clients is required"},
		{"comments only", "# nothing\n", "f.yaml: openai_clients is required"},
		{"clients missing", "thinking_format: reasoning\n", "f.yaml:1: openai_clients is required"},
		{"top level list", "- a\n", "f.yaml:1: top level: want a mapping, got a list"},
		{"clients not a list", "openai_clients: {name: a}\n", "f.yaml:1: openai_clients: want a list of clients, got a mapping"},
		{"client not a mapping", "openai_clients: [a]\n", `f.yaml:1: openai_clients[0]: want a mapping, got "a"`},
		{"bad strategy", "load_balancing: {strategy: fastest}\n" + head, `f.yaml:1: load_balancing.strategy: unknown strategy "fastest"`},
		{"load_balancing scalar", "load_balancing: random\n" + head, `f.yaml:1: load_balancing: want a mapping, got "random"`},
		{"bad thinking_format", "thinking_format: xml\n" + head, `f.yaml:1: thinking_format: unknown thinking_format "xml"`},
		{"ttl string", "models_cache: {ttl_seconds: 10m}\n" + head, `f.yaml:1: models_cache.ttl_seconds: want a whole number of seconds >= 0, got "10m"`},
		{"ttl negative", "models_cache: {ttl_seconds: -1}\n" + head, "models_cache.ttl_seconds: want a whole number of seconds >= 0"},
		{"enabled string", "health_check: {enabled: yes}\n" + head, `f.yaml:1: health_check.enabled: want true or false, got "yes"`},
		{"threshold negative", "health_check: {failure_threshold: -3}\n" + head, "f.yaml:1: health_check.failure_threshold: want an integer from 0 to 4294967295"},
		{"cooldown float", "health_check: {cooldown_seconds: 1.5}\n" + head, "health_check.cooldown_seconds: want a whole number of seconds"},
		{"backoff string", "health_check: {backoff_multiplier: fast}\n" + head, `health_check.backoff_multiplier: want a number, got "fast"`},
		{"duplicate key", head + "    priority: 1\n    priority: 2\n", "f.yaml:6: openai_clients[0].priority: duplicate key"},
		{"api_key from an unset variable", head + "    api_key: ${UNSET_KEY}\n", `f.yaml:5: openai_clients[0].api_key: "${UNSET_KEY}" expands to an empty key`},
		{"name missing", "openai_clients:\n  - base_url: http://a/v1\n    model_match: {type: exact, value: [m]}\n", "f.yaml:2: openai_clients[0]: name is required"},
		{"name is a list", "openai_clients:\n  - name: [a]\n", "f.yaml:2: openai_clients[0].name: want a string, got a list"},
		{"base_url missing", "openai_clients:\n  - name: a\n    model_match: {type: exact, value: [m]}\n", "f.yaml:2: openai_clients[0]: base_url is required"},
		{"base_url scheme", "openai_clients:\n  - name: a\n    base_url: host/v1\n    model_match: {type: exact, value: [m]}\n", `f.yaml:2: openai_clients[0]: base_url "host/v1" must start with http:// or https://`},
		{"model_match missing", "openai_clients:\n  - name: a\n    base_url: http://a/v1\n", "f.yaml:2: openai_clients[0]: model_match is required"},
		{"model_match scalar", "openai_clients:\n  - name: a\n    base_url: http://a/v1\n    model_match: gpt\n", `f.yaml:4: openai_clients[0].model_match: want a mapping {type, value} or a list of them, got "gpt"`},
		{"match type missing", "openai_clients:\n  - name: a\n    base_url: http://a/v1\n    model_match: {value: [m]}\n", "f.yaml:4: openai_clients[0].model_match: type is required"},
		{"match value missing", "openai_clients:\n  - name: a\n    base_url: http://a/v1\n    model_match:\n      - {type: exact}\n", "f.yaml:5: openai_clients[0].model_match[0]: value is required"},
		{"match value mapping", "openai_clients:\n  - name: a\n    base_url: http://a/v1\n    model_match: {type: exact, value: {a: b}}\n", "openai_clients[0].model_match.value: want a list of strings, got a mapping"},
		{"match value null item", "openai_clients:\n  - name: a\n    base_url: http://a/v1\n    model_match: {type: exact, value: [m, ~]}\n", "f.yaml:4: openai_clients[0].model_match.value[1]: want a string, got null"},
		{"bad regex", "openai_clients:\n  - name: a\n    base_url: http://a/v1\n    model_match: {type: regex, value: ['gpt-(4']}\n", `f.yaml:4: openai_clients[0].model_match: match regex "gpt-(4"`},
		{"negative priority", head + "    priority: -1\n", `f.yaml:5: openai_clients[0].priority: want an integer from 0 to 4294967295, got "-1"`},
		{"priority too big", head + "    priority: 4294967296\n", "openai_clients[0].priority: want an integer from 0 to 4294967295"},
		{"priority string", head + "    priority: high\n", `openai_clients[0].priority: want an integer from 0 to 4294967295, got "high"`},
		{"max_tokens float", head + "    max_tokens: 1.5\n", `f.yaml:5: openai_clients[0].max_tokens: want an integer`},
		{"stop mapping", head + "    stop: {a: b}\n", "f.yaml:5: openai_clients[0].stop: want a list of strings, got a mapping"},
		{"extra_body list", head + "    extra_body: [1]\n", "f.yaml:5: openai_clients[0].extra_body: want a JSON object string or a mapping, got a list"},
		{"extra_body mapping NaN", head + "    extra_body: {t: .nan}\n", "f.yaml:5: openai_clients[0].extra_body.t: .nan is not a JSON number"},
		{"extra_body mapping complex key", head + "    extra_body: {[a]: 1}\n", "openai_clients[0].extra_body: mapping keys must be strings"},
		{"extra_body mapping duplicate key", head + "    extra_body:\n      a: 1\n      a: 2\n", `f.yaml:7: openai_clients[0].extra_body: duplicate key "a"`},
		{"client thinking_format", head + "    thinking_format: none\n", `f.yaml:5: openai_clients[0].thinking_format: unknown thinking_format "none"`},
		{"strip_think string", head + "    strip_think: off\n", `f.yaml:5: openai_clients[0].strip_think: want true or false, got "off"`},
		{"headers list", head + "    headers: [a]\n", "f.yaml:5: openai_clients[0].headers: want a mapping of header names to values, got a list"},
		{"header value list", head + "    headers: {X-A: [1]}\n", "f.yaml:5: openai_clients[0].headers.X-A: want a string, got a list"},
		{"header twice", head + "    headers: {X-A: 1, x-a: 2}\n", `f.yaml:5: openai_clients[0].headers: header "x-a" set twice`},
		{"duplicate client", head + "  - name: a\n    base_url: http://b/v1\n    model_match: {type: exact, value: [m]}\n", `f.yaml:5: openai_clients[1]: duplicate client name "a"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := gwcaddyfile.ParseYAML([]byte(tc.doc), "f.yaml", noEnv)
			if err == nil {
				t.Fatalf("no error (config %+v), want one containing %q", cfg, tc.want)
			}
			if cfg != nil {
				t.Error("config returned along with an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestParseYAMLAliases checks that anchors and aliases, which serde_yaml accepted, resolve.
func TestParseYAMLAliases(t *testing.T) {
	const doc = `common: &match {type: keyword, value: [gpt]}
openai_clients:
  - name: a
    base_url: http://a/v1
    model_match: *match
  - name: b
    base_url: http://b/v1
    model_match: *match
`
	cfg, warnings, err := gwcaddyfile.ParseYAML([]byte(doc), "a.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Clients) != 2 || !cfg.Clients[1].MatchesModel("gpt-4") {
		t.Errorf("clients = %+v", cfg.Clients)
	}
	if want := []string{"a.yaml:1: unknown key common (ignored)"}; !slices.Equal(warnings, want) {
		t.Errorf("warnings = %q, want %q", warnings, want)
	}
}

// TestParseYAMLAliasBomb checks that aliases cannot blow extra_body up exponentially.
func TestParseYAMLAliasBomb(t *testing.T) {
	doc := "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
	for i := 1; i < 8; i++ {
		prev := "*a" + string(rune('0'+i-1))
		doc += "a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [" + strings.Repeat(prev+", ", 9) + prev + "]\n"
	}
	doc += "openai_clients:\n  - name: a\n    base_url: http://a/v1\n    model_match: {type: exact, value: [m]}\n    extra_body: {k: *a7}\n"
	_, _, err := gwcaddyfile.ParseYAML([]byte(doc), "bomb.yaml", noEnv)
	if err == nil || !strings.Contains(err.Error(), "value too large") {
		t.Fatalf("err = %v, want value too large", err)
	}
}

func TestLoadYAML(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(originYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := gwcaddyfile.LoadYAML(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Clients) != 2 {
		t.Errorf("got %d clients", len(cfg.Clients))
	}

	if err := os.WriteFile(path, []byte("openai_clients:\n  - name: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := gwcaddyfile.LoadYAML(path); err == nil || !strings.HasPrefix(err.Error(), path+":") {
		t.Errorf("err = %v, want one starting with %s:", err, path)
	}

	if _, _, err := gwcaddyfile.LoadYAML(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want a not-exist error", err)
	}
}

// env returns a getenv backed by m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}
