package dashboard

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

// BenchmarkDashboard30Days times the page's queries for a 30-day view over a database of
// $LLMGW_BENCH_ROWS rows (default 5,000,000) spread over those 30 days. The rows are inserted
// with plain SQL in large transactions, then the llm_audit app opens the file, which builds
// the hourly rollup once (timed and reported as a metric). $LLMGW_BENCH_DB keeps the file
// for later runs (it is reused when it already holds the rows). Not part of go test ./...:
//
//	go test -run '^$' -bench Dashboard30Days -benchtime 20x ./dashboard
//
// The figures are recorded in docs/benchmarks.md.
func BenchmarkDashboard30Days(b *testing.B) {
	rows := 5_000_000
	if s := os.Getenv("LLMGW_BENCH_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("LLMGW_BENCH_ROWS=%q", s)
		}
		rows = n
	}
	path := os.Getenv("LLMGW_BENCH_DB")
	if path == "" {
		path = filepath.Join(b.TempDir(), "record.db")
	}
	// The rows end now: the 30-day view ending now has whole hours from the rollup and two
	// partial ones, as a real one does.
	end := time.Now()
	if n := countRows(b, path); n != int64(rows) {
		os.Remove(path)
		start := time.Now()
		generateRows(b, path, end, rows)
		b.Logf("inserted %d rows in %s", rows, time.Since(start).Round(time.Millisecond))
	}
	// Open the file as the gateway does: the writer builds the rollup for rows it lacks.
	start := time.Now()
	app := openApp(b, path)
	build := time.Since(start)
	if err := app.Cleanup(); err != nil {
		b.Fatal(err)
	}
	b.Logf("llm_audit opened the file (rollup built or brought up to date) in %s", build.Round(time.Millisecond))
	if fi, err := os.Stat(path); err == nil {
		b.Logf("database file: %.0f MiB", float64(fi.Size())/(1<<20))
	}
	b.Logf("rollup_hourly: %d rows, rollup_daily: %d rows", countQuery(b, path, `SELECT COUNT(*) FROM rollup_hourly`),
		countQuery(b, path, `SELECT COUNT(*) FROM rollup_daily`))

	now := time.Now()
	h := newTestHandler(b, path, now)
	q := url.Values{"from": {now.Add(-30 * 24 * time.Hour).UTC().Format(time.RFC3339)}, "to": {now.UTC().Format(time.RFC3339)}}.Encode()
	// The first call reads the file from disk into the page cache; report it apart.
	first := time.Now()
	var o overviewAnswer
	getJSON(b, h, "/api/overview?"+q, &o)
	b.Logf("first 30-day overview: %s (%d requests)", time.Since(first).Round(time.Millisecond), o.Summary.Requests)
	want := countQuery(b, path, fmt.Sprintf(`SELECT COUNT(*) FROM records WHERE Time >= '%s' AND Time < '%s'`,
		now.Add(-30*24*time.Hour).Truncate(time.Second).Local().Format(audit.TimeLayout), now.Local().Format(audit.TimeLayout)))
	if o.Summary.Requests != want {
		b.Fatalf("30-day view counts %d requests, SQL %d", o.Summary.Requests, want)
	}
	for _, ep := range []struct{ name, path string }{
		{"overview", "/api/overview?" + q},
		{"summary", "/api/summary?" + q},
		{"series", "/api/series?" + q},
		{"top", "/api/top?by=key&" + q},
		{"failures", "/api/failures?limit=25&" + q},
		{"overview,key=key-7", "/api/overview?key=key-7&" + q},
		{"overview,status=5xx", "/api/overview?status=5xx&" + q},
		{"series,bucket=6h", "/api/series?bucket=6h&" + q}, // hourly rollup only
		{"overview,7d", "/api/overview?from=" + url.QueryEscape(now.Add(-7*24*time.Hour).UTC().Format(time.RFC3339))},
		{"overview,24h", "/api/overview?from=" + url.QueryEscape(now.Add(-24*time.Hour).UTC().Format(time.RFC3339))},
		{"overview,1h", "/api/overview?from=" + url.QueryEscape(now.Add(-time.Hour).UTC().Format(time.RFC3339))},
	} {
		b.Run(ep.name, func(b *testing.B) {
			for b.Loop() {
				if code, body := get(b, h, ep.path); code != http.StatusOK {
					b.Fatalf("%d %s", code, body)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/query")
		})
	}
	b.ReportMetric(build.Seconds(), "rollup-build-s")
}

func countRows(b *testing.B, path string) int64 {
	if _, err := os.Stat(path); err != nil {
		return -1
	}
	return countQuery(b, path, `SELECT COUNT(*) FROM records`)
}

func countQuery(b *testing.B, path, q string) int64 {
	conn, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
	if err != nil {
		return -1
	}
	defer conn.Close()
	stmt, _, err := conn.Prepare(q)
	if err != nil {
		return -1
	}
	defer stmt.Close()
	if !stmt.Step() {
		return -1
	}
	return stmt.ColumnInt64(0)
}

// generateRows inserts n calls spread evenly over the 30 days before end, in time order, as
// a busy gateway would have: 50 keys, each using one to three of 12 models, each model
// served by one or two backends; 97% 2xx, 2% 4xx, 1% 5xx; 60% streamed; most calls priced;
// log-normal latencies. Bodies are not stored (bodies none): the dashboard never reads them.
func generateRows(b *testing.B, path string, end time.Time, n int) {
	b.Helper()
	// The schema as the writer makes it.
	app := openApp(b, path)
	if err := app.Cleanup(); err != nil {
		b.Fatal(err)
	}
	conn, err := sqlite3.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF`); err != nil {
		b.Fatal(err)
	}
	stmt, _, err := conn.Prepare(`INSERT INTO records (Time, IP, Model, Type, CompletionTokens, PromptTokens, TotalTokens,
		Tool, Multimodal, Headers, Backend, Status, LatencyMs, TTFTMs, Stream, Endpoint, RequestID, Tried, Error, Key, CostUSD)
		VALUES (?1, '10.1.2.3', ?2, 'chat.completions', ?3, ?4, ?5, 0, 0,
		'{"authorization":"Bearer sk-ab…yz","content-type":"application/json"}',
		?6, ?7, ?8, ?9, ?10, '/v1/chat/completions', ?11, ?6, ?12, ?13, ?14)`)
	if err != nil {
		b.Fatal(err)
	}
	defer stmt.Close()
	rng := rand.New(rand.NewPCG(30, 5))
	models := make([]string, 12)
	for i := range models {
		models[i] = fmt.Sprintf("model-%d", i)
	}
	backends := []string{"openai", "azure", "anthropic", "vllm-1", "vllm-2"}
	keyModels := make([][]int, 50)
	for k := range keyModels {
		for j := 0; j <= k%3; j++ {
			keyModels[k] = append(keyModels[k], (k*5+j*7)%len(models))
		}
	}
	span := 30 * 24 * time.Hour
	step := float64(span) / float64(n)
	const batch = 200_000
	for i := 0; i < n; i++ {
		if i%batch == 0 {
			if i > 0 {
				if err := conn.Exec(`COMMIT`); err != nil {
					b.Fatal(err)
				}
			}
			if err := conn.Exec(`BEGIN`); err != nil {
				b.Fatal(err)
			}
		}
		at := end.Add(-span + time.Duration(float64(i)*step))
		key := int(math.Min(49, math.Abs(rng.NormFloat64())*15)) // a few heavy keys
		m := keyModels[key][rng.IntN(len(keyModels[key]))]
		backend := backends[(m+rng.IntN(1+m%2))%len(backends)]
		status, errText := 200, ""
		switch r := rng.IntN(100); {
		case r < 2:
			status, errText = 429, "rate limited"
		case r < 3:
			status, errText = 502, "upstream connect error"
		}
		prompt, completion := rng.Int64N(3000)+50, rng.Int64N(800)
		stream := rng.IntN(10) < 6
		latency := int64(math.Exp(6.5 + rng.NormFloat64()*0.9))
		args := []error{
			stmt.BindText(1, at.Local().Format(audit.TimeLayout)),
			stmt.BindText(2, models[m]),
			stmt.BindInt64(3, completion), stmt.BindInt64(4, prompt), stmt.BindInt64(5, prompt+completion),
			stmt.BindText(6, backend),
			stmt.BindInt64(7, int64(status)),
			stmt.BindInt64(8, latency),
		}
		if stream {
			args = append(args, stmt.BindInt64(9, latency/5), stmt.BindBool(10, true))
		} else {
			args = append(args, stmt.BindNull(9), stmt.BindBool(10, false))
		}
		args = append(args, stmt.BindText(11, "req-"+strconv.Itoa(i)))
		if errText != "" {
			args = append(args, stmt.BindText(12, errText))
		} else {
			args = append(args, stmt.BindNull(12))
		}
		args = append(args, stmt.BindText(13, fmt.Sprintf("key-%d", key)))
		if m%6 != 5 { // one model in six has no price
			args = append(args, stmt.BindFloat(14, float64(prompt)*2.5e-6+float64(completion)*1e-5))
		} else {
			args = append(args, stmt.BindNull(14))
		}
		for _, err := range args {
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := stmt.Exec(); err != nil {
			b.Fatal(err)
		}
	}
	// As a file from before the rollup: the writer builds it and the index at open.
	if err := conn.Exec(`COMMIT; DROP TABLE rollup_hourly; DROP TABLE rollup_meta; DROP INDEX records_failed;
		PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE`); err != nil {
		b.Fatal(err)
	}
}
