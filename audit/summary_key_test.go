package audit

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/goccy/go-json"
	"github.com/spf13/cobra"
)

// TestSummaryByKeyWithCost: llm-audit --by key sums requests, tokens and cost per gateway key
// (SPEC §12); rows without a key group under "-", rows without a price cost nothing, and origin
// files (no Key or CostUSD column) are read too. --json keeps the §8 schema and adds cost_usd.
func TestSummaryByKeyWithCost(t *testing.T) {
	cfg := testConfig(t)
	dir := filepath.Dir(cfg.path)
	cfg.now = newFakeClock(localDate(2026, 3, 20)).now
	w, err := newWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	usd := func(v float64) *float64 { return &v }
	for _, r := range []*Record{
		{Time: localDate(2026, 3, 1), Model: "gpt-4o", Key: "team-a", Status: 200, PromptTokens: 1000, CompletionTokens: 500, TotalTokens: 1500, CostUSD: usd(0.0075)},
		{Time: localDate(2026, 3, 2), Model: "gpt-4o", Key: "team-a", Status: 429},
		{Time: localDate(2026, 3, 2), Model: "llama", Key: "team-b", Status: 200, PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15},
		{Time: localDate(2026, 3, 3), Model: "gpt-4o", Status: 401},
	} {
		w.Enqueue(r)
	}
	closeWriter(t, w)
	exec(t, filepath.Join(dir, "record_202602.db"), `CREATE TABLE records (
		id INTEGER PRIMARY KEY AUTOINCREMENT, Time TEXT, IP TEXT, Model TEXT, Type TEXT,
		CompletionTokens INTEGER, PromptTokens INTEGER, TotalTokens INTEGER,
		Tool BOOLEAN, Multimodal BOOLEAN, Headers TEXT, Request TEXT, Response TEXT);
		INSERT INTO records (Time, IP, Model, CompletionTokens, PromptTokens, TotalTokens)
		VALUES ('2026-02-10 08:00:00.000000', '10.0.0.2', 'gpt-4o', 3, 4, 7)`)

	run := func(args ...string) string {
		cmd := &cobra.Command{}
		addFlags(cmd)
		if err := cmd.Flags().Parse(args); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := runLLMAudit(caddycmd.Flags{FlagSet: cmd.Flags()}, &out); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	want := "" +
		"KEY     REQUESTS  PROMPT  COMPLETION  TOTAL  ERRORS  COST_USD\n" +
		"-              2       4           3      7       1    0.0000\n" +
		"team-a         2    1000         500   1500       1    0.0075\n" +
		"team-b         1      10           5     15       0    0.0000\n" +
		"TOTAL          5    1014         508   1522       2    0.0075\n"
	if out := run("--db", cfg.path, "--by", "key"); out != want {
		t.Errorf("table:\n%s\nwant:\n%s", out, want)
	}
	out := run("--db", cfg.path, "--by", "key", "--json")
	for _, field := range []string{`"by": "key"`, `"files"`, `"groups"`, `"total"`, `"requests"`, `"prompt_tokens"`, `"completion_tokens"`, `"total_tokens"`, `"errors"`, `"cost_usd": 0.0075`} {
		if !strings.Contains(out, field) {
			t.Errorf("--json lacks %s:\n%s", field, out)
		}
	}
	var sum Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Total.CostUSD != 0.0075 {
		t.Errorf("--json: %v %+v", err, sum.Total)
	}
	// Grouped otherwise, the cost column shows only when some row has a cost.
	if out := run("--db", cfg.path, "--by", "model"); !strings.Contains(out, "COST_USD") {
		t.Errorf("by model with costs: no COST_USD column:\n%s", out)
	}
}
