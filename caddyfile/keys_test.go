package caddyfile_test

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	gwcaddyfile "github.com/llmgw/caddy-llm-gateway/caddyfile"
	"github.com/llmgw/caddy-llm-gateway/keys"
	"github.com/llmgw/caddy-llm-gateway/router"
)

// specKeys is the keys and prices part of SPEC §12's example (without the store line).
const specKeys = `llm_gateway {
	keys {
		file  config/keys.yaml
		key team-a {
			secret      {env.TEAM_A_KEY}
			models      gpt-4o* text-embedding-*
			rpm         600
			tpm         200000
			concurrency 20
			budget      50M tokens monthly
			expires     2027-01-01
		}
		key team-b {
			hash   sha256:` + "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b" + `
			models o3
			models gpt-4o-mini
			budget 200 usd monthly
		}
	}
	prices {
		gpt-4o       input 2.50 output 10.00
		gpt-4o-mini  input 0.15 output 0.60
	}
}`

func TestUnmarshalGatewayKeys(t *testing.T) {
	var cfg router.Config
	if err := gwcaddyfile.UnmarshalGateway(caddyfile.NewTestDispenser(specKeys), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	kc := cfg.Keys
	if kc == nil || kc.File != "config/keys.yaml" || len(kc.Keys) != 2 {
		t.Fatalf("keys = %+v", kc)
	}
	a, b := kc.Keys[0], kc.Keys[1]
	if a.Name != "team-a" || a.Secret != "{env.TEAM_A_KEY}" || strings.Join(a.Models, " ") != "gpt-4o* text-embedding-*" ||
		a.RPM != 600 || a.TPM != 200000 || a.Concurrency != 20 || a.Budget != "50M tokens monthly" || a.Expires != "2027-01-01" {
		t.Errorf("team-a = %+v", a)
	}
	if b.Hash == "" || strings.Join(b.Models, " ") != "o3 gpt-4o-mini" || b.Budget != "200 usd monthly" {
		t.Errorf("team-b = %+v", b)
	}
	want := []keys.Price{{Model: "gpt-4o", Input: 2.5, Output: 10}, {Model: "gpt-4o-mini", Input: 0.15, Output: 0.6}}
	if len(cfg.Prices) != 2 || cfg.Prices[0] != want[0] || cfg.Prices[1] != want[1] {
		t.Errorf("prices = %+v", cfg.Prices)
	}
}

// TestUnmarshalGatewayKeysStore: the store and its failure mode (SPEC §14).
func TestUnmarshalGatewayKeysStore(t *testing.T) {
	for _, tc := range []struct{ in, store, mode string }{
		{"store redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", ""},
		{"store rediss://gw:{env.REDIS_PW}@redis.internal:6380/2\n store_failure closed", "rediss://gw:{env.REDIS_PW}@redis.internal:6380/2", "closed"},
		{"store {env.REDIS_URL}\n store_failure open", "{env.REDIS_URL}", "open"},
	} {
		var cfg router.Config
		if err := gwcaddyfile.UnmarshalGateway(caddyfile.NewTestDispenser(gw("keys {\n "+tc.in+"\n key a {\n secret x\n }\n }")), &cfg); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if cfg.Keys.Store != tc.store || cfg.Keys.StoreFailure != tc.mode {
			t.Errorf("%s: store %q, store_failure %q", tc.in, cfg.Keys.Store, cfg.Keys.StoreFailure)
		}
	}
}

func TestUnmarshalGatewayKeysErrors(t *testing.T) {
	key := func(body string) string { return gw("keys {\n key team-a {\n" + body + "\n }\n }") }
	for _, tc := range []struct{ name, input, want string }{
		{"keys argument", gw("keys on"), "wrong argument count"},
		{"keys unknown option", gw("keys {\n vault x\n }"), `unrecognized keys option "vault"`},
		{"store scheme", gw("keys {\n store http://h:1/0\n }"), "store: want redis://"},
		{"store malformed", gw("keys {\n store redis://u:hunter2@h:1/x\n }"), "store: malformed redis URL"},
		{"store no argument", gw("keys {\n store\n }"), "wrong argument count"},
		{"store_failure value", gw("keys {\n store_failure maybe\n }"), `store_failure: want open or closed, got "maybe"`},
		{"key without name", gw("keys {\n key\n }"), "key needs a name"},
		{"key without secret", key("rpm 5"), "key team-a: secret or hash is required"},
		{"secret and hash", key("secret x\n hash sha256:" + strings.Repeat("0", 64)), "key team-a: give secret or hash, not both"},
		{"bad hash", key("hash sha256:abc"), "key team-a: hash: want sha256:<64 hex digits>"},
		{"bad rpm", key("secret x\n rpm many"), `key team-a: rpm: want a whole number >= 0, got "many"`},
		{"negative tpm", key("secret x\n tpm -5"), `key team-a: tpm: want a whole number >= 0, got "-5"`},
		{"bad concurrency", key("secret x\n concurrency 1.5"), `key team-a: concurrency: want a whole number`},
		{"bad budget", key("secret x\n budget 50M tokens weekly"), "key team-a: budget:"},
		{"bad budget unit", key("secret x\n budget 5 eur monthly"), `key team-a: budget: budget unit "eur"`},
		{"bad expires", key("secret x\n expires someday"), `key team-a: expires "someday"`},
		{"models empty", key("secret x\n models"), "key team-a: models: want at least one"},
		{"unknown key option", key("secret x\n colour red"), `key team-a: unrecognized key option "colour"`},
		{"bad key name", gw("keys {\n key a/b {\n secret x\n }\n }"), `key "a/b": name`},
		{"duplicate key", gw("keys {\n key a {\n secret x\n }\n key a {\n secret y\n }\n }"), "key a: defined twice"},
		{"price shape", gw("prices {\n gpt-4o 2.5 10\n }"), "price gpt-4o: want `<model> input <usd> output <usd>`"},
		{"price negative", gw("prices {\n gpt-4o input -1 output 10\n }"), `price gpt-4o: input: want a number >= 0`},
		{"price NaN", gw("prices {\n gpt-4o input 1 output NaN\n }"), `price gpt-4o: output: want a number >= 0`},
		{"price twice", gw("prices {\n m input 1 output 1\n m input 2 output 2\n }"), "price m: given twice"},
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
