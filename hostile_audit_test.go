package llmgateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/sse"
)

// Hostile upstreams and a hostile environment against the audit log (issue #10, items 1, 10, 11
// and 12): answers too large for a row, a database deleted or failing under the writer, usage
// figures no upstream could mean. No row may take the process down, and no row may be lost
// without being counted.

// auditUpstream serves every request with serve, after reading the request body, and returns its
// base URL.
func auditUpstream(t *testing.T, serve func(w http.ResponseWriter, r *http.Request, body []byte)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		serve(w, r, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/v1"
}

// markerRE matches the truncation marker at the end of a stored body.
var markerRE = regexp.MustCompile(`…\[truncated: (\d+) bytes total\]$`)

// checkCapped checks that a stored body is at most max_body_size bytes followed by the marker,
// and returns the size the marker reports.
func checkCapped(t *testing.T, what, stored string, limit int) int64 {
	t.Helper()
	m := markerRE.FindStringSubmatchIndex(stored)
	if m == nil {
		t.Errorf("%s: %d bytes stored without a truncation marker (ends %q)", what, len(stored), stored[max(0, len(stored)-80):])
		return 0
	}
	if head := m[0]; head > limit || head < limit-4 {
		t.Errorf("%s: %d bytes kept before the marker, want %d", what, head, limit)
	}
	total, _ := strconv.ParseInt(stored[m[2]:m[3]], 10, 64)
	return total
}

// auditBodies returns the Request and Response columns of every row, by RequestID.
func auditBodies(t *testing.T, path string) map[string][2]string {
	t.Helper()
	conn, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatalf("opening audit database %s: %v", path, err)
	}
	defer conn.Close()
	stmt, _, err := conn.Prepare(`SELECT RequestID, Request, Response FROM records`)
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	rows := make(map[string][2]string)
	for stmt.Step() {
		rows[stmt.ColumnText(0)] = [2]string{stmt.ColumnText(1), stmt.ColumnText(2)}
	}
	if err := stmt.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// postCounting sends body and returns the status and the number of bytes of answer read.
func postCounting(t *testing.T, url, requestID string, body []byte) (int, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", requestID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s: %v", requestID, err)
		return 0, 0
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		t.Errorf("%s: reading the answer: %v", requestID, err)
	}
	return resp.StatusCode, n
}

// TestHostileAuditHugeBodiesCapped sends a ~128 MB stream and concurrent answers of tens of MB
// through a gateway storing bodies in full (the default): each row must exist with its bodies
// cut to max_body_size and marked, and the process must live. Before the cap, such rows
// panicked the writer goroutine ("sqlite3: out of memory") and with it the whole server.
func TestHostileAuditHugeBodiesCapped(t *testing.T) {
	const (
		eventContent = 64 << 10
		streamEvents = 2048 // ~134 MB of stream
		answerSize   = 20 << 20
		answers      = 4
		promptSize   = 8 << 20
	)
	event := []byte(`data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"` +
		strings.Repeat("s", eventContent) + `"},"finish_reason":null}]}` + "\n\n")
	answerHead := []byte(`{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"`)
	answerTail := []byte(`"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`)
	filler := bytes.Repeat([]byte("a"), 1<<20)
	url := auditUpstream(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if bytes.Contains(body, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "text/event-stream")
			for range streamEvents {
				if _, err := w.Write(event); err != nil {
					return
				}
			}
			io.WriteString(w, "data: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(answerHead)
		for range answerSize / len(filler) {
			if _, err := w.Write(filler); err != nil {
				return
			}
		}
		w.Write(answerTail)
	})
	dbPath := filepath.Join(t.TempDir(), "record.db")
	site := gatewaySite("", clientBlock("huge", url, "match keyword gpt"))
	gw := startGateway(t, auditGlobals(dbPath), site)

	prompt := func(stream bool) []byte {
		return []byte(fmt.Sprintf(`{"model":"gpt-4o","stream":%v,"messages":[{"role":"user","content":"%s"}]}`, stream, strings.Repeat("p", promptSize)))
	}
	received := make(map[string]int64)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range answers + 1 {
		id, stream := "answer-"+strconv.Itoa(i), false
		if i == answers {
			id, stream = "stream", true
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, n := postCounting(t, gw.URL+"/v1/chat/completions", id, prompt(stream))
			if status != http.StatusOK {
				t.Errorf("%s: status %d", id, status)
			}
			mu.Lock()
			received[id] = n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if received["stream"] < streamEvents*eventContent || received["answer-0"] < answerSize {
		t.Fatalf("answers cut short: %v", received)
	}

	gw.reload("", site, false)
	awaitCallsEnded(t)
	rows := auditBodies(t, dbPath)
	for id, n := range received {
		row, ok := rows[id]
		if !ok {
			t.Errorf("%s: no audit row", id)
			continue
		}
		if total := checkCapped(t, id+" Request", row[0], audit.DefaultMaxBodySize); total < promptSize {
			t.Errorf("%s: the Request marker reports %d bytes, want at least the %d-byte prompt", id, total, promptSize)
		}
		// The Response column holds what the caller received: its marker reports every byte. For
		// the stream that is the chat.completion it amounts to (SPEC §8): the whole content,
		// without the chunks' framing.
		total := checkCapped(t, id+" Response", row[1], audit.DefaultMaxBodySize)
		switch {
		case id != "stream" && total != n:
			t.Errorf("%s: the Response marker reports %d bytes, the caller received %d", id, total, n)
		case id == "stream" && (total < streamEvents*eventContent || total >= n):
			t.Errorf("%s: the Response marker reports %d bytes, want the %d bytes of content and some, less than the %d-byte transcript",
				id, total, streamEvents*eventContent, n)
		case id == "stream" && !strings.HasPrefix(row[1], `{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"sss`):
			t.Errorf("%s: Response starts %q, want the chat.completion object", id, row[1][:min(len(row[1]), 200)])
		}
	}
	if len(rows) != len(received) {
		t.Errorf("%d rows for %d calls", len(rows), len(received))
	}
}

// TestHostileAuditDeletedDatabase deletes the live audit database while Caddy runs: the writer
// must notice at its check interval and start a new file, so that later calls are audited.
func TestHostileAuditDeletedDatabase(t *testing.T) {
	up := fake(t, "del-up")
	dbPath := filepath.Join(t.TempDir(), "record.db")
	site := gatewaySite("", clientBlock("del-up", up.URL(), "match keyword gpt"))
	gw := startGateway(t, auditGlobals(dbPath, "check_interval 10ms"), site)

	if status, _, body := gw.post("/v1/chat/completions", "application/json",
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, "X-Request-Id", "before"); status != http.StatusOK {
		t.Fatalf("first call: %d %s", status, body)
	}
	eventually(t, "the first row to be written", func() (bool, string) {
		return auditRowCount(t, dbPath) == 1, "no row yet"
	})
	if err := os.Remove(dbPath); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a new audit database to appear", func() (bool, string) {
		_, err := os.Stat(dbPath)
		return err == nil, fmt.Sprint(err)
	})
	if status, _, body := gw.post("/v1/chat/completions", "application/json",
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, "X-Request-Id", "after"); status != http.StatusOK {
		t.Fatalf("second call: %d %s", status, body)
	}

	gw.reload("", site, false)
	awaitCallsEnded(t)
	rows := readAuditRows(t, dbPath)
	if len(rows) != 1 || rows[0].RequestID != "after" {
		t.Errorf("rows in the new file: %+v, want the call made after the deletion", rows)
	}
}

// auditRowCount counts the rows of the audit database at path, 0 if it cannot be read yet.
func auditRowCount(t *testing.T, path string) int64 {
	t.Helper()
	conn, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
	if err != nil {
		return 0
	}
	defer conn.Close()
	stmt, _, err := conn.Prepare(`SELECT COUNT(*) FROM records`)
	if err != nil {
		return 0
	}
	defer stmt.Close()
	if !stmt.Step() {
		return 0
	}
	return stmt.ColumnInt64(0)
}

// TestHostileAuditWriteFailuresCounted makes the database refuse rows the way a full disk does
// (a trigger rolls the whole transaction back) and checks that every call is either a row in
// the file or counted in caddy_llm_gateway_audit_dropped_total{reason="write_failed"}.
func TestHostileAuditWriteFailuresCounted(t *testing.T) {
	up := fake(t, "full-up")
	dbPath := filepath.Join(t.TempDir(), "record.db")
	conn, err := sqlite3.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	// The writer creates the table the same way on a fresh file; the trigger stands in for a
	// disk that fills up now and then.
	if err := conn.Exec(`CREATE TABLE records (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		Time TEXT, IP TEXT, Model TEXT, Type TEXT,
		CompletionTokens INTEGER, PromptTokens INTEGER, TotalTokens INTEGER,
		Tool BOOLEAN, Multimodal BOOLEAN,
		Headers TEXT, Request TEXT, Response TEXT,
		Backend TEXT, Status INTEGER, LatencyMs INTEGER, TTFTMs INTEGER,
		Stream BOOLEAN, Endpoint TEXT, RequestID TEXT, Tried TEXT, Error TEXT);
		CREATE TRIGGER disk_full BEFORE INSERT ON records WHEN NEW.Model = 'gpt-doomed'
		BEGIN SELECT RAISE(ROLLBACK, 'disk I/O error'); END`); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	site := "\tmetrics /metrics\n" + gatewaySite("", clientBlock("full-up", up.URL(), "match keyword gpt"))
	gw := startGateway(t, auditGlobals(dbPath), site)
	const ns = "caddy_llm_gateway_"
	writeFailed := map[string]string{"reason": "write_failed"}
	before, _ := series(gw.scrape(), ns+"audit_dropped_total", writeFailed)

	const calls = 40
	var wg sync.WaitGroup
	for i := range calls {
		model := "gpt-4o"
		if i%4 == 0 {
			model = "gpt-doomed"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, n := postCounting(t, gw.URL+"/v1/chat/completions", "call-"+strconv.Itoa(i),
				[]byte(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
			if status != http.StatusOK || n == 0 {
				t.Errorf("call %d: status %d", i, status)
			}
		}()
	}
	wg.Wait()

	var failed float64
	eventually(t, "every call to be written or counted", func() (bool, string) {
		got, ok := series(gw.scrape(), ns+"audit_dropped_total", writeFailed)
		if !ok {
			return false, `no audit_dropped_total{reason="write_failed"} series`
		}
		failed = got - before
		rows := auditRowCount(t, dbPath)
		return float64(rows)+failed == calls, fmt.Sprintf("%d rows + %v counted as failed, for %d calls", rows, failed, calls)
	})
	if failed < calls/4 {
		t.Errorf("%v rows counted as failed, want at least the %d refused", failed, calls/4)
	}
	if q, _ := series(gw.scrape(), ns+"audit_dropped_total", map[string]string{"reason": "queue_full"}); q != 0 {
		t.Errorf(`audit_dropped_total{reason="queue_full"} = %v, want 0`, q)
	}
}

// TestHostileAuditAbsurdUsage has an upstream report usage no call can have — negative counts,
// 2^63-1, 1e30 — in JSON answers and streams: the stored counts must be clamped to
// 0..sse.MaxTokens, and the usage report must still read the file.
func TestHostileAuditAbsurdUsage(t *testing.T) {
	const lies = `{"prompt_tokens":-5,"completion_tokens":9223372036854775807,"total_tokens":1e30}`
	const streamLies = `{"prompt_tokens":1e30,"completion_tokens":-7}`
	url := auditUpstream(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/messages"):
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":9223372036854775807,\"output_tokens\":1}}}\n\n"+
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9223372036854775807}}\n\n"+
				"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
		case bytes.Contains(body, []byte(`"stream":true`)):
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}`+"\n\n"+
				`data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[],"usage":`+streamLies+`}`+"\n\ndata: [DONE]\n\n")
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"c","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":`+lies+`}`)
		}
	})
	dbPath := filepath.Join(t.TempDir(), "record.db")
	site := "\tmetrics /metrics\n" + gatewaySite("", clientBlock("liar", url, "match keyword gpt claude"))
	gw := startGateway(t, auditGlobals(dbPath), site)
	for _, c := range []struct{ id, path, body string }{
		{"json", "/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`},
		{"stream", "/v1/chat/completions", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"messages", "/v1/messages", `{"model":"claude-x","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`},
	} {
		if status, _, body := gw.post(c.path, "application/json", c.body, "X-Request-Id", c.id); status != http.StatusOK {
			t.Fatalf("%s: %d %s", c.id, status, body)
		}
	}
	scraped := gw.scrape()
	for _, typ := range []string{"prompt", "completion"} {
		if v, ok := series(scraped, "caddy_llm_gateway_tokens_total", map[string]string{"backend": "liar", "type": typ}); !ok || v < 0 || v > 3*sse.MaxTokens {
			t.Errorf("tokens_total{type=%q} = %v, want the clamped counts", typ, v)
		}
	}

	gw.reload("", site, false)
	awaitCallsEnded(t)
	const m = sse.MaxTokens
	want := map[string][3]int64{ // prompt, completion, total
		"json":     {0, m, m},
		"stream":   {m, 0, m},
		"messages": {m, m, m},
	}
	rows := rowsByRequestID(t, readAuditRows(t, dbPath))
	for id, w := range want {
		r, ok := rows[id]
		if !ok {
			t.Errorf("%s: no audit row", id)
			continue
		}
		if got := [3]int64{r.Prompt, r.Completion, r.Total}; got != w {
			t.Errorf("%s: stored usage %v, want %v (prompt, completion, total)", id, got, w)
		}
	}
	sum, err := audit.Summarize([]string{dbPath}, audit.SummaryOptions{})
	if err != nil {
		t.Fatalf("usage report: %v", err)
	}
	if sum.Total.Requests != 3 || sum.Total.TotalTokens != 3*m {
		t.Errorf("report total %+v, want 3 requests and %d tokens", sum.Total, int64(3*m))
	}
}
