//go:build linux

package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/llmgw/caddy-llm-gateway"
)

// TestCaddyfile: every config the benchmark runs adapts, and says what its phase needs: h2c on
// both sides of the proxy, and the routing configs' clients with the last one serving routeModel.
func TestCaddyfile(t *testing.T) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	for _, tc := range []struct {
		name string
		cfg  proxyConfig
		want []string // in the adapted JSON
		not  []string
	}{
		{"reverse_proxy", proxyConfig{kind: kindReverseProxy}, []string{`"flush_interval":-1`}, []string{"h2c"}},
		{"reverse_proxy h2c", proxyConfig{kind: kindReverseProxy, h2c: true}, []string{`"protocols":["h1","h2c"]`, `"versions":["h2c"]`}, nil},
		{"gateway h2c", proxyConfig{kind: kindGateway, h2c: true}, []string{`"protocols":["h1","h2c"]`, `"versions":["h2c"]`, `"keyword"`}, nil},
		{"audit", proxyConfig{kind: kindGatewayAudit, auditDB: "/tmp/x.db"}, []string{`"bodies":"full"`}, nil},
		{"keys redis", proxyConfig{kind: kindGatewayKeys, keyStore: "redis://127.0.0.1:1/0"}, []string{`redis://127.0.0.1:1/0`}, nil},
		{"1 client", proxyConfig{kind: kindGateway, clients: 1}, []string{`"^model-9999$"`, `"c0"`}, []string{`"c1"`}},
		{"3 regex", proxyConfig{kind: kindGateway, clients: 3}, []string{`"^model-0$"`, `"^model-1$"`, `"^model-9999$"`, `"c2"`}, []string{`"^model-2$"`, `"c3"`}},
		{"3 exact", proxyConfig{kind: kindGateway, clients: 3, exact: true}, []string{`"exact"`, `"model-0"`, `"model-9999"`}, []string{`"regex"`, `"^model`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := caddyfile(tc.cfg, 8080, 2019, 9001)
			out, warn, err := adapter.Adapt([]byte(src), nil)
			if err != nil {
				t.Fatalf("adapting:\n%s\n%v", src, err)
			}
			if len(warn) > 0 {
				t.Errorf("warnings: %v", warn)
			}
			if !json.Valid(out) {
				t.Fatalf("not JSON: %s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("no %s in %s", w, out)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(string(out), n) {
					t.Errorf("%s in %s", n, out)
				}
			}
		})
	}
}

// TestCaddyEnv: the routing targets, and only they, collect at a fixed heap size, and every
// Caddy process traces its collections (the GC column).
func TestCaddyEnv(t *testing.T) {
	b := &bench{}
	for id := targetReverseProxy; id < numTargets; id++ {
		if id == targetAuditWriter {
			continue // runs in the benchmark's process
		}
		env := strings.Join(caddyEnv(b.proxyConfig(id)), " ")
		if !strings.Contains(env, "gctrace=1") {
			t.Errorf("%s: env %q traces no GC", targetNames[id], env)
		}
		routing := id == targetRoute1 || id == targetRoute1kRegex || id == targetRoute10kRegex || id == targetRoute10kExact
		steady := strings.Contains(env, "GOGC=off") && strings.Contains(env, steadyGCLimit)
		if steady != routing || (!routing && strings.Contains(env, "GOMEMLIMIT")) {
			t.Errorf("%s: env %q; want GOGC=off and %s: %v", targetNames[id], env, steadyGCLimit, routing)
		}
	}
}
