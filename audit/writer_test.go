package audit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"
)

func fullRecord(i int, at time.Time) *Record {
	return &Record{
		Time:             at,
		IP:               "192.0.2.7",
		Model:            "gpt-4o",
		Type:             "chat.completions",
		CompletionTokens: 7,
		PromptTokens:     11,
		TotalTokens:      18,
		Tool:             true,
		Multimodal:       false,
		Headers:          http.Header{"Authorization": {"Bearer sk-abcdefghijklmnopqrstuvwxyz"}, "Accept": {"*/*"}},
		Request:          []byte(`{"model":"gpt-4o","messages":[]}`),
		Response:         []byte(`{"id":"x"}`),
		Backend:          "primary",
		Status:           200,
		LatencyMs:        int64(100 + i),
		TTFTMs:           12,
		Stream:           true,
		Endpoint:         "/v1/chat/completions",
		RequestID:        "req-" + strconv.Itoa(i),
		Tried:            "primary",
	}
}

func TestWriterWritesEveryRowInBatches(t *testing.T) {
	for _, n := range []int{1, 63, 64, 65, 1000} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.flushInterval = 5 * time.Millisecond // exercise lingering too
			w := startWriter(t, cfg)
			at := time.Date(2026, 7, 23, 11, 29, 25, 123456789, time.Local)
			for i := range n {
				if !w.Enqueue(fullRecord(i, at)) {
					t.Fatalf("Enqueue %d refused", i)
				}
			}
			syncWriter(t, w)
			if got := count(t, cfg.path); got != int64(n) {
				t.Fatalf("rows = %d, want %d", got, n)
			}
			if w.Written() != uint64(n) || w.Dropped() != 0 || w.Failed() != 0 {
				t.Errorf("written %d dropped %d failed %d, want %d 0 0", w.Written(), w.Dropped(), w.Failed(), n)
			}
			// Every row is distinct and complete.
			rows := query(t, cfg.path, `SELECT COUNT(DISTINCT RequestID), MIN(LatencyMs), MAX(LatencyMs) FROM records`)
			if want := []any{int64(n), int64(100), int64(100 + n - 1)}; fmt.Sprint(rows[0]) != fmt.Sprint(want) {
				t.Errorf("distinct/min/max = %v, want %v", rows[0], want)
			}
		})
	}
}

func TestWriterStoresEveryColumn(t *testing.T) {
	cfg := testConfig(t)
	w := startWriter(t, cfg)
	at := time.Date(2026, 7, 23, 11, 29, 25, 123456789, time.Local)
	w.Enqueue(fullRecord(1, at))
	nonStream := fullRecord(2, at)
	nonStream.Stream, nonStream.TTFTMs, nonStream.Headers, nonStream.Error, nonStream.Status = false, 5, nil, "upstream_error", 502
	cost := 0.000125
	nonStream.Key, nonStream.CostUSD = "team-a", &cost
	w.Enqueue(nonStream)
	syncWriter(t, w)

	rows := query(t, cfg.path, `SELECT id, Time, IP, Model, Type, CompletionTokens, PromptTokens, TotalTokens,
		Tool, Multimodal, Headers, Request, Response, Backend, Status, LatencyMs, TTFTMs, Stream,
		Endpoint, RequestID, Tried, Error, Key, CostUSD FROM records ORDER BY id`)
	want := [][]any{
		{int64(1), "2026-07-23 11:29:25.123456", "192.0.2.7", "gpt-4o", "chat.completions", int64(7), int64(11), int64(18),
			int64(1), int64(0), `{"accept":"*/*","authorization":"Bearer sk-ab…yz"}`, `{"model":"gpt-4o","messages":[]}`, `{"id":"x"}`,
			"primary", int64(200), int64(101), int64(12), int64(1), "/v1/chat/completions", "req-1", "primary", "", nil, nil},
		{int64(2), "2026-07-23 11:29:25.123456", "192.0.2.7", "gpt-4o", "chat.completions", int64(7), int64(11), int64(18),
			int64(1), int64(0), nil, `{"model":"gpt-4o","messages":[]}`, `{"id":"x"}`,
			"primary", int64(502), int64(102), nil, int64(0), "/v1/chat/completions", "req-2", "primary", "upstream_error", "team-a", 0.000125},
	}
	if fmt.Sprintf("%#v", rows) != fmt.Sprintf("%#v", want) {
		t.Errorf("rows:\n%#v\nwant:\n%#v", rows, want)
	}
	// The origin's own query shape still works.
	if got := query(t, cfg.path, `SELECT SUM(TotalTokens) FROM records WHERE Model = 'gpt-4o'`)[0][0]; got != int64(36) {
		t.Errorf("origin-style query = %v, want 36", got)
	}
}

func TestEnqueueFillsTimeWhenZero(t *testing.T) {
	cfg := testConfig(t)
	cfg.now = newFakeClock(time.Date(2026, 3, 4, 5, 6, 7, 8000, time.Local)).now
	w := startWriter(t, cfg)
	w.Enqueue(&Record{Model: "m"})
	syncWriter(t, w)
	if got := query(t, cfg.path, `SELECT Time FROM records`)[0][0]; got != "2026-03-04 05:06:07.000008" {
		t.Errorf("Time = %v", got)
	}
}

func TestEnqueueDropsWhenFullWithoutBlocking(t *testing.T) {
	cfg := testConfig(t)
	cfg.queueSize = 4
	// The goroutine is not started yet, so nothing drains the queue: any
	// blocking send would hang the test.
	w, err := openWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	at := localDate(2026, 5, 1)
	var accepted int
	for i := range 10 {
		if w.Enqueue(fullRecord(i, at)) {
			accepted++
		}
	}
	if accepted != 4 || w.Dropped() != 6 || w.QueueDepth() != 4 || w.QueueCapacity() != 4 {
		t.Fatalf("accepted %d dropped %d depth %d cap %d, want 4 6 4 4", accepted, w.Dropped(), w.QueueDepth(), w.QueueCapacity())
	}
	go w.run()
	syncWriter(t, w)
	if got := count(t, cfg.path); got != 4 {
		t.Errorf("rows = %d, want the 4 accepted", got)
	}
	if w.QueueDepth() != 0 {
		t.Errorf("queue depth after sync = %d", w.QueueDepth())
	}
	closeWriter(t, w)
	if w.Enqueue(fullRecord(99, at)) {
		t.Error("Enqueue after close accepted a record")
	}
	if w.Dropped() != 7 {
		t.Errorf("dropped = %d, want 7 (one after close)", w.Dropped())
	}
	if err := w.Sync(context.Background()); !errors.Is(err, errClosed) {
		t.Errorf("Sync after close = %v, want errClosed", err)
	}
	if got := count(t, cfg.path); got != 4 {
		t.Errorf("rows after close = %d, want 4", got)
	}
}

func TestCloseDrainsQueueAndLeavesNoSideFiles(t *testing.T) {
	cfg := testConfig(t)
	cfg.flushInterval = time.Hour // only close can flush these rows
	cfg.batchSize = 1000
	w, err := newWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		w.Enqueue(fullRecord(i, localDate(2026, 5, 1)))
	}
	closeWriter(t, w)
	if got := count(t, cfg.path); got != 500 {
		t.Errorf("rows = %d, want 500", got)
	}
	assertNoSideFiles(t, cfg.path)
}

func TestBodiesAndRedactionPolicies(t *testing.T) {
	tests := []struct {
		name          string
		pol           policy
		wantReq       any
		wantHeaders   string
		wantResponses any
	}{
		{"full default redaction", policy{bodies: bodyPolicy{mode: BodiesFull}, redact: newRedactor(DefaultRedactHeaders)},
			`{"model":"gpt-4o","messages":[]}`, `{"accept":"*/*","authorization":"Bearer sk-ab…yz"}`, `{"id":"x"}`},
		{"none", policy{bodies: bodyPolicy{mode: BodiesNone}, redact: newRedactor(DefaultRedactHeaders)},
			nil, `{"accept":"*/*","authorization":"Bearer sk-ab…yz"}`, nil},
		{"truncate", policy{bodies: bodyPolicy{mode: BodiesTruncate, limit: 8}, redact: newRedactor(nil)},
			`{"model"`, `{"accept":"*/*","authorization":"Bearer sk-abcdefghijklmnopqrstuvwxyz"}`, `{"id":"x`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.policy = &tt.pol
			w := startWriter(t, cfg)
			w.Enqueue(fullRecord(0, localDate(2026, 5, 1)))
			syncWriter(t, w)
			row := query(t, cfg.path, `SELECT Request, Headers, Response FROM records`)[0]
			if row[0] != tt.wantReq || row[1] != tt.wantHeaders || row[2] != tt.wantResponses {
				t.Errorf("Request, Headers, Response = %#v, want %#v, %#v, %#v", row, tt.wantReq, tt.wantHeaders, tt.wantResponses)
			}
		})
	}
}

func assertNoSideFiles(t *testing.T, path string) {
	t.Helper()
	for _, s := range sideFiles {
		if _, err := os.Stat(path + s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("side file %s%s exists (err %v)", filepath.Base(path), s, err)
		}
	}
}

func TestRotationSplitsBatchAtMonthBoundary(t *testing.T) {
	cfg := testConfig(t)
	clock := newFakeClock(localDate(2026, 1, 31))
	cfg.now = clock.now
	w, err := openWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeWriter(t, w) })
	lastJan := time.Date(2026, 1, 31, 23, 59, 59, 999999000, time.Local)
	firstFeb := time.Date(2026, 2, 1, 0, 0, 0, 0, time.Local)
	// Queued before the goroutine starts: one batch straddling the boundary.
	for i, at := range []time.Time{lastJan, lastJan, firstFeb, firstFeb, firstFeb} {
		w.Enqueue(fullRecord(i, at))
	}
	go w.run()
	syncWriter(t, w)

	archive := filepath.Join(filepath.Dir(cfg.path), "record_202601.db")
	if got := query(t, archive, `SELECT COUNT(*), MIN(Time), MAX(Time) FROM records`)[0]; fmt.Sprint(got) != "[2 2026-01-31 23:59:59.999999 2026-01-31 23:59:59.999999]" {
		t.Errorf("archive rows = %v, want the 2 January rows", got)
	}
	assertNoSideFiles(t, archive)
	if got := query(t, cfg.path, `SELECT COUNT(*), MIN(Time) FROM records`)[0]; fmt.Sprint(got) != "[3 2026-02-01 00:00:00.000000]" {
		t.Errorf("live rows = %v, want the 3 February rows", got)
	}
	// A late January row (a long stream) goes into the current file rather
	// than rotating backwards.
	w.Enqueue(fullRecord(9, lastJan))
	syncWriter(t, w)
	if got := count(t, cfg.path); got != 4 {
		t.Errorf("live rows = %d, want 4", got)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(cfg.path), "record_202602.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unexpected February archive (err %v)", err)
	}
}

func TestRotationOnClockTick(t *testing.T) {
	cfg := testConfig(t)
	clock := newFakeClock(localDate(2026, 2, 10))
	cfg.now = clock.now
	cfg.checkInterval = time.Millisecond
	rotated := make(chan string, 1)
	cfg.rotated = func(archive string) { rotated <- archive }
	w := startWriter(t, cfg)
	w.Enqueue(fullRecord(0, localDate(2026, 2, 10)))
	syncWriter(t, w)
	select {
	case a := <-rotated:
		t.Fatalf("rotated to %s while the month is unchanged", a)
	default:
	}

	clock.set(localDate(2026, 3, 1)) // no row needed: the tick notices
	var archive string
	select {
	case archive = <-rotated:
	case <-time.After(10 * time.Second):
		t.Fatal("no rotation after the clock moved into March")
	}
	if want := filepath.Join(filepath.Dir(cfg.path), "record_202602.db"); archive != want {
		t.Errorf("archive = %s, want %s", archive, want)
	}
	if got := count(t, archive); got != 1 {
		t.Errorf("archive rows = %d, want 1", got)
	}
	assertNoSideFiles(t, archive)
	w.Enqueue(fullRecord(1, localDate(2026, 3, 1)))
	syncWriter(t, w)
	if got := count(t, cfg.path); got != 1 {
		t.Errorf("fresh file rows = %d, want 1", got)
	}
}

func TestRotationArchiveNameCollision(t *testing.T) {
	cfg := testConfig(t)
	clock := newFakeClock(time.Date(2026, 2, 1, 0, 0, 5, 0, time.Local))
	cfg.now = clock.now
	taken := filepath.Join(filepath.Dir(cfg.path), "record_202601.db")
	if err := os.WriteFile(taken, []byte("not ours"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := startWriter(t, cfg)
	w.Enqueue(fullRecord(0, localDate(2026, 1, 20)))
	w.Enqueue(fullRecord(1, localDate(2026, 2, 1)))
	syncWriter(t, w)

	suffixed := filepath.Join(filepath.Dir(cfg.path), fmt.Sprintf("record_202601_%d.db", clock.now().Unix()))
	if got := count(t, suffixed); got != 1 {
		t.Errorf("suffixed archive rows = %d, want 1", got)
	}
	if b, err := os.ReadFile(taken); err != nil || string(b) != "not ours" {
		t.Errorf("existing archive changed: %q, %v", b, err)
	}
	assertNoSideFiles(t, suffixed)
}

func TestRestartInNewMonthRotates(t *testing.T) {
	cfg := testConfig(t)
	clock := newFakeClock(localDate(2026, 4, 30))
	cfg.now = clock.now
	w, err := newWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.Enqueue(fullRecord(0, localDate(2026, 4, 30)))
	closeWriter(t, w)

	clock.set(localDate(2026, 5, 2))
	startWriter(t, cfg) // rotates while opening
	archive := filepath.Join(filepath.Dir(cfg.path), "record_202604.db")
	if got := count(t, archive); got != 1 {
		t.Errorf("archive rows = %d, want 1", got)
	}
	if got := count(t, cfg.path); got != 0 {
		t.Errorf("live rows = %d, want 0", got)
	}
}

func TestRotateOffKeepsOneFile(t *testing.T) {
	cfg := testConfig(t)
	cfg.rotate = false
	w := startWriter(t, cfg)
	w.Enqueue(fullRecord(0, localDate(2026, 1, 20)))
	w.Enqueue(fullRecord(1, localDate(2026, 2, 20)))
	syncWriter(t, w)
	if got := count(t, cfg.path); got != 2 {
		t.Errorf("rows = %d, want 2", got)
	}
	files, err := DatabaseFiles(cfg.path)
	if err != nil || len(files) != 1 {
		t.Errorf("files = %v, %v; want only the live file", files, err)
	}
}

func TestMigratesOriginSchema(t *testing.T) {
	tests := []struct {
		name   string
		schema string
	}{
		{"origin since 03bb132", `CREATE TABLE records (
			id INTEGER PRIMARY KEY AUTOINCREMENT,
			Time TEXT, IP TEXT, Model TEXT, Type TEXT,
			CompletionTokens INTEGER, PromptTokens INTEGER, TotalTokens INTEGER,
			Tool BOOLEAN, Multimodal BOOLEAN,
			Headers TEXT, Request TEXT, Response TEXT)`},
		{"origin before 03bb132", `CREATE TABLE records (
			Time TEXT PRIMARY KEY, IP TEXT, Model TEXT, Type TEXT,
			CompletionTokens INTEGER, PromptTokens INTEGER, TotalTokens INTEGER,
			Tool BOOLEAN, Multimodal BOOLEAN,
			Headers TEXT, Request TEXT, Response TEXT)`},
		{"half migrated", `CREATE TABLE records (
			id INTEGER PRIMARY KEY AUTOINCREMENT,
			Time TEXT, IP TEXT, Model TEXT, Type TEXT,
			CompletionTokens INTEGER, PromptTokens INTEGER, TotalTokens INTEGER,
			Tool BOOLEAN, Multimodal BOOLEAN,
			Headers TEXT, Request TEXT, Response TEXT, Backend TEXT, Status INTEGER)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.now = newFakeClock(localDate(2026, 7, 1)).now
			exec(t, cfg.path, tt.schema+`;
				INSERT INTO records (Time, IP, Model, Type, CompletionTokens, PromptTokens, TotalTokens, Tool, Multimodal, Headers, Request, Response)
				VALUES ('2026-07-01 10:00:00.000001', '10.0.0.1', 'old-model', 'chat.completions', 1, 2, 3, 0, 0, '{}', '{}', '{}')`)
			w := startWriter(t, cfg)
			w.Enqueue(fullRecord(0, localDate(2026, 7, 2)))
			syncWriter(t, w)

			rows := query(t, cfg.path, `SELECT Model, TotalTokens, Backend, Status, Tried FROM records ORDER BY rowid`)
			want := "[[old-model 3 <nil> <nil> <nil>] [gpt-4o 18 primary 200 primary]]"
			if fmt.Sprint(rows) != want {
				t.Errorf("rows = %v, want %s", rows, want)
			}
			cols, _ := columnNames(t, cfg.path)
			for _, c := range addedColumns {
				if !cols[c.name] {
					t.Errorf("column %s missing after migration", c.name)
				}
			}
		})
	}
}

func columnNames(t *testing.T, path string) (map[string]bool, int) {
	t.Helper()
	cols := make(map[string]bool)
	rows := query(t, path, `SELECT name FROM pragma_table_info('records')`)
	for _, r := range rows {
		cols[r[0].(string)] = true
	}
	return cols, len(rows)
}

func TestRotationPostponedWhileDatabaseOpenElsewhere(t *testing.T) {
	cfg := testConfig(t)
	clock := newFakeClock(localDate(2026, 1, 31))
	cfg.now = clock.now
	rotated := make(chan string, 1)
	cfg.rotated = func(archive string) { rotated <- archive }
	w := startWriter(t, cfg)
	w.Enqueue(fullRecord(0, localDate(2026, 1, 31)))
	syncWriter(t, w)

	// An operator's shell reading the live file.
	reader, err := sqlite3.Open(cfg.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := reader.Exec(`SELECT COUNT(*) FROM records`); err != nil {
		t.Fatal(err)
	}
	clock.set(localDate(2026, 2, 1))
	w.Enqueue(fullRecord(1, localDate(2026, 2, 1)))
	syncWriter(t, w)
	if got := count(t, cfg.path); got != 2 {
		t.Errorf("rows = %d, want both in the live file while rotation is postponed", got)
	}
	select {
	case a := <-rotated:
		t.Fatalf("rotated to %s under a reader", a)
	default:
	}

	// Once the reader is gone and check_interval has passed, it rotates.
	if err := reader.Close(); err != nil {
		t.Fatal(err)
	}
	clock.set(localDate(2026, 2, 1).Add(cfg.checkInterval))
	w.Enqueue(fullRecord(2, localDate(2026, 2, 2)))
	syncWriter(t, w)
	select {
	case a := <-rotated:
		if got := count(t, a); got != 2 {
			t.Errorf("archive %s rows = %d, want 2", a, got)
		}
		assertNoSideFiles(t, a)
	default:
		t.Fatal("no rotation after the reader closed")
	}
	if got := count(t, cfg.path); got != 1 {
		t.Errorf("live rows = %d, want 1", got)
	}
}
