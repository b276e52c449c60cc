package audit

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// TestMultiRowInsertStoresEachRowsValues writes batches that go through the multi-row INSERT
// and the single-row one (a row with large bodies in the middle, a remainder shorter than
// rowsPerInsert), with values that change from row to row in every way a skipped rebind could
// get wrong (text to NULL and back, the same headers then others, bodies then none), and checks
// each stored row against its record, and the rollup's count against the rows.
func TestMultiRowInsertStoresEachRowsValues(t *testing.T) {
	cfg := testConfig(t)
	cfg.batchSize = 256
	w := startWriter(t, cfg)
	at := time.Now()
	const n = 3*rowsPerInsert + 5
	var recs []*Record
	for i := range n {
		r := fullRecord(i, at)
		r.Model = "model-" + strconv.Itoa(i%3)
		if i%4 == 1 {
			r.Key = "key-" + strconv.Itoa(i%2)
		}
		if i%5 == 2 {
			cost := float64(i) / 100
			r.CostUSD = &cost
		}
		if i%6 == 3 {
			r.Headers = nil
		} else if i%2 == 0 {
			r.Headers = http.Header{"User-Agent": {"agent-" + strconv.Itoa(i%3)}}
		}
		if i%7 == 4 {
			r.Request, r.Response = nil, nil
		}
		if i == rowsPerInsert+3 {
			r.Response = bytes.Repeat([]byte("z"), maxSharedRowBytes+1)
		}
		r.Stream = i%3 != 0
		r.Error = map[bool]string{true: "", false: "failed " + strconv.Itoa(i)}[i%4 != 0]
		recs = append(recs, r)
	}
	for _, r := range recs {
		if !w.Enqueue(r) {
			t.Fatal("Enqueue refused")
		}
	}
	syncWriter(t, w)
	if w.Written() != n || w.Failed() != 0 {
		t.Fatalf("written %d failed %d, want %d 0", w.Written(), w.Failed(), n)
	}
	rows := query(t, cfg.path, `SELECT RequestID, Model, Key, CostUSD, Headers, length(Request), length(Response), TTFTMs, Error FROM records ORDER BY id`)
	if len(rows) != n {
		t.Fatalf("%d rows, want %d", len(rows), n)
	}
	for i, row := range rows {
		r := recs[i]
		var key, cost, headers, ttft any
		if r.Key != "" {
			key = r.Key
		}
		if r.CostUSD != nil {
			cost = *r.CostUSD
		}
		if r.Headers != nil {
			b, _ := appendHeadersJSON(nil, r.Headers, newRedactor(DefaultRedactHeaders), nil, new([]byte))
			headers = string(b)
		}
		if r.Stream {
			ttft = r.TTFTMs
		}
		var reqLen, respLen any
		if r.Request != nil {
			reqLen = int64(len(r.Request))
		}
		if r.Response != nil {
			respLen = int64(len(r.Response))
		}
		want := []any{r.RequestID, r.Model, key, cost, headers, reqLen, respLen, ttft, r.Error}
		if fmt.Sprint(row) != fmt.Sprint(want) {
			t.Errorf("row %d: %v, want %v", i, row, want)
		}
	}
	got := query(t, cfg.path, `SELECT sum(requests), min(min_rowid), max(max_rowid) FROM rollup_hourly`)[0]
	if got[0] != int64(n) || got[1] != int64(1) || got[2] != int64(n) {
		t.Errorf("rollup: requests, rowids %v, want %d 1 %d", got, n, n)
	}
}
