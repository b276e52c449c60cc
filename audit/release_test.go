package audit

import (
	"bytes"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// TestReleaseOnlyOnceRowWritten gives every record bodies that its Release overwrites, as the
// next call reusing a pooled buffer would, and checks that each stored row still holds its own
// bodies, that Release ran exactly once per record, and that at that moment a row of it was
// already committed (seen from another connection). The batches go through the multi-row INSERT,
// the single-row one (large bodies), and the row-by-row retry after a row the database rejects,
// which binds the bodies of the rows around it a second time.
func TestReleaseOnlyOnceRowWritten(t *testing.T) {
	cfg := testConfig(t)
	cfg.batchSize = 64
	cfg.flushInterval = 50 * time.Millisecond // rows wait in the queue a while
	exec(t, cfg.path, createTable+`;
		CREATE TRIGGER reject BEFORE INSERT ON records WHEN NEW.RequestID = 'req-20'
		BEGIN SELECT RAISE(ABORT, 'rejected by trigger'); END`)
	reader, err := sqlite3.OpenFlags(cfg.path, sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	stored, _, err := reader.Prepare(`SELECT count(*) FROM records WHERE RequestID = ?`)
	if err != nil {
		t.Fatal(err)
	}
	defer stored.Close()
	w := startWriter(t, cfg)

	const n = 3*rowsPerInsert + 7
	at := time.Now()
	recs := make([]*Record, n)
	wantReq, wantResp := make([]string, n), make([]string, n)
	releases := make([]atomic.Int32, n)
	var early atomic.Int32
	for i := range n {
		r := fullRecord(i, at)
		size := 200 + i
		if i == rowsPerInsert+2 {
			size = maxSharedRowBytes + 1 // inserted on its own
		}
		r.Request = bytes.Repeat([]byte{'a' + byte(i%26)}, size)
		r.Response = []byte(strings.Repeat("answer "+strconv.Itoa(i)+" ", 20))
		wantReq[i], wantResp[i] = string(r.Request), string(r.Response)
		r.Release = func() {
			releases[i].Add(1)
			// What reusing the buffers would do.
			for _, b := range [][]byte{r.Request, r.Response} {
				for j := range b {
					b[j] = '#'
				}
			}
			if r.RequestID == "req-20" {
				return // rejected: never stored
			}
			// Only the writer goroutine runs this: the statement is not shared.
			if err := stored.BindText(1, r.RequestID); err != nil {
				t.Error(err)
			}
			if stored.Step() && stored.ColumnInt64(0) != 1 {
				early.Add(1)
			}
			if err := stored.Reset(); err != nil {
				t.Error(err)
			}
		}
		recs[i] = r
	}
	for _, r := range recs {
		if !w.Enqueue(r) {
			t.Fatal("Enqueue refused")
		}
	}
	syncWriter(t, w)
	if w.Written() != n-1 || w.Failed() != 1 {
		t.Fatalf("written %d failed %d, want %d 1", w.Written(), w.Failed(), n-1)
	}
	for i := range n {
		if got := releases[i].Load(); got != 1 {
			t.Errorf("record %d released %d times, want 1", i, got)
		}
	}
	if e := early.Load(); e != 0 {
		t.Errorf("%d records released before their row was committed", e)
	}
	rows := query(t, cfg.path, `SELECT RequestID, Request, Response FROM records ORDER BY id`)
	if len(rows) != n-1 {
		t.Fatalf("%d rows, want %d", len(rows), n-1)
	}
	for _, row := range rows {
		i, _ := strconv.Atoi(strings.TrimPrefix(row[0].(string), "req-"))
		if row[1] != wantReq[i] || row[2] != wantResp[i] {
			t.Errorf("row %s holds bodies overwritten after Release (%.20q…, %.20q…)", row[0], row[1], row[2])
		}
	}
}

// TestReleaseOfRefusedRecord checks that a record Enqueue refuses (queue full, writer closed) is
// released at once, and only once.
func TestReleaseOfRefusedRecord(t *testing.T) {
	cfg := testConfig(t)
	cfg.queueSize = 1
	w, err := openWriter(cfg) // not running: the queue stays full
	if err != nil {
		t.Fatal(err)
	}
	var released atomic.Int32
	first, second := fullRecord(1, time.Now()), fullRecord(2, time.Now())
	first.Release = func() { t.Error("the queued record was released before it was written") }
	second.Release = func() { released.Add(1) }
	if !w.Enqueue(first) {
		t.Fatal("first record refused")
	}
	if w.Enqueue(second) {
		t.Fatal("second record accepted beyond the queue's size")
	}
	if released.Load() != 1 {
		t.Errorf("refused record released %d times, want 1", released.Load())
	}
	first.Release = nil
	go w.run()
	closeWriter(t, w)
	late := fullRecord(3, time.Now())
	late.Release = func() { released.Add(1) }
	if w.Enqueue(late) {
		t.Fatal("record accepted after close")
	}
	if released.Load() != 2 {
		t.Errorf("record refused after close released %d times in all, want 2", released.Load()-1)
	}
}
