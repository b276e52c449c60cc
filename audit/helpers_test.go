package audit

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"
	"go.uber.org/zap/zaptest"
)

// fakeClock is a settable clock for the writer's now.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := new(fakeClock)
	c.set(t)
	return c
}

func (c *fakeClock) set(t time.Time) { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) now() time.Time  { return time.Unix(0, c.ns.Load()) }
func localDate(y int, m time.Month, d int) time.Time {
	return time.Date(y, m, d, 12, 0, 0, 0, time.Local)
}

// testConfig is a writer configuration for a database in a fresh directory.
func testConfig(t *testing.T) writerConfig {
	t.Helper()
	return writerConfig{
		path:          filepath.Join(t.TempDir(), "record.db"),
		rotate:        true,
		checkInterval: time.Hour,
		queueSize:     1024,
		batchSize:     64,
		flushInterval: -1,
		policy:        &policy{bodies: bodyPolicy{mode: BodiesFull}, redact: newRedactor(DefaultRedactHeaders)},
		logger:        zaptest.NewLogger(t),
		// Every batch: tests compare the rollup with the rows at once.
		rollupInterval: -1,
	}
}

// startWriter opens and starts a writer closed at the end of the test.
func startWriter(t *testing.T, cfg writerConfig) *Writer {
	t.Helper()
	w, err := newWriter(cfg)
	if err != nil {
		t.Fatalf("newWriter: %v", err)
	}
	t.Cleanup(func() { closeWriter(t, w) })
	return w
}

func closeWriter(t *testing.T, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

func syncWriter(t *testing.T, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// query runs q on the database at path through its own connection and
// returns every row as Go values (int64, float64, string, []byte or nil).
func query(t *testing.T, path, q string) [][]any {
	t.Helper()
	conn, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READWRITE)
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	defer conn.Close()
	stmt, _, err := conn.Prepare(q)
	if err != nil {
		t.Fatalf("preparing %q on %s: %v", q, path, err)
	}
	defer stmt.Close()
	var rows [][]any
	for stmt.Step() {
		row := make([]any, stmt.ColumnCount())
		for i := range row {
			switch stmt.ColumnType(i) {
			case sqlite3.INTEGER:
				row[i] = stmt.ColumnInt64(i)
			case sqlite3.FLOAT:
				row[i] = stmt.ColumnFloat(i)
			case sqlite3.TEXT:
				row[i] = stmt.ColumnText(i)
			case sqlite3.BLOB:
				row[i] = stmt.ColumnBlob(i, nil)
			default:
				row[i] = nil
			}
		}
		rows = append(rows, row)
	}
	if err := stmt.Err(); err != nil {
		t.Fatalf("query %q on %s: %v", q, path, err)
	}
	return rows
}

// count returns the number of records in the database at path.
func count(t *testing.T, path string) int64 {
	t.Helper()
	return query(t, path, "SELECT COUNT(*) FROM records")[0][0].(int64)
}

// exec runs statements on the database at path, creating it if needed.
func exec(t *testing.T, path, sql string) {
	t.Helper()
	conn, err := sqlite3.Open(path)
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	defer conn.Close()
	if err := conn.Exec(sql); err != nil {
		t.Fatalf("exec on %s: %v", path, err)
	}
}
