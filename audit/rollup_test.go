package audit

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHistBuckets(t *testing.T) {
	prev := -1
	for v := int64(-3); v < 1<<20; v++ {
		b := HistBucket(v)
		if b < prev || b > prev+1 {
			t.Fatalf("HistBucket(%d) = %d after %d: buckets must be contiguous", v, b, prev)
		}
		prev = b
		lo, hi := HistBounds(b)
		if c := max(v, 0); c < lo || c >= hi {
			t.Fatalf("HistBucket(%d) = %d, bounds [%d, %d)", v, b, lo, hi)
		}
		if mid := HistValue(b); mid < lo || mid >= hi {
			t.Fatalf("HistValue(%d) = %d outside [%d, %d)", b, mid, lo, hi)
		}
		// The documented width: exact below 16, else at most 1/8 of the lower bound.
		if hi-lo > 1 && (lo < 16 || (hi-lo)*8 > lo) {
			t.Fatalf("bucket %d [%d, %d) wider than documented", b, lo, hi)
		}
	}
	for _, v := range []int64{MaxHistValue, MaxHistValue + 1, 1 << 62, 1<<63 - 1} {
		if b := HistBucket(v); b != HistBuckets-1 {
			t.Errorf("HistBucket(%d) = %d, want the last bucket %d", v, b, HistBuckets-1)
		}
	}
	if lo, hi := HistBounds(HistBuckets - 1); hi != MaxHistValue+1 || lo > MaxHistValue {
		t.Errorf("last bucket [%d, %d), want it to end at MaxHistValue+1", lo, hi)
	}
}

func TestHistEncodeMerge(t *testing.T) {
	var a, b Hist
	want := make(map[int]uint64)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		v := rng.Int64N(200000) - 10
		want[HistBucket(v)]++
		if i%3 == 0 {
			a.Add(v)
		} else {
			b.Add(v)
		}
	}
	merged, err := mergeHists(nil, a.AppendEncoded(nil), b.AppendEncoded(nil))
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[int]uint64)
	last := -1
	if err := DecodeHist(merged, func(bucket int, c uint64) {
		if bucket <= last {
			t.Fatalf("bucket %d after %d", bucket, last)
		}
		last = bucket
		got[bucket] = c
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("merged = %v\nwant %v", got, want)
	}
	for _, bad := range [][]byte{{0x80}, {1}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1}, {0xb0, 0x02, 1}} {
		if err := DecodeHist(bad, func(int, uint64) {}); err == nil {
			t.Errorf("DecodeHist(%x) accepted", bad)
		}
	}
}

// variedRecord is a record of one of a few models, keys, backends and
// statuses, some with cost and some streamed, spread over several hours.
func variedRecord(i int, base time.Time, rng *rand.Rand) *Record {
	r := fullRecord(i, base.Add(time.Duration(rng.IntN(5*3600))*time.Second))
	r.Model = []string{"gpt-4o", "gpt-4o-mini", "o3", "claude-3", ""}[rng.IntN(5)]
	r.Key = []string{"", "team-a", "team-b", "ci"}[rng.IntN(4)]
	r.Backend = []string{"primary", "secondary", ""}[rng.IntN(3)]
	r.Status = []int{200, 200, 200, 200, 429, 502, 0, 503}[rng.IntN(8)]
	r.PromptTokens = rng.Int64N(5000)
	r.CompletionTokens = rng.Int64N(2000)
	r.TotalTokens = r.PromptTokens + r.CompletionTokens
	r.LatencyMs = rng.Int64N(30000)
	r.Stream = rng.IntN(2) == 0
	r.TTFTMs = rng.Int64N(3000) - 5 // some negative: no byte sent
	if rng.IntN(3) > 0 {
		c := float64(rng.IntN(1e7)) * 1e-9 * 7
		r.CostUSD = &c
	}
	return r
}

// checkRollup compares rollup_hourly with the same sums computed by SQL over records,
// and covered with the table's largest rowid.
func checkRollup(t *testing.T, path string) {
	t.Helper()
	checkRollupTable(t, path, "rollup_hourly", "hour", 13)
	checkRollupTable(t, path, "rollup_daily", "day", 10)
	meta := query(t, path, `SELECT version, covered, (SELECT COALESCE(MAX(rowid), 0) FROM records) FROM rollup_meta`)
	if fmt.Sprint(meta) != fmt.Sprintf("[[%d %d %d]]", RollupVersion, meta[0][2], meta[0][2]) {
		t.Errorf("rollup_meta = %v, want version %d and covered = max rowid", meta, RollupVersion)
	}
}

// checkRollupTable compares one rollup table with SQL over records grouped by the first
// prefix characters of Time.
func checkRollupTable(t *testing.T, path, table, period string, prefix int) {
	t.Helper()
	rowids, minmax := "0, 0", "0, 0"
	if table == "rollup_hourly" {
		rowids, minmax = "MIN(rowid), MAX(rowid)", "min_rowid, max_rowid"
	}
	want := query(t, path, `SELECT substr(Time, 1, `+strconv.Itoa(prefix)+`) h, COALESCE(Model, ''), COALESCE("Key", ''), COALESCE(Backend, ''),
		COALESCE(Status, 200) / 100 c, COUNT(*), TOTAL(PromptTokens), TOTAL(CompletionTokens), TOTAL(TotalTokens),
		TOTAL(CAST(ROUND(CostUSD * 1e9) AS INTEGER)), COUNT(CostUSD), `+rowids+`, group_concat(LatencyMs), group_concat(TTFTMs)
		FROM records GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5`)
	got := query(t, path, `SELECT `+period+`, model, key_name, backend, status_class, requests, prompt_tokens, completion_tokens,
		total_tokens, cost_nanos, costed, `+minmax+`, latency_hist, ttft_hist FROM `+table+` ORDER BY 1, 2, 3, 4, 5`)
	if len(got) != len(want) {
		t.Fatalf("%s has %d rows, SQL over records %d groups", table, len(got), len(want))
	}
	hist := func(v any) string {
		var out []string
		switch v := v.(type) {
		case string: // group_concat of the raw values
			counts := map[int]int{}
			for _, s := range strings.Split(v, ",") {
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				counts[HistBucket(n)]++
			}
			keys := make([]int, 0, len(counts))
			for k := range counts {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				out = append(out, fmt.Sprintf("%d:%d", k, counts[k]))
			}
		case []byte:
			if err := DecodeHist(v, func(b int, c uint64) { out = append(out, fmt.Sprintf("%d:%d", b, c)) }); err != nil {
				t.Fatal(err)
			}
		}
		return strings.Join(out, " ")
	}
	for i := range got {
		g, w := got[i], want[i]
		for j := 0; j < 13; j++ {
			gv, wv := fmt.Sprint(g[j]), fmt.Sprint(w[j])
			if f, ok := w[j].(float64); ok {
				wv = strconv.FormatInt(int64(f), 10)
			}
			if gv != wv {
				t.Errorf("%s group %v column %d: rollup %s, SQL %s", table, w[:5], j, gv, wv)
			}
		}
		if hist(g[13]) != hist(w[13]) || hist(g[14]) != hist(w[14]) {
			t.Errorf("%s group %v histograms: rollup %s / %s, SQL %s / %s", table, w[:5], hist(g[13]), hist(g[14]), hist(w[13]), hist(w[14]))
		}
	}
}

func TestRollupEqualsSQLOverRecords(t *testing.T) {
	cfg := testConfig(t)
	cfg.batchSize = 37
	base := time.Date(2026, 7, 23, 21, 0, 0, 0, time.Local) // the rows cross midnight
	cfg.now = newFakeClock(base).now
	w := startWriter(t, cfg)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range 2000 {
		if !w.Enqueue(variedRecord(i, base, rng)) {
			t.Fatalf("Enqueue %d refused", i)
		}
		if i%500 == 0 {
			syncWriter(t, w)
		}
	}
	syncWriter(t, w)
	if w.Written() != 2000 {
		t.Fatalf("written %d, want 2000", w.Written())
	}
	checkRollup(t, cfg.path)
}

func TestRollupBuiltForExistingRows(t *testing.T) {
	cfg := testConfig(t)
	base := time.Date(2026, 7, 23, 9, 0, 0, 0, time.Local)
	cfg.now = newFakeClock(base).now
	// An origin file: no Status, latency or cost columns, rows of two hours.
	exec(t, cfg.path, `CREATE TABLE records (
			id INTEGER PRIMARY KEY AUTOINCREMENT,
			Time TEXT, IP TEXT, Model TEXT, Type TEXT,
			CompletionTokens INTEGER, PromptTokens INTEGER, TotalTokens INTEGER,
			Tool BOOLEAN, Multimodal BOOLEAN,
			Headers TEXT, Request TEXT, Response TEXT);
		INSERT INTO records (Time, Model, CompletionTokens, PromptTokens, TotalTokens) VALUES
			('2026-07-23 08:10:00.000001', 'old', 1, 2, 3),
			('2026-07-23 08:20:00.000001', 'old', 4, 5, 9),
			('2026-07-23 09:00:00.000000', NULL, NULL, 7, 7)`)
	w := startWriter(t, cfg)
	w.Enqueue(fullRecord(0, base.Add(time.Minute)))
	syncWriter(t, w)
	checkRollup(t, cfg.path)
	rows := query(t, cfg.path, `SELECT hour, model, status_class, requests, prompt_tokens FROM rollup_hourly WHERE model != 'gpt-4o' ORDER BY 1, 2`)
	if want := "[[2026-07-23 08 old 2 2 7] [2026-07-23 09  2 1 7]]"; fmt.Sprint(rows) != want {
		t.Errorf("origin rows rolled up as %v, want %s (NULL Status counts as 2xx)", rows, want)
	}
	// The dashboard's indexes were made too.
	idx := query(t, cfg.path, `SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'records_%' ORDER BY 1`)
	if fmt.Sprint(idx) != "[[records_failed]]" {
		t.Errorf("indexes %v", idx)
	}
}

// TestRollupCatchesUpForeignRows inserts rows through another connection, between the
// writer's batches and while it is closed: the next batch, or the next open, sums them.
func TestRollupCatchesUpForeignRows(t *testing.T) {
	cfg := testConfig(t)
	base := time.Date(2026, 7, 23, 9, 0, 0, 0, time.Local)
	cfg.now = newFakeClock(base).now
	w := startWriter(t, cfg)
	w.Enqueue(fullRecord(0, base))
	syncWriter(t, w)
	foreign := `INSERT INTO records (Time, Model, PromptTokens, Status, LatencyMs) VALUES
		('2026-07-23 09:30:00.000000', 'foreign', 3, 200, 40), ('2026-07-23 07:00:00.000000', 'foreign', 4, 500, 41)`
	exec(t, cfg.path, foreign)
	w.Enqueue(fullRecord(1, base))
	syncWriter(t, w)
	checkRollup(t, cfg.path)

	closeWriter(t, w)
	exec(t, cfg.path, foreign)
	w2 := startWriter(t, cfg)
	checkRollup(t, cfg.path)
	w2.Enqueue(fullRecord(2, base))
	syncWriter(t, w2)
	checkRollup(t, cfg.path)
}

// TestRollupRebuiltWhenVersionDiffers: a rollup of another layout is dropped and rebuilt.
func TestRollupRebuiltWhenVersionDiffers(t *testing.T) {
	cfg := testConfig(t)
	base := time.Date(2026, 7, 23, 9, 0, 0, 0, time.Local)
	cfg.now = newFakeClock(base).now
	w := startWriter(t, cfg)
	w.Enqueue(fullRecord(0, base))
	syncWriter(t, w)
	closeWriter(t, w)
	exec(t, cfg.path, `UPDATE rollup_meta SET version = 999; UPDATE rollup_hourly SET requests = 12345`)
	startWriter(t, cfg)
	checkRollup(t, cfg.path)
}

// TestRollupFailureKeepsRows makes the rollup upsert fail: the rows are committed all the
// same, the rollup is dropped (so no reader trusts it), and the next open rebuilds it.
func TestRollupFailureKeepsRows(t *testing.T) {
	cfg := testConfig(t)
	base := time.Date(2026, 7, 23, 9, 0, 0, 0, time.Local)
	cfg.now = newFakeClock(base).now
	w, err := openWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.st.conn.Exec(`CREATE TRIGGER doom BEFORE INSERT ON rollup_hourly BEGIN SELECT RAISE(ABORT, 'simulated'); END`); err != nil {
		t.Fatal(err)
	}
	go w.run()
	for i := range 10 {
		w.Enqueue(fullRecord(i, base))
	}
	syncWriter(t, w)
	if w.Written() != 10 || w.Failed() != 0 {
		t.Fatalf("written %d failed %d, want 10 0", w.Written(), w.Failed())
	}
	if n := query(t, cfg.path, `SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'rollup_%'`)[0][0]; n != int64(0) {
		t.Errorf("%d rollup tables left after a failed update, want none", n)
	}
	w.Enqueue(fullRecord(10, base)) // written without a rollup
	syncWriter(t, w)
	closeWriter(t, w)
	startWriter(t, cfg)
	checkRollup(t, cfg.path)
	if got := count(t, cfg.path); got != 11 {
		t.Errorf("rows = %d, want 11", got)
	}
}

// TestRotatedArchiveKeepsRollup: an archive carries its complete rollup.
func TestRotatedArchiveKeepsRollup(t *testing.T) {
	cfg := testConfig(t)
	clock := newFakeClock(localDate(2026, 1, 31))
	cfg.now = clock.now
	rotated := make(chan string, 1)
	cfg.rotated = func(archive string) { rotated <- archive }
	w := startWriter(t, cfg)
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range 300 {
		w.Enqueue(variedRecord(i, localDate(2026, 1, 31).Add(-6*time.Hour), rng))
	}
	syncWriter(t, w)
	clock.set(localDate(2026, 2, 1))
	w.Enqueue(fullRecord(0, localDate(2026, 2, 1)))
	syncWriter(t, w)
	archive := <-rotated
	checkRollup(t, archive)
	checkRollup(t, cfg.path)
	if _, err := os.Stat(archive); err != nil {
		t.Fatal(err)
	}
}

// TestRollupWrittenLater: with the default interval the sums are written every few seconds,
// not every batch; covered stays behind meanwhile (readers read the rows above it), batches
// that roll back lose none of the earlier sums, and closing the file writes what is pending.
func TestRollupWrittenLater(t *testing.T) {
	cfg := testConfig(t)
	cfg.rollupInterval = time.Hour
	cfg.batchSize = 8
	base := time.Date(2026, 7, 23, 9, 0, 0, 0, time.Local)
	cfg.now = newFakeClock(base).now
	w, err := openWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Every fifth row takes its whole transaction down.
	if err := w.st.conn.Exec(`CREATE TRIGGER doom BEFORE INSERT ON records WHEN NEW.LatencyMs % 5 = 4
		BEGIN SELECT RAISE(ROLLBACK, 'simulated disk I/O error'); END`); err != nil {
		t.Fatal(err)
	}
	go w.run()
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range 300 {
		w.Enqueue(variedRecord(i, base, rng))
	}
	syncWriter(t, w)
	if w.Failed() == 0 || w.Written() == 0 {
		t.Fatalf("written %d failed %d: the test provokes nothing", w.Written(), w.Failed())
	}
	meta := query(t, cfg.path, `SELECT covered, (SELECT MAX(rowid) FROM records) FROM rollup_meta`)[0]
	if meta[0].(int64) >= meta[1].(int64) {
		t.Errorf("covered %d, max rowid %d: want the rollup behind before its interval", meta[0], meta[1])
	}
	closeWriter(t, w)
	checkRollup(t, cfg.path)
}
