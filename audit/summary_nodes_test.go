package audit

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// writeNodeDB writes one node's audit database (path node-<name>.db in dir, with a January
// archive) holding n calls of key per month.
func writeNodeDB(t *testing.T, dir, name string, n int, tokens int64) string {
	t.Helper()
	cfg := testConfig(t)
	cfg.path = filepath.Join(dir, "node-"+name+".db")
	cfg.now = newFakeClock(localDate(2026, 2, 20)).now
	w, err := newWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cost := 0.001 * float64(tokens)
	for i := 0; i < n; i++ {
		for _, day := range []time.Time{localDate(2026, 1, 10), localDate(2026, 2, 10)} {
			w.Enqueue(&Record{Time: day, Model: "gpt-4o", Backend: "openai-" + name, Key: "team-" + name, Status: 200,
				PromptTokens: tokens, CompletionTokens: 1, TotalTokens: tokens + 1, CostUSD: &cost})
		}
	}
	w.Enqueue(&Record{Time: localDate(2026, 2, 11), Model: "gpt-4o", Backend: "openai-" + name, Key: "shared", Status: 429})
	closeWriter(t, w)
	return cfg.path
}

// TestLLMAuditSeveralNodes: --db is repeatable and takes globs; the report over several nodes'
// files is the sum of the reports of each file, and a file matched twice counts once.
func TestLLMAuditSeveralNodes(t *testing.T) {
	dir := t.TempDir()
	a := writeNodeDB(t, dir, "a", 3, 10)
	b := writeNodeDB(t, dir, "b", 2, 100)
	c := writeNodeDB(t, t.TempDir(), "c", 1, 1000)
	run := func(args ...string) Summary {
		t.Helper()
		cmd := &cobra.Command{}
		addFlags(cmd)
		if err := cmd.Flags().Parse(append(args, "--json", "--by", "key")); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := runLLMAudit(caddycmd.Flags{FlagSet: cmd.Flags()}, &out); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		var sum Summary
		if err := json.Unmarshal(out.Bytes(), &sum); err != nil {
			t.Fatal(err)
		}
		return sum
	}
	var want Usage
	byKey := make(map[string]Usage)
	for _, p := range []string{a, b, c} {
		s := run("--db", p)
		if len(s.Files) != 2 {
			t.Fatalf("%s: files %v; want the database and its archive", p, s.Files)
		}
		want.add(s.Total)
		for _, g := range s.Groups {
			u := byKey[g.Key]
			u.Key = g.Key
			u.add(g)
			byKey[g.Key] = u
		}
	}
	want.Key = "TOTAL"
	for _, args := range [][]string{
		{"--db", a, "--db", b, "--db", c},
		{"--db", filepath.Join(dir, "node-*.db"), "--db", c},
		{"--db", filepath.Join(dir, "*"), "--db", filepath.Join(filepath.Dir(c), "node-?.db"), "--db", a}, // archives and a twice: once each
	} {
		s := run(args...)
		if len(s.Files) != 6 {
			t.Errorf("%v: files %v; want 6", args, s.Files)
		}
		if !usageEqual(s.Total, want) {
			t.Errorf("%v: total %+v; want the sum of the files %+v", args, s.Total, want)
		}
		if len(s.Groups) != len(byKey) {
			t.Errorf("%v: %d groups; want %d", args, len(s.Groups), len(byKey))
		}
		for _, g := range s.Groups {
			if !usageEqual(g, byKey[g.Key]) {
				t.Errorf("%v: key %s %+v; want %+v", args, g.Key, g, byKey[g.Key])
			}
		}
	}
	if want.Requests != 2*(3+2+1)+3 || want.Errors != 3 {
		t.Fatalf("fixture: total %+v", want)
	}

	cmd := &cobra.Command{}
	addFlags(cmd)
	_ = cmd.Flags().Parse([]string{"--db", a, "--db", filepath.Join(dir, "nothing-*.db")})
	if _, err := runLLMAudit(caddycmd.Flags{FlagSet: cmd.Flags()}, new(bytes.Buffer)); err == nil || !strings.Contains(err.Error(), "no audit database at") {
		t.Fatalf("a glob matching nothing: %v; want an error naming it", err)
	}
}

// usageEqual compares usages, cost within rounding of the summed floats.
func usageEqual(a, b Usage) bool {
	d := a.CostUSD - b.CostUSD
	a.CostUSD, b.CostUSD = 0, 0
	return a == b && d < 1e-9 && d > -1e-9
}
