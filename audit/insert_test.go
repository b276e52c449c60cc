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

// TestAppendTimeMatchesFormat checks the writer's cached time formatting against
// t.Local().AppendFormat(TimeLayout) for times within one second, across seconds, backwards,
// before 1970, and after the local zone changed.
func TestAppendTimeMatchesFormat(t *testing.T) {
	w := new(Writer)
	base := time.Date(2026, 11, 29, 4, 59, 58, 999_999_000, time.UTC)
	var times []time.Time
	for _, d := range []time.Duration{0, 1, 999, 1000, 1001, time.Microsecond, time.Millisecond, 2 * time.Second, -3 * time.Second,
		time.Hour, -time.Nanosecond, 123456789, 30 * 24 * time.Hour} {
		times = append(times, base.Add(d))
	}
	times = append(times, time.Unix(-1, 500_000_000), time.Unix(-1, 0), time.Unix(0, 1), time.Unix(1_700_000_000, 999_999_999), time.Now(),
		base) // last as first: the zone changes between them
	check := func() {
		t.Helper()
		for _, at := range times {
			want := at.Local().Format(TimeLayout)
			if got := string(w.appendTime(nil, at)); got != want {
				t.Errorf("appendTime(%v) = %q, want %q", at, got, want)
			}
		}
	}
	check()
	saved := time.Local
	defer func() { time.Local = saved }()
	for _, zone := range []string{"Asia/Kolkata", "America/St_Johns", "UTC"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Logf("zone %s: %v", zone, err)
			continue
		}
		time.Local = loc
		check()
	}
}

// TestEqualHeadersKeepTheirBinding checks that a row whose headers equal those of the row last
// bound to the same parameter stores them, that a row with other headers (a value, a name, a
// second value, the redaction policy) stores its own.
func TestEqualHeadersKeepTheirBinding(t *testing.T) {
	cfg := testConfig(t)
	w := startWriter(t, cfg)
	other := &policy{bodies: cfg.policy.bodies, redact: newRedactor([]string{"X-Secret"})}
	h := func(kv ...string) http.Header {
		m := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			m.Add(kv[i], kv[i+1])
		}
		return m
	}
	cases := []struct {
		h   http.Header
		pol *policy
	}{
		{h("Accept", "a", "X-Secret", "sk-0123456789abcdefgh"), nil},
		{h("Accept", "a", "X-Secret", "sk-0123456789abcdefgh"), nil},
		{h("Accept", "b", "X-Secret", "sk-0123456789abcdefgh"), nil},
		{h("Accept", "b", "X-Secret", "sk-0123456789abcdefgh"), other},
		{h("Accept", "b", "X-Secret", "sk-0123456789abcdefgh"), other},
		{h("Accept", "b", "X-Other", "sk-0123456789abcdefgh"), other},
		{h("Accept", "b", "X-Other", "sk-0123456789abcdefgh", "Accept", "c"), other},
		{h("Accept", "b", "X-Other", "sk-0123456789abcdefgh"), other},
		{h("Accept", "b"), other},
		{nil, nil},
		{h("Accept", "b"), other},
		{h("Accept", "b"), nil},
	}
	var want []string
	for round := range 2 * rowsPerInsert {
		for i, c := range cases {
			pol := c.pol
			if pol == nil {
				pol = cfg.policy
			}
			r := fullRecord(round*len(cases)+i, time.Now())
			r.Headers = c.h
			if !w.enqueue(r, pol) {
				t.Fatal("enqueue refused")
			}
			if c.h == nil {
				want = append(want, "<nil>")
				continue
			}
			b, _ := appendHeadersJSON(nil, c.h, pol.redact, nil, new([]byte))
			want = append(want, string(b))
		}
		syncWriter(t, w)
	}
	rows := query(t, cfg.path, `SELECT Headers FROM records ORDER BY id`)
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d", len(rows), len(want))
	}
	for i, row := range rows {
		if got := fmt.Sprint(row[0]); got != want[i] {
			t.Errorf("row %d: Headers %s, want %s", i, got, want[i])
		}
	}
}
