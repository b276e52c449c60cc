package audit

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// These tests check that no row can take the audit writer down, that every row not written is
// counted, that a deleted database file is noticed, and that the report survives any stored
// value (issue #10, items 1, 10, 11 and 12).

// wantMarker is the truncation marker of a body of total bytes.
func wantMarker(total int) string {
	return "…[truncated: " + strconv.Itoa(total) + " bytes total]"
}

func TestCapBody(t *testing.T) {
	body := []byte(strings.Repeat("é", 10)) // 20 bytes, runes of two
	for _, tc := range []struct {
		name  string
		limit int
		in    []byte
		want  string
	}{
		{"no cap", 0, body, string(body)},
		{"fits", 20, body, string(body)},
		// Within the marker's length of the cap: what a BodyBuffer already capped looks like.
		{"within marker slack", 1, []byte("ab"), "ab"},
		{"cut on a rune boundary", 3, bytes.Repeat(body, 5), "é" + wantMarker(100)},
		{"cut at the limit", 4, bytes.Repeat(body, 5), "éé" + wantMarker(100)},
		{"nil", 4, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := capBody(tc.in, tc.limit)
			if string(got) != tc.want {
				t.Errorf("capBody = %q, want %q", got, tc.want)
			}
			if len(tc.in) > 0 && len(got) > 0 && &got[0] == &tc.in[0] && len(got) < len(tc.in) {
				t.Error("a capped body shares the caller's array: the queue would pin the whole body")
			}
		})
	}
}

func TestBodyBufferKeepsLimitAndCounts(t *testing.T) {
	const limit = 1000
	b := NewBodyBuffer(limit)
	chunk := []byte(strings.Repeat("ü", 7)) // 14 bytes: the limit falls inside a rune
	total := 0
	for range 10_000 {
		n, err := b.Write(chunk)
		if n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		total += n
	}
	if cap(b.buf) > limit {
		t.Errorf("buffer capacity %d, want at most the limit %d", cap(b.buf), limit)
	}
	if b.Len() != int64(total) {
		t.Errorf("Len = %d, want %d", b.Len(), total)
	}
	got := b.Bytes()
	head, ok := strings.CutSuffix(string(got), wantMarker(total))
	if !ok {
		t.Fatalf("Bytes ends %q, want the marker %q", got[max(0, len(got)-60):], wantMarker(total))
	}
	if len(head) > limit || len(head) < limit-utf8.UTFMax || !utf8.ValidString(head) {
		t.Errorf("kept %d bytes (valid UTF-8 %v), want up to %d whole runes", len(head), utf8.ValidString(head), limit)
	}

	small := NewBodyBuffer(limit)
	small.Write([]byte("data: [DONE]\n\n"))
	if got := string(small.Bytes()); got != "data: [DONE]\n\n" {
		t.Errorf("a body within the limit: Bytes = %q", got)
	}
}

// TestEnqueueCapsBodies checks that a row's bodies are cut to max_body_size with the marker
// before they are queued, under the policy of the config that produced the row.
func TestEnqueueCapsBodies(t *testing.T) {
	cfg := testConfig(t)
	cfg.policy.bodies.max = 1 << 10
	w := startWriter(t, cfg)
	rec := fullRecord(1, time.Now())
	rec.Request = bytes.Repeat([]byte("q"), 5000)
	rec.Response = bytes.Repeat([]byte("r"), 1<<20)
	w.Enqueue(rec)
	syncWriter(t, w)
	rows := query(t, cfg.path, `SELECT Request, Response FROM records`)
	if len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
	if want := strings.Repeat("q", 1<<10) + wantMarker(5000); rows[0][0] != want {
		t.Errorf("Request stored with %d bytes, want the first 1 KiB and the marker", len(rows[0][0].(string)))
	}
	if want := strings.Repeat("r", 1<<10) + wantMarker(1<<20); rows[0][1] != want {
		t.Errorf("Response stored with %d bytes, want the first 1 KiB and the marker", len(rows[0][1].(string)))
	}
}

// TestMaxBodySizeLimitInserts checks that the largest max_body_size allowed inserts: both bodies
// at the limit fit in the memory SQLite has.
func TestMaxBodySizeLimitInserts(t *testing.T) {
	cfg := testConfig(t)
	cfg.policy.bodies.max = MaxBodySizeLimit
	w := startWriter(t, cfg)
	rec := fullRecord(1, time.Now())
	rec.Request = bytes.Repeat([]byte("q"), MaxBodySizeLimit+1000)
	rec.Response = bytes.Repeat([]byte("r"), MaxBodySizeLimit+1000)
	w.Enqueue(rec)
	syncWriter(t, w)
	if w.Written() != 1 || w.Failed() != 0 {
		t.Fatalf("written %d failed %d, want 1 0", w.Written(), w.Failed())
	}
	rows := query(t, cfg.path, `SELECT length(CAST(Request AS BLOB)), length(CAST(Response AS BLOB)) FROM records`)
	want := int64(MaxBodySizeLimit + len(wantMarker(MaxBodySizeLimit+1000)))
	if rows[0][0] != want || rows[0][1] != want {
		t.Errorf("stored body sizes %v, want %d each", rows[0], want)
	}
}

// TestFailingRowFailsAlone checks that a row the database cannot take — here one too large for
// SQLite's memory, whose binding panics in the driver, and one a trigger rejects — is counted and
// skipped while the rows around it, and later batches, are written.
func TestFailingRowFailsAlone(t *testing.T) {
	cfg := testConfig(t) // no body cap: the writer's last defences are under test
	cfg.batchSize = 16
	exec(t, cfg.path, createTable+`;
		CREATE TRIGGER reject BEFORE INSERT ON records WHEN NEW.RequestID = 'rejected'
		BEGIN SELECT RAISE(ABORT, 'rejected by trigger'); END`)
	w := startWriter(t, cfg)
	at := time.Now()
	huge := fullRecord(1, at)
	huge.RequestID = "huge"
	huge.Response = make([]byte, 300<<20) // beyond the 256 MiB SQLite has per connection
	rejected := fullRecord(2, at)
	rejected.RequestID = "rejected"
	for _, r := range []*Record{fullRecord(10, at), huge, fullRecord(11, at), rejected, fullRecord(12, at)} {
		if !w.Enqueue(r) {
			t.Fatalf("Enqueue %s refused", r.RequestID)
		}
	}
	syncWriter(t, w)
	huge.Response = nil
	w.Enqueue(fullRecord(13, at)) // a later batch
	syncWriter(t, w)

	if w.Written() != 4 || w.Failed() != 2 {
		t.Errorf("written %d failed %d, want 4 2", w.Written(), w.Failed())
	}
	var ids []string
	for _, row := range query(t, cfg.path, `SELECT RequestID FROM records ORDER BY id`) {
		ids = append(ids, row[0].(string))
	}
	if got := strings.Join(ids, ","); got != "req-10,req-11,req-12,req-13" {
		t.Errorf("rows %s, want req-10,req-11,req-12,req-13", got)
	}
}

// TestEveryLostRowIsCounted fills the database (max_page_count, SQLite's disk-full error) and
// has a trigger roll whole transactions back, and checks that every row is either in the file
// or counted as failed.
func TestEveryLostRowIsCounted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, w *Writer)
	}{
		{"disk full", func(t *testing.T, w *Writer) {
			// The file may grow by a few pages, then every insert fails with SQLITE_FULL.
			if err := w.st.conn.Exec(`PRAGMA max_page_count = 12`); err != nil {
				t.Fatal(err)
			}
		}},
		{"transaction rolled back", func(t *testing.T, w *Writer) {
			// Every fifth row takes its whole transaction down, as a disk I/O error can.
			if err := w.st.conn.Exec(`CREATE TRIGGER doom BEFORE INSERT ON records WHEN NEW.LatencyMs % 5 = 4
				BEGIN SELECT RAISE(ROLLBACK, 'simulated disk I/O error'); END`); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.batchSize = 8
			w, err := openWriter(cfg)
			if err != nil {
				t.Fatal(err)
			}
			tc.setup(t, w)
			go w.run()
			t.Cleanup(func() { closeWriter(t, w) })

			const n = 200
			at := time.Now()
			for i := range n {
				r := fullRecord(i, at)
				r.Response = bytes.Repeat([]byte("x"), 2000) // fills pages fast
				if !w.Enqueue(r) {
					t.Fatalf("Enqueue %d refused", i)
				}
			}
			syncWriter(t, w)
			rows := count(t, cfg.path)
			if w.Failed() == 0 {
				t.Fatal("no insert failed: the test provokes nothing")
			}
			if uint64(rows) != w.Written() || w.Written()+w.Failed() != n || w.Dropped() != 0 {
				t.Errorf("%d rows in the file, written %d, failed %d, dropped %d: want rows = written and written + failed = %d",
					rows, w.Written(), w.Failed(), w.Dropped(), n)
			}
		})
	}
}

// TestWriterReopensLostFile deletes or replaces the live database under a running writer and
// checks that the next check interval opens the path again, so later rows are not lost.
func TestWriterReopensLostFile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rotate bool
		lose   func(t *testing.T, path string)
	}{
		{"deleted", true, func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"deleted, rotation off", false, func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced", true, func(t *testing.T, path string) {
			other := filepath.Join(filepath.Dir(path), "other.db")
			exec(t, other, createTable)
			if err := os.Rename(other, path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.rotate = tc.rotate
			cfg.checkInterval = 5 * time.Millisecond
			reopened := make(chan struct{}, 1)
			cfg.reopened = func() {
				select {
				case reopened <- struct{}{}:
				default:
				}
			}
			w := startWriter(t, cfg)
			at := time.Now()
			w.Enqueue(fullRecord(1, at))
			syncWriter(t, w)

			tc.lose(t, cfg.path)
			select {
			case <-reopened:
			case <-time.After(10 * time.Second):
				t.Fatal("the writer never noticed its file was gone")
			}
			w.Enqueue(fullRecord(2, at))
			syncWriter(t, w)
			rows := query(t, cfg.path, `SELECT RequestID FROM records`)
			if len(rows) != 1 || rows[0][0] != "req-2" {
				t.Errorf("rows at the path after the loss: %v, want only req-2", rows)
			}
			if w.Failed() != 0 {
				t.Errorf("failed %d, want 0", w.Failed())
			}
		})
	}
}

// TestSummarizeAbsurdStoredUsage checks that the report reads any stored token value: negative,
// the largest int64, a REAL beyond int64 and text, in one file, without overflowing.
func TestSummarizeAbsurdStoredUsage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "record.db")
	exec(t, path, createTable+`;
		INSERT INTO records (Time, Model, PromptTokens, CompletionTokens, TotalTokens, Status) VALUES
			('2026-07-01 10:00:00.000000', 'liar', 9223372036854775807, 9223372036854775807, 9223372036854775807, 200),
			('2026-07-01 10:00:01.000000', 'liar', 1e30, -5, 'lots', 200),
			('2026-07-01 10:00:02.000000', 'liar', -9223372036854775808, 9223372036854775807, 1e300, 200),
			('2026-07-01 10:00:03.000000', 'honest', 10, 5, 15, 200)`)
	files := []string{path, path, path} // the same file thrice: the sums across files must not overflow either
	sum, err := Summarize(files, SummaryOptions{})
	if err != nil {
		t.Fatalf("Summarize: %v", err)
	}
	const m = MaxStoredTokens
	want := map[string]Usage{
		"liar":   {Key: "liar", Requests: 9, PromptTokens: 3 * 2 * m, CompletionTokens: 3 * 2 * m, TotalTokens: 3 * 2 * m},
		"honest": {Key: "honest", Requests: 3, PromptTokens: 30, CompletionTokens: 15, TotalTokens: 45},
	}
	for _, g := range sum.Groups {
		if g != want[g.Key] {
			t.Errorf("group %+v, want %+v", g, want[g.Key])
		}
	}
	if len(sum.Groups) != 2 {
		t.Errorf("%d groups, want 2", len(sum.Groups))
	}
	if sum.Total.PromptTokens != 6*m+30 {
		t.Errorf("total prompt tokens %d, want %d", sum.Total.PromptTokens, int64(6*m+30))
	}
	if _, err := json.Marshal(sum); err != nil {
		t.Errorf("encoding the summary: %v", err)
	}

	u := Usage{PromptTokens: math.MaxInt64 - 1}
	u.add(Usage{PromptTokens: 5})
	if u.PromptTokens != math.MaxInt64 {
		t.Errorf("adding to a near-maximal count gave %d, want it saturated", u.PromptTokens)
	}
}

func TestMaxBodySizeValidation(t *testing.T) {
	for _, tc := range []struct {
		size int
		ok   bool
	}{
		{0, true}, {1, true}, {MaxBodySizeLimit, true}, {-1, false}, {MaxBodySizeLimit + 1, false},
	} {
		a := &App{MaxBodySize: tc.size}
		if err := a.Validate(); (err == nil) != tc.ok {
			t.Errorf("max_body_size %d: Validate = %v, want ok %v", tc.size, err, tc.ok)
		}
	}
	a := &App{}
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if a.MaxBodySize != DefaultMaxBodySize {
		t.Errorf("default max_body_size %d, want %d", a.MaxBodySize, DefaultMaxBodySize)
	}
}
