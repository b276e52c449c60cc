package caddyfile_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	gwcaddyfile "github.com/llmgw/caddy-llm-gateway/caddyfile"
	"github.com/llmgw/caddy-llm-gateway/router"
)

// TestBackoffOneRule checks that a backoff is read the same way from the Caddyfile, the JSON
// config and the origin's YAML: a value below 1, negative included, means 1. (JSON's 0 is its
// unset value, the default, so 0 is left out here.)
func TestBackoffOneRule(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  float64
	}{
		{"0.5", 1}, {"-2", 1}, {"1", 1}, {"1.5", 1.5}, {"3", 3},
	} {
		var cf router.Config
		if err := gwcaddyfile.UnmarshalGateway(caddyfile.NewTestDispenser(gw(hc("backoff "+tc.value))), &cf); err != nil {
			t.Errorf("Caddyfile backoff %s: %v", tc.value, err)
			continue
		}
		var hcJSON router.HealthCheck
		if err := json.Unmarshal([]byte(`{"backoff":`+tc.value+`}`), &hcJSON); err != nil {
			t.Fatal(err)
		}
		jsonCfg := router.Config{HealthCheck: &hcJSON}
		if err := jsonCfg.Validate(); err != nil {
			t.Errorf("JSON backoff %s: %v", tc.value, err)
		}
		yc, _, err := gwcaddyfile.ParseYAML([]byte("health_check: {backoff_multiplier: "+tc.value+"}\nopenai_clients: []\n"), "config.yaml", os.Getenv)
		if err != nil {
			t.Errorf("YAML backoff_multiplier %s: %v", tc.value, err)
			continue
		}
		got := map[string]float64{
			"Caddyfile": cf.HealthCheck.Policy().Backoff,
			"JSON":      hcJSON.Policy().Backoff,
			"YAML":      yc.HealthCheck.Policy().Backoff,
		}
		for format, b := range got {
			if b != tc.want {
				t.Errorf("%s backoff %s: effective %g, want %g", format, tc.value, b, tc.want)
			}
		}
	}
}
