package dashboard

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

// summaryAnswer is the part of api/summary (and overview's summary) the tests read.
type summaryAnswer struct {
	Requests         int64    `json:"requests"`
	Errors           int64    `json:"errors"`
	ErrorRate        float64  `json:"error_rate"`
	PromptTokens     int64    `json:"prompt_tokens"`
	CompletionTokens int64    `json:"completion_tokens"`
	TotalTokens      int64    `json:"total_tokens"`
	CostUSD          float64  `json:"cost_usd"`
	CostedRequests   int64    `json:"costed_requests"`
	LatencyP50       *int64   `json:"latency_p50_ms"`
	LatencyP95       *int64   `json:"latency_p95_ms"`
	TTFTP50          *int64   `json:"ttft_p50_ms"`
	TTFTP95          *int64   `json:"ttft_p95_ms"`
	Files            []string `json:"files"`
}

type topAnswer struct {
	By   string `json:"by"`
	Rows []struct {
		Name     string `json:"name"`
		Requests int64  `json:"requests"`
	} `json:"rows"`
	Other *struct {
		Requests int64 `json:"requests"`
	} `json:"other"`
	Names int `json:"names"`
}

type seriesAnswer struct {
	BucketSeconds int64   `json:"bucket_seconds"`
	Times         []int64 `json:"times"`
	Requests      []int64 `json:"requests"`
	Tokens        []int64 `json:"tokens"`
	Groups        []struct {
		Name     string  `json:"name"`
		Requests []int64 `json:"requests"`
	} `json:"groups"`
}

type overviewAnswer struct {
	Summary summaryAnswer `json:"summary"`
	Series  seriesAnswer  `json:"series"`
	Top     struct {
		Model, Key, Backend topAnswer
	} `json:"top"`
}

// checkAgainstSQL fetches api/overview for f and compares every figure with SQL over the
// same files.
func checkAgainstSQL(t *testing.T, h *Handler, files []string, f filter) {
	t.Helper()
	f.extra = strings.TrimPrefix(f.extra+"&limit=500", "&")
	var o overviewAnswer
	getJSON(t, h, "/api/overview?"+f.query(), &o)
	e := oracle(t, files, f)
	s := o.Summary
	got := fmt.Sprint(s.Requests, s.Errors, s.PromptTokens, s.CompletionTokens, s.TotalTokens, s.CostedRequests)
	want := fmt.Sprint(e.requests, e.errors, e.prompt, e.completion, e.total, e.costed)
	if got != want {
		t.Errorf("%s: requests errors prompt completion total costed = %s, SQL %s", f.query(), got, want)
	}
	if wantCost := float64(e.costNanos) / 1e9; s.CostUSD != wantCost {
		t.Errorf("%s: cost %v, SQL %v", f.query(), s.CostUSD, wantCost)
	}
	checkPercentile(t, f.query()+" latency p50", s.LatencyP50, e.latencies, 0.5)
	checkPercentile(t, f.query()+" latency p95", s.LatencyP95, e.latencies, 0.95)
	checkPercentile(t, f.query()+" ttft p50", s.TTFTP50, e.ttfts, 0.5)
	checkPercentile(t, f.query()+" ttft p95", s.TTFTP95, e.ttfts, 0.95)
	for i, top := range []topAnswer{o.Top.Model, o.Top.Key, o.Top.Backend} {
		got := map[string]int64{}
		for _, r := range top.Rows {
			got[r.Name] = r.Requests
		}
		if fmt.Sprint(got) != fmt.Sprint(e.byName[i]) || top.Other != nil {
			t.Errorf("%s: top by %s = %v, SQL %v", f.query(), dimNames[i], got, e.byName[i])
		}
	}
	var sum, tokens int64
	for i, n := range o.Series.Requests {
		sum += n
		tokens += o.Series.Tokens[i]
		var g int64
		for _, grp := range o.Series.Groups {
			g += grp.Requests[i]
		}
		if g != n {
			t.Errorf("%s: bucket %d: groups stack to %d, total %d", f.query(), i, g, n)
		}
	}
	if sum != e.requests || tokens != e.prompt+e.completion {
		t.Errorf("%s: series sums to %d requests, %d tokens; SQL %d, %d", f.query(), sum, tokens, e.requests, e.prompt+e.completion)
	}
}

// TestAPIMatchesSQL writes 40 days of varied calls through the real writer (so the live file,
// a monthly archive and the hourly rollup are all read), then checks for many ranges and
// filters that every count, token sum and cost equals SQL over records, and percentiles are
// within a bucket's width of the exact ones.
func TestAPIMatchesSQL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "record.db")
	now := time.Now()
	rng := rand.New(rand.NewPCG(1, 14))
	writeRecords(t, path, genRecords(rng, now, 40*24*time.Hour, 6000))
	// A few more in the last minutes, left above the rollup's covered rowid: the app stays
	// open and its writer writes the rollup only every few seconds.
	app := openApp(t, path)
	defer app.Cleanup()
	for _, r := range genRecords(rng, now, 3*time.Minute, 40) {
		app.Writer().Enqueue(r)
	}
	syncApp(t, app)

	files, err := audit.DatabaseFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("files %v: want an archive too", files)
	}
	h := newTestHandler(t, path, now)
	odd := 17*time.Minute + 3*time.Second + 250*time.Millisecond
	ranges := []struct {
		name     string
		from, to time.Time
	}{
		{"1h", now.Add(-time.Hour), now},
		{"24h", now.Add(-24 * time.Hour), now},
		{"7d", now.Add(-7 * 24 * time.Hour), now},
		{"30d", now.Add(-30 * 24 * time.Hour), now},
		{"odd edges", now.Add(-9*24*time.Hour - odd), now.Add(-2*24*time.Hour + odd)},
		{"20d odd edges, daily", now.Add(-20*24*time.Hour - odd), now.Add(-3*24*time.Hour + odd)},
		{"midnight to midnight", time.Date(now.Year(), now.Month(), now.Day()-12, 0, 0, 0, 0, time.Local), time.Date(now.Year(), now.Month(), now.Day()-2, 0, 0, 0, 0, time.Local)},
		{"hour aligned", now.Truncate(time.Hour).Add(-48 * time.Hour), now.Truncate(time.Hour).Add(-5 * time.Hour)},
		{"inside one hour", now.Truncate(time.Hour).Add(-30*time.Hour + 5*time.Minute), now.Truncate(time.Hour).Add(-30*time.Hour + 50*time.Minute)},
		{"6h, raw", now.Add(-6 * time.Hour), now},
		{"6h01, rollup", now.Add(-6*time.Hour - time.Minute), now},
		{"all", now.Add(-60 * 24 * time.Hour), now.Add(time.Hour)},
	}
	filters := []filter{
		{},
		{model: ptr("gpt-4o")},
		{key: ptr("team-a")},
		{key: ptr("")},
		{backend: ptr("azure"), class: 5},
		{class: 2},
		{class: 4, model: ptr("o3"), key: ptr("ci")},
		{model: ptr("")},
	}
	for _, r := range ranges {
		for _, f := range filters {
			f.from, f.to = r.from, r.to
			t.Run(r.name+"/"+f.query()[strings.Index(f.query(), "&to=")+1:], func(t *testing.T) {
				checkAgainstSQL(t, h, files, f)
			})
		}
	}
}

// TestSeriesBucketsMatchSQL checks each hourly bucket of a 3-day series against SQL.
func TestSeriesBucketsMatchSQL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "record.db")
	now := time.Now()
	writeRecords(t, path, genRecords(rand.New(rand.NewPCG(2, 14)), now, 3*24*time.Hour, 2000))
	h := newTestHandler(t, path, now)
	files, _ := audit.DatabaseFiles(path)
	f := filter{from: now.Add(-3*24*time.Hour + 10*time.Minute), to: now, model: ptr("gpt-4o")}
	for _, bucket := range []string{"1h", "1d"} {
		checkSeries(t, h, files, f, bucket)
	}
}

func checkSeries(t *testing.T, h *Handler, files []string, f filter, bucket string) {
	t.Helper()
	var s seriesAnswer
	getJSON(t, h, "/api/series?bucket="+bucket+"&by=key&"+f.query(), &s)
	width := map[string]int64{"1h": 3600, "1d": 86400}[bucket]
	if s.BucketSeconds != width || len(s.Times) != len(s.Requests) || len(s.Times) < 3 {
		t.Fatalf("bucket %d, %d times, %d values", s.BucketSeconds, len(s.Times), len(s.Requests))
	}
	for i, at := range s.Times {
		bf := f
		start := time.Unix(at, 0)
		bf.from, bf.to = start, start.Add(time.Hour)
		if bucket == "1d" {
			bf.to = start.AddDate(0, 0, 1)
		}
		if i == 0 {
			bf.from = f.from
		}
		if i == len(s.Times)-1 {
			bf.to = f.to
		}
		if e := oracle(t, files, bf); e.requests != s.Requests[i] {
			t.Errorf("bucket %s: %d requests, SQL %d", time.Unix(at, 0), s.Requests[i], e.requests)
		}
	}
	keys := map[string]bool{}
	for _, g := range s.Groups {
		keys[g.Name] = true
	}
	if !keys[""] || !keys["team-a"] {
		t.Errorf("series groups %v: want one per key", keys)
	}
}
