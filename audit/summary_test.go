package audit

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/goccy/go-json"
	"github.com/spf13/cobra"
)

// writeSummaryFixture builds a live file (March) with one January archive
// written by the writer, plus a February archive in the origin's schema.
func writeSummaryFixture(t *testing.T) string {
	t.Helper()
	cfg := testConfig(t)
	dir := filepath.Dir(cfg.path)
	cfg.now = newFakeClock(localDate(2026, 3, 20)).now
	w, err := newWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := func(day time.Time, model, backend, ip string, status int, p, c int64) *Record {
		return &Record{Time: day, Model: model, Backend: backend, IP: ip, Status: status,
			PromptTokens: p, CompletionTokens: c, TotalTokens: p + c}
	}
	for _, r := range []*Record{
		rec(localDate(2026, 1, 5), "gpt-4o", "openai", "10.0.0.1", 200, 10, 5),
		rec(localDate(2026, 1, 6), "gpt-4o", "azure", "10.0.0.2", 502, 7, 0),
		rec(localDate(2026, 3, 1), "gpt-4o", "openai", "10.0.0.1", 200, 100, 50),
		rec(localDate(2026, 3, 1), "llama", "vllm", "10.0.0.1", 429, 1, 0),
		rec(localDate(2026, 3, 2), "llama", "vllm", "10.0.0.3", 200, 20, 30),
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
	// Not archives of record.db: must be ignored.
	for _, name := range []string{"record_backup.db", "record_2026.db", "other_202601.db", "record_202601.db.bak"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return cfg.path
}

func TestDatabaseFiles(t *testing.T) {
	path := writeSummaryFixture(t)
	dir := filepath.Dir(path)
	got, err := DatabaseFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "record_202601.db"), filepath.Join(dir, "record_202602.db"), path}
	if !slices.Equal(got, want) {
		t.Errorf("DatabaseFiles = %v, want %v", got, want)
	}
	if got, err := DatabaseFiles(filepath.Join(t.TempDir(), "none.db")); err != nil || len(got) != 0 {
		t.Errorf("DatabaseFiles(missing) = %v, %v", got, err)
	}
}

func TestSummarize(t *testing.T) {
	path := writeSummaryFixture(t)
	files, err := DatabaseFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opt  SummaryOptions
		want string // groups then total, as "key:requests/prompt/completion/total/errors"
	}{
		{"by model (default)", SummaryOptions{},
			"gpt-4o:4/121/58/179/1 llama:2/21/30/51/1 TOTAL:6/142/88/230/2"},
		{"by backend; origin rows have none", SummaryOptions{By: ByBackend},
			"openai:2/110/55/165/0 vllm:2/21/30/51/1 :1/4/3/7/0 azure:1/7/0/7/1 TOTAL:6/142/88/230/2"},
		{"by ip", SummaryOptions{By: ByIP},
			"10.0.0.1:3/111/55/166/1 10.0.0.2:2/11/3/14/1 10.0.0.3:1/20/30/50/0 TOTAL:6/142/88/230/2"},
		{"by day, sorted by day", SummaryOptions{By: ByDay},
			"2026-01-05:1/10/5/15/0 2026-01-06:1/7/0/7/1 2026-02-10:1/4/3/7/0 2026-03-01:2/101/50/151/1 2026-03-02:1/20/30/50/0 TOTAL:6/142/88/230/2"},
		{"since", SummaryOptions{By: ByDay, Since: time.Date(2026, 2, 10, 0, 0, 0, 0, time.Local)},
			"2026-02-10:1/4/3/7/0 2026-03-01:2/101/50/151/1 2026-03-02:1/20/30/50/0 TOTAL:4/125/83/208/1"},
		{"until is exclusive", SummaryOptions{By: ByModel, Until: time.Date(2026, 3, 1, 0, 0, 0, 0, time.Local)},
			"gpt-4o:3/21/8/29/1 TOTAL:3/21/8/29/1"},
		{"empty range", SummaryOptions{Since: time.Date(2030, 1, 1, 0, 0, 0, 0, time.Local)},
			"TOTAL:0/0/0/0/0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum, err := Summarize(files, tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, u := range append(sum.Groups, sum.Total) {
				parts = append(parts, fmt.Sprintf("%s:%d/%d/%d/%d/%d", u.Key, u.Requests, u.PromptTokens, u.CompletionTokens, u.TotalTokens, u.Errors))
			}
			if got := strings.Join(parts, " "); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestSummarizeErrors(t *testing.T) {
	dir := t.TempDir()
	notDB := filepath.Join(dir, "x.db")
	if err := os.WriteFile(notDB, []byte("this is not a database, just text long enough"), 0o644); err != nil {
		t.Fatal(err)
	}
	noTable := filepath.Join(dir, "empty.db")
	exec(t, noTable, `CREATE TABLE other (a)`)
	for _, tc := range []struct {
		name  string
		files []string
		opt   SummaryOptions
	}{
		{"bad grouping", nil, SummaryOptions{By: "user"}},
		{"not a database", []string{notDB}, SummaryOptions{}},
		{"no records table", []string{noTable}, SummaryOptions{}},
	} {
		if _, err := Summarize(tc.files, tc.opt); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestWriteTable(t *testing.T) {
	sum := &Summary{By: ByModel, Groups: []Usage{
		{Key: "gpt-4o", Requests: 12, PromptTokens: 1200, CompletionTokens: 300, TotalTokens: 1500, Errors: 1},
		{Key: "", Requests: 1},
	}, Total: Usage{Key: "TOTAL", Requests: 13, PromptTokens: 1200, CompletionTokens: 300, TotalTokens: 1500, Errors: 1}}
	var b bytes.Buffer
	if err := WriteTable(&b, sum); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"MODEL   REQUESTS  PROMPT  COMPLETION  TOTAL  ERRORS\n" +
		"gpt-4o        12    1200         300   1500       1\n" +
		"-              1       0           0      0       0\n" +
		"TOTAL         13    1200         300   1500       1\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestLLMAuditCommand(t *testing.T) {
	path := writeSummaryFixture(t)
	run := func(args ...string) (string, error) {
		cmd := &cobra.Command{}
		addFlags(cmd)
		if err := cmd.Flags().Parse(args); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		code, err := runLLMAudit(caddycmd.Flags{FlagSet: cmd.Flags()}, &out)
		if (code == 0) != (err == nil) {
			t.Errorf("exit code %d with error %v", code, err)
		}
		return out.String(), err
	}

	out, err := run("--db", path, "--by", "day", "--since", "2026-02-10", "--until", "2026-03-01")
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"DAY         REQUESTS  PROMPT  COMPLETION  TOTAL  ERRORS\n" +
		"2026-02-10         1       4           3      7       0\n" +
		"2026-03-01         2     101          50    151       1\n" +
		"TOTAL              3     105          53    158       1\n"
	if out != want {
		t.Errorf("table:\n%s\nwant:\n%s", out, want)
	}

	out, err = run("--db", path, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var sum Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if sum.By != ByModel || len(sum.Files) != 3 || len(sum.Groups) != 2 || sum.Total.Requests != 6 || sum.Total.Errors != 2 {
		t.Errorf("--json summary = %+v", sum)
	}

	// RECD_PATH is the default, as for the app.
	t.Setenv(envPath, "sqlite:"+path)
	if out, err := run(); err != nil || !strings.Contains(out, "TOTAL") {
		t.Errorf("default --db: %v\n%s", err, out)
	}

	for _, args := range [][]string{
		{"--db", filepath.Join(t.TempDir(), "none.db")},
		{"--db", path, "--by", "user"},
		{"--db", path, "--since", "yesterday"},
		{"--db", path, "--until", "2026-13-01"},
	} {
		if _, err := run(args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
