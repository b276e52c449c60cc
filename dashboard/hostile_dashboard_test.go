package dashboard

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-json"

	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/internal/apierr"
)

// TestHostileFilters sends malformed parameters (400 with an OpenAI-shaped error naming the
// parameter) and injection attempts that are well-formed strings (200, matching nothing:
// they are bound as values, never spliced into SQL).
func TestHostileFilters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "record.db")
	now := time.Now()
	writeRecords(t, path, genRecords(rand.New(rand.NewPCG(3, 14)), now, 48*time.Hour, 500))
	h := newTestHandler(t, path, now)
	var all summaryAnswer
	getJSON(t, h, "/api/summary", &all)
	if all.Requests == 0 {
		t.Fatal("no rows in the last 24h")
	}

	bad := []struct {
		query, param string
	}{
		{"from=yesterday", "from"},
		{"to=2026-13-01T00:00:00Z", "to"},
		{"from=2026-07-23", "from"},
		{"from=-1", "from"},
		{"from=99999999999999", "from"},
		{"from=9999-12-31T23:59:59Z", "from"},
		{"from=0001-01-01T00:00:00Z", "from"},
		{"from=" + url.QueryEscape(now.Format(time.RFC3339)) + "&to=" + url.QueryEscape(now.Add(-time.Hour).Format(time.RFC3339)), "from"},
		{"from=" + url.QueryEscape(now.Format(time.RFC3339)) + "&to=" + url.QueryEscape(now.Format(time.RFC3339)), "from"},
		{"from=" + url.QueryEscape(now.Add(-367*24*time.Hour).Format(time.RFC3339)), "from"},
		{"from=1&to=99999999", "from"},
		{"status=2XX", "status"},
		{"status=6xx", "status"},
		{"status=200", "status"},
		{"status=" + url.QueryEscape("2xx' OR 1=1 --"), "status"},
		{"by=ip", "by"},
		{"by=" + url.QueryEscape("model; DROP TABLE records"), "by"},
		{"limit=0", "limit"},
		{"limit=100000", "limit"},
		{"limit=-5", "limit"},
		{"limit=1e3", "limit"},
		{"bucket=2m", "bucket"},
		{"bucket=1m&from=" + url.QueryEscape(now.Add(-7*time.Hour).Format(time.RFC3339)), "bucket"},
		{"bucket=1h&from=" + url.QueryEscape(now.Add(-300*24*time.Hour).Format(time.RFC3339)), "bucket"},
		{"model=a%00b", "model"},
		{"key=%00", "key"},
		{"backend=line%0Abreak", "backend"},
		{"model=%ff%fe", "model"},
		{"model=" + strings.Repeat("x", 257), "model"},
		{"key=" + strings.Repeat("%27", 10000), "key"},
		{"model=a&model=b", "model"},
		{"from=1&from=2", "from"},
	}
	for _, tc := range bad {
		for _, ep := range []string{"summary", "series", "top", "overview", "failures"} {
			code, body := get(t, h, "/api/"+ep+"?"+tc.query)
			var e apierr.Body
			if err := json.Unmarshal(body, &e); err != nil || code != http.StatusBadRequest ||
				e.Error.Type != "invalid_request_error" || e.Error.Param == nil || *e.Error.Param != tc.param || e.Error.Message == "" {
				t.Errorf("%s?%s: %d %s, want 400 invalid_request_error with param %q", ep, trimName(tc.query), code, trimName(string(body)), tc.param)
			}
		}
	}

	injections := []string{
		"' OR 1=1 --", `" OR ""="`, "x'); DROP TABLE records; --", "%", "_", "*", "gpt-4o' --",
		"1 UNION SELECT * FROM rollup_hourly", `\`, "gpt-4o%", "(none", "ÿ", "🙂", strings.Repeat("'", 256),
	}
	for _, v := range injections {
		for _, name := range []string{"model", "key", "backend"} {
			var s summaryAnswer
			getJSON(t, h, "/api/summary?"+name+"="+url.QueryEscape(v), &s)
			if s.Requests != 0 {
				t.Errorf("%s=%q matched %d calls, want none", name, v, s.Requests)
			}
			var f struct {
				Rows []failureJSON `json:"rows"`
			}
			getJSON(t, h, "/api/failures?"+name+"="+url.QueryEscape(v), &f)
			if len(f.Rows) != 0 {
				t.Errorf("failures %s=%q: %d rows, want none", name, v, len(f.Rows))
			}
		}
	}
	// The database is intact and the same query still sees everything.
	var again summaryAnswer
	getJSON(t, h, "/api/summary", &again)
	if again.Requests != all.Requests {
		t.Errorf("after the injections: %d requests, want %d", again.Requests, all.Requests)
	}

	for _, tc := range []struct {
		target string
		code   int
	}{
		{"/api/call/abc?db=000000000000", 400},
		{"/api/call/-1?db=000000000000", 400},
		{"/api/call/1?db=../../etc", 400},
		{"/api/call/1", 400},
		{"/api/call/1?db=" + fileID(path) + "&db=" + fileID(path), 400},
		{"/api/call/99999999?db=" + fileID(path), 404},
		{"/api/call/1?db=0123456789ab", 404},
		{"/api/nope", 404},
		{"/api/", 404},
	} {
		code, body := get(t, h, tc.target)
		var e apierr.Body
		if code != tc.code || json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
			t.Errorf("%s: %d %s, want %d with an OpenAI-shaped error", tc.target, code, body, tc.code)
		}
	}
}

// TestFailuresAndCallDetail lists the latest failures, newest first with status, error and
// tried path, and opens one: headers as stored (masked), bodies as stored.
func TestFailuresAndCallDetail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "record.db")
	now := time.Now()
	recs := genRecords(rand.New(rand.NewPCG(4, 14)), now, 10*time.Hour, 400)
	writeRecords(t, path, recs)
	h := newTestHandler(t, path, now)

	var f struct {
		Rows []failureJSON `json:"rows"`
	}
	getJSON(t, h, "/api/failures?limit=20&key=team-a", &f)
	var want []*audit.Record
	for i := len(recs) - 1; i >= 0 && len(want) < 20; i-- {
		if r := recs[i]; r.Status >= 400 && r.Key == "team-a" && r.Time.After(now.Add(-24*time.Hour)) {
			want = append(want, r)
		}
	}
	if len(f.Rows) != len(want) || len(want) == 0 {
		t.Fatalf("%d failures, want %d", len(f.Rows), len(want))
	}
	for i, r := range f.Rows {
		w := want[i]
		if r.RequestID != w.RequestID || r.Status != int64(w.Status) || r.Error != w.Error || r.Tried != w.Tried || r.Key != "team-a" {
			t.Errorf("failure %d = %+v, want %s %d %q %q", i, r, w.RequestID, w.Status, w.Error, w.Tried)
		}
	}

	var c map[string]any
	getJSON(t, h, fmt.Sprintf("/api/call/%d?db=%s", f.Rows[0].ID, f.Rows[0].DB), &c)
	hdr, _ := c["headers"].(map[string]any)
	if c["request_id"] != want[0].RequestID || hdr == nil || hdr["authorization"] != "Bearer sk-li…ij" {
		t.Errorf("call detail %v: want %s with the Authorization header masked", c, want[0].RequestID)
	}
	if body, _ := json.Marshal(c); strings.Contains(string(body), "0123456789abcdefghij") {
		t.Errorf("call detail shows the secret: %s", body)
	}
	if c["request"] != string(want[0].Request) || c["response"] != string(want[0].Response) || c["status"] != float64(want[0].Status) {
		t.Errorf("call detail bodies/status %v %v %v", c["request"], c["response"], c["status"])
	}
}

// TestLegacyAndSeveralFiles reads files without a rollup (the origin's schema, never opened
// by this writer) together with a current one through the databases option, as one.
func TestLegacyAndSeveralFiles(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	node1 := filepath.Join(dir, "node1", "record.db")
	writeRecords(t, node1, genRecords(rand.New(rand.NewPCG(5, 14)), now, 5*24*time.Hour, 800))
	legacy := filepath.Join(dir, "node2", "record.db")
	execSQL(t, legacy, `CREATE TABLE records (
		id INTEGER PRIMARY KEY AUTOINCREMENT, Time TEXT, IP TEXT, Model TEXT, Type TEXT,
		CompletionTokens INTEGER, PromptTokens INTEGER, TotalTokens INTEGER,
		Tool BOOLEAN, Multimodal BOOLEAN, Headers TEXT, Request TEXT, Response TEXT)`)
	for i := range 50 {
		at := now.Add(-time.Duration(i) * 97 * time.Minute).Local().Format(audit.TimeLayout)
		execSQL(t, legacy, fmt.Sprintf(`INSERT INTO records (Time, Model, PromptTokens, CompletionTokens, TotalTokens)
			VALUES ('%s', 'gpt-4o', %d, 5, %d)`, at, i, i+5))
	}
	h := newTestHandler(t, "", now)
	h.Databases = []string{filepath.Join(dir, "node*", "record*.db")}
	files := []string{node1, legacy}
	for _, f := range []filter{
		{from: now.Add(-24 * time.Hour), to: now},
		{from: now.Add(-4*24*time.Hour - time.Minute), to: now, model: ptr("gpt-4o")},
		{from: now.Add(-2 * time.Hour), to: now, class: 2},
	} {
		checkAgainstSQL(t, h, files, f)
	}
	var s summaryAnswer
	getJSON(t, h, "/api/summary", &s)
	if len(s.Files) != 2 {
		t.Errorf("files %v, want both nodes'", s.Files)
	}
}

// TestQueryTimeout: a call whose database work outlasts query_timeout answers 503
// query_timeout, and a method other than GET or HEAD 405.
func TestQueryTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "record.db")
	writeRecords(t, path, genRecords(rand.New(rand.NewPCG(8, 14)), time.Now(), time.Hour, 10))
	h := newTestHandler(t, path, time.Now())
	h.QueryTimeout = 1 // nanosecond
	code, body := get(t, h, "/api/summary")
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), `"query_timeout"`) {
		t.Errorf("%d %s, want 503 query_timeout", code, body)
	}
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/summary", nil), nil); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" || !strings.Contains(rec.Body.String(), "invalid_request_error") {
		t.Errorf("POST: %d %q %s", rec.Code, rec.Header().Get("Allow"), rec.Body)
	}
}

// trimName keeps failure messages about a long value short.
func trimName(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "…"
	}
	return s
}
