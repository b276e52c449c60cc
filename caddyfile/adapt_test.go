package caddyfile_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	gwcaddyfile "github.com/llmgw/caddy-llm-gateway/caddyfile"

	// The real module registration: the llm_gateway directive, its order and the handler.
	_ "github.com/llmgw/caddy-llm-gateway"
)

var update = flag.Bool("update", false, "rewrite the expected JSON of testdata/*.caddyfiletest")

const separator = "----------"

// TestCaddyfileAdapt runs every testdata/*.caddyfiletest through Caddy's own Caddyfile adapter,
// as Caddy's caddytest/integration/caddyfile_adapt tests do: the part before the separator is
// a Caddyfile, the part after it the expected JSON, or, when it does not start with "{", a
// substring of the expected adapt error.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.caddyfiletest"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	ensureAuditOption(t, adapter)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(data), separator)
			if !ok {
				t.Fatalf("no %s separator", separator)
			}
			input = strings.TrimSpace(input) + "\n"
			expected = strings.TrimSpace(expected)

			out, warnings, err := adapter.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
			if !strings.HasPrefix(expected, "{") {
				if err == nil {
					t.Fatalf("adapted without error, want one containing %q", expected)
				}
				if !strings.Contains(err.Error(), expected) {
					t.Errorf("error %q does not contain %q", err, expected)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range warnings {
				t.Errorf("adapt warning: %s", w)
			}
			got := indent(t, out)
			if *update {
				if err := os.WriteFile(file, []byte(strings.TrimSpace(input)+"\n"+separator+"\n"+got+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := indent(t, []byte(expected)); got != want {
				t.Errorf("adapted JSON differs\n--- got\n%s\n--- want\n%s", got, want)
			}
		})
	}
}

// TestDirectiveOrder checks that llm_gateway is ordered before reverse_proxy without an order
// line: in the adapted routes the gateway handler comes first even though it is written second.
func TestDirectiveOrder(t *testing.T) {
	const input = ":8000 {\n\treverse_proxy localhost:9000\n\tllm_gateway {\n\t\tclient a {\n\t\t\tbase_url http://a/v1\n\t\t\tmatch keyword gpt\n\t\t}\n\t}\n}\n"
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Handler string `json:"handler"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var handlers []string
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			for _, h := range r.Handle {
				handlers = append(handlers, h.Handler)
			}
		}
	}
	if strings.Join(handlers, ",") != "llm_gateway,reverse_proxy" {
		t.Errorf("handlers in route order = %q, want llm_gateway before reverse_proxy", handlers)
	}
}

// ensureAuditOption registers the llm_audit global option with this package's parser unless
// the root package already registers one (registering twice panics).
func ensureAuditOption(t *testing.T, adapter caddyconfig.Adapter) {
	_, _, err := adapter.Adapt([]byte("{\n\tllm_audit\n}\n"), nil)
	if err != nil && strings.Contains(err.Error(), "unrecognized global option") {
		t.Log("root package does not register llm_audit yet; using gwcaddyfile.ParseAuditOption")
		httpcaddyfile.RegisterGlobalOption("llm_audit", gwcaddyfile.ParseAuditOption)
	}
}

// indent normalises JSON so that formatting differences do not count.
func indent(t *testing.T, data []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, data)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "\t")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(buf.String())
}
