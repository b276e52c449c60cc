package caddyfile_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	gwcaddyfile "github.com/llmgw/caddy-llm-gateway/caddyfile"
	"github.com/llmgw/caddy-llm-gateway/router"
)

// checkAccepted holds both parsers to their promise: whatever they accept validates and
// encodes as JSON (a NaN, for one, would not).
func checkAccepted(t *testing.T, cfg *router.Config) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("accepted config does not validate: %v", err)
	}
	if _, err := json.Marshal(cfg); err != nil {
		t.Fatalf("accepted config does not encode: %v", err)
	}
}

func FuzzUnmarshalGateway(f *testing.F) {
	for _, seed := range []string{
		specGateway,
		"llm_gateway",
		gw("models_cache_ttl 0\nmax_request_body 10MB\nmax_fallback_hops 0"),
		gw(hc("disabled\nbackoff 1.5\nenabled on")),
		client("stop \"\\n\" b\nheader X-A 1\nextra_body `{\"a\":[1,{\"b\":null}]}`"),
		client("match regex ^a.*b$ (?i)c\ntransport http {\nversions 1.1\n}"),
		client("strip_think off\ninject_usage on\nthinking_format think_tag\npriority 0"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte(input), "Fuzzfile")
		if err != nil {
			return
		}
		var cfg router.Config
		if err := gwcaddyfile.UnmarshalGateway(caddyfile.NewDispenser(tokens), &cfg); err != nil {
			return
		}
		checkAccepted(t, &cfg)
	})
}

func FuzzParseYAML(f *testing.F) {
	for _, seed := range []string{
		originYAML,
		"openai_clients: []\n",
		"health_check: {enabled: false, backoff_multiplier: .nan}\nopenai_clients: []\n",
		"a: &a {type: regex, value: '^x'}\nopenai_clients:\n  - {name: a, base_url: 'http://${H}', model_match: [*a, *a]}\n",
		"openai_clients:\n  - name: a\n    base_url: http://a\n    model_match: {type: exact, value: m}\n    extra_body: {a: [1, 2.5, true, ~, x]}\n",
		"openai_clients:\n  - name: a\n    base_url: http://a\n    model_match: {type: exact, value: m}\n    extra_body: '{\"a\": 1}'\n    stop: x\n",
	} {
		f.Add([]byte(seed))
	}
	getenv := env(map[string]string{"H": "host", "KEY": "sk"})
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, warnings, err := gwcaddyfile.ParseYAML(data, "fuzz.yaml", getenv)
		for _, w := range warnings {
			if !strings.HasPrefix(w, "fuzz.yaml:") {
				t.Fatalf("warning without file and line: %q", w)
			}
		}
		if err != nil {
			if cfg != nil {
				t.Fatal("config returned along with an error")
			}
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error without file name: %v", err)
			}
			return
		}
		checkAccepted(t, cfg)
	})
}
