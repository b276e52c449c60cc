package dashboard

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/goccy/go-json"
	"github.com/ncruces/go-sqlite3"
	"go.uber.org/zap/zaptest"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

// writeRecords writes recs through a real llm_audit app (the production writer: rotation,
// rollup and all) and closes it, which writes the rollup's pending sums.
func writeRecords(t testing.TB, path string, recs []*audit.Record) {
	t.Helper()
	app := openApp(t, path)
	for _, r := range recs {
		if !app.Writer().Enqueue(r) {
			t.Fatal("Enqueue refused")
		}
	}
	syncApp(t, app)
	if err := app.Cleanup(); err != nil {
		t.Fatal(err)
	}
}

// openApp provisions an llm_audit app on path; the caller must Cleanup it.
func openApp(t testing.TB, path string) *audit.App {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	app := &audit.App{Path: path}
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return app
}

func syncApp(t testing.TB, app *audit.App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := app.Writer().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if d := app.Writer().Dropped() + app.Writer().Failed(); d != 0 {
		t.Fatalf("%d rows lost", d)
	}
}

var (
	testModels   = []string{"gpt-4o", "gpt-4o-mini", "o3", "claude-sonnet", "text-embedding-3-small", ""}
	testKeys     = []string{"", "team-a", "team-b", "ci", "alice"}
	testBackends = []string{"primary", "secondary", "azure", ""}
)

// genRecords makes n varied calls spread evenly over (now-span, now], oldest first.
func genRecords(rng *rand.Rand, now time.Time, span time.Duration, n int) []*audit.Record {
	recs := make([]*audit.Record, n)
	for i := range recs {
		at := now.Add(-span + time.Duration(float64(span)*(float64(i)+rng.Float64())/float64(n)))
		r := &audit.Record{
			Time:             at,
			IP:               "192.0.2.9",
			Model:            testModels[rng.IntN(len(testModels))],
			Type:             "chat.completions",
			Key:              testKeys[rng.IntN(len(testKeys))],
			Backend:          testBackends[rng.IntN(len(testBackends))],
			Status:           []int{200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 429, 500, 502, 400, 0}[rng.IntN(19)],
			PromptTokens:     rng.Int64N(4000),
			CompletionTokens: rng.Int64N(1500),
			LatencyMs:        int64(math.Exp(rng.Float64()*9)) + rng.Int64N(3),
			Stream:           rng.IntN(2) == 0,
			TTFTMs:           rng.Int64N(2500),
			Endpoint:         "/v1/chat/completions",
			RequestID:        fmt.Sprintf("req-%d", i),
			Headers:          http.Header{"Authorization": {"Bearer sk-live-0123456789abcdefghij"}, "Content-Type": {"application/json"}},
			Request:          []byte(`{"model":"x","messages":[{"role":"user","content":"hi"}]}`),
			Response:         []byte(`{"id":"chatcmpl-1","choices":[]}`),
		}
		r.TotalTokens = r.PromptTokens + r.CompletionTokens
		if r.Status >= 400 {
			r.Error = "upstream said " + fmt.Sprint(r.Status)
			r.Tried = "primary,secondary"
		}
		if rng.IntN(4) > 0 {
			c := float64(r.PromptTokens)*2.5e-6 + float64(r.CompletionTokens)*1e-5
			r.CostUSD = &c
		}
		recs[i] = r
	}
	return recs
}

// newTestHandler is a provisioned handler over the llm_audit database at path whose clock
// says now.
func newTestHandler(t testing.TB, path string, now time.Time) *Handler {
	t.Helper()
	h := &Handler{auditPath: path, QueryTimeout: caddy.Duration(DefaultQueryTimeout),
		sem: make(chan struct{}, maxConcurrentQueries), logger: zaptest.NewLogger(t), now: func() time.Time { return now }}
	return h
}

// get serves one GET and returns the status and body.
func get(t testing.TB, h *Handler, target string) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if err := h.ServeHTTP(rec, req, nil); err != nil {
		t.Fatal(err)
	}
	return rec.Code, rec.Body.Bytes()
}

// getJSON serves a GET that must succeed and decodes its JSON answer into v.
func getJSON(t testing.TB, h *Handler, target string, v any) {
	t.Helper()
	code, body := get(t, h, target)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", target, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", target, err, body)
	}
}

// filter is a query as the SQL oracle runs it.
type filter struct {
	from, to            time.Time
	model, key, backend *string
	class               int
	extra               string // more query parameters for the API
}

func (f filter) query() string {
	q := []string{"from=" + f.from.UTC().Format(time.RFC3339Nano), "to=" + f.to.UTC().Format(time.RFC3339Nano)}
	add := func(name string, v *string) {
		if v != nil {
			s := *v
			if s == "" {
				s = None
			}
			q = append(q, name+"="+urlEscape(s))
		}
	}
	add("model", f.model)
	add("key", f.key)
	add("backend", f.backend)
	if f.class != 0 {
		q = append(q, fmt.Sprintf("status=%dxx", f.class))
	}
	if f.extra != "" {
		q = append(q, f.extra)
	}
	return strings.Join(q, "&")
}

func urlEscape(s string) string {
	return strings.NewReplacer("%", "%25", "&", "%26", "+", "%2B", " ", "%20", "#", "%23", "'", "%27", "=", "%3D").Replace(s)
}

// expected is what SQL over records says about a filter.
type expected struct {
	requests, errors, prompt, completion, total, costNanos, costed int64
	latencies, ttfts                                               []int64
	byName                                                         [3]map[string]int64 // requests per model, key, backend
}

// oracle computes the expected figures with plain SQL over every file's records table.
func oracle(t testing.TB, files []string, f filter) expected {
	t.Helper()
	e := expected{}
	for i := range e.byName {
		e.byName[i] = map[string]int64{}
	}
	where := `Time >= ?1 AND Time < ?2 AND (?3 IS NULL OR COALESCE(Model, '') = ?3) AND (?4 IS NULL OR COALESCE("Key", '') = ?4)
		AND (?5 IS NULL OR COALESCE(Backend, '') = ?5) AND (?6 = 0 OR COALESCE(Status, 200) / 100 = ?6)`
	for _, file := range files {
		conn, err := sqlite3.OpenFlags(file, sqlite3.OPEN_READONLY)
		if err != nil {
			t.Fatal(err)
		}
		// The origin's files lack this gateway's columns: read them as NULL.
		have := map[string]bool{}
		if stmt, _, err := conn.Prepare(`SELECT name FROM pragma_table_info('records')`); err == nil {
			for stmt.Step() {
				have[stmt.ColumnText(0)] = true
			}
			stmt.Close()
		}
		var cols []string
		for _, c := range []string{"Time", "Model", "Key", "Backend", "Status", "PromptTokens", "CompletionTokens", "TotalTokens", "CostUSD", "LatencyMs", "TTFTMs"} {
			if have[c] {
				cols = append(cols, `"`+c+`"`)
			} else {
				cols = append(cols, `NULL AS "`+c+`"`)
			}
		}
		cte := `WITH recs AS (SELECT ` + strings.Join(cols, ", ") + ` FROM records) `
		run := func(q string, fn func(*sqlite3.Stmt)) {
			q = cte + strings.ReplaceAll(q, "FROM records", "FROM recs")
			stmt, _, err := conn.Prepare(q)
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			defer stmt.Close()
			args := []any{f.from.Local().Format(audit.TimeLayout), f.to.Local().Format(audit.TimeLayout), f.model, f.key, f.backend, int64(f.class)}
			for i, a := range args {
				switch v := a.(type) {
				case string:
					err = stmt.BindText(i+1, v)
				case int64:
					err = stmt.BindInt64(i+1, v)
				case *string:
					if v == nil {
						err = stmt.BindNull(i + 1)
					} else {
						err = stmt.BindText(i+1, *v)
					}
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			for stmt.Step() {
				fn(stmt)
			}
			if err := stmt.Err(); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		run(`SELECT COUNT(*), TOTAL(Status >= 400), TOTAL(PromptTokens), TOTAL(CompletionTokens), TOTAL(TotalTokens),
			TOTAL(CAST(ROUND(CostUSD * 1e9) AS INTEGER)), COUNT(CostUSD) FROM records WHERE `+where, func(s *sqlite3.Stmt) {
			e.requests += s.ColumnInt64(0)
			e.errors += s.ColumnInt64(1)
			e.prompt += s.ColumnInt64(2)
			e.completion += s.ColumnInt64(3)
			e.total += s.ColumnInt64(4)
			e.costNanos += s.ColumnInt64(5)
			e.costed += s.ColumnInt64(6)
		})
		run(`SELECT LatencyMs, TTFTMs FROM records WHERE `+where, func(s *sqlite3.Stmt) {
			if s.ColumnType(0) != sqlite3.NULL {
				e.latencies = append(e.latencies, s.ColumnInt64(0))
			}
			if s.ColumnType(1) != sqlite3.NULL {
				e.ttfts = append(e.ttfts, s.ColumnInt64(1))
			}
		})
		for i, col := range []string{"Model", `"Key"`, "Backend"} {
			run(`SELECT COALESCE(`+col+`, ''), COUNT(*) FROM records WHERE `+where+` GROUP BY 1`, func(s *sqlite3.Stmt) {
				e.byName[i][s.ColumnText(0)] += s.ColumnInt64(1)
			})
		}
		conn.Close()
	}
	slices.Sort(e.latencies)
	slices.Sort(e.ttfts)
	return e
}

// exactPercentile is the nearest-rank percentile of sorted values.
func exactPercentile(sorted []int64, p float64) (int64, bool) {
	if len(sorted) == 0 {
		return 0, false
	}
	rank := max(int(math.Ceil(p*float64(len(sorted)))), 1)
	return sorted[rank-1], true
}

// checkPercentile checks that got is within the width of the rollup bucket of the exact
// percentile.
func checkPercentile(t testing.TB, what string, got *int64, sorted []int64, p float64) {
	t.Helper()
	want, ok := exactPercentile(sorted, p)
	if !ok {
		if got != nil {
			t.Errorf("%s = %d, want null (no values)", what, *got)
		}
		return
	}
	if got == nil {
		t.Errorf("%s = null, want about %d", what, want)
		return
	}
	lo, hi := audit.HistBounds(audit.HistBucket(want))
	if d := *got - want; d < -(hi-lo) || d > hi-lo {
		t.Errorf("%s = %d, exact %d: off by more than the bucket's width %d", what, *got, want, hi-lo)
	}
}

func ptr(s string) *string { return &s }

// execSQL runs statements on the database at path, creating it (and its directory).
func execSQL(t testing.TB, path, q string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	conn, err := sqlite3.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Exec(q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
