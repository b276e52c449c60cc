package llmgateway_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ncruces/go-sqlite3"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// TestAuditPooledAnswersStayWithTheirRows sends many concurrent audited non-stream calls whose
// answers are read into pooled buffers that go back to the pool once the audit row is written,
// while the rows wait for a long linger, and checks that every row holds the request and the
// answer of its own call: a buffer given back before its row was written would be refilled by a
// later call, and its row would hold that call's answer. Answers of two sizes: within the pooled
// buffer, and larger, which outgrow it.
func TestAuditPooledAnswersStayWithTheirRows(t *testing.T) {
	small, large := fake(t, "pool-small"), fake(t, "pool-large")
	large.Update(func(s *fakeupstream.Settings) { s.Content = strings.Repeat("large answer ", 700) })
	dbPath := filepath.Join(t.TempDir(), "record.db")
	site := gatewaySite("",
		clientBlock("pool-small", small.URL(), "match exact small-model"),
		clientBlock("pool-large", large.URL(), "match exact large-model"))
	gw := startGateway(t, auditGlobals(dbPath, "flush_interval 200ms", "batch_size 64"), site)

	const workers, calls = 8, 40
	type sent struct{ request, answer string }
	got := make(map[string]sent)
	answers := auditedCalls(t, gw.URL, workers, calls, func(w, i int) (string, string) {
		id := fmt.Sprintf("pool-%d-%d", w, i)
		model := "small-model"
		if i%3 == 2 {
			model = "large-model"
		}
		body := `{"model":"` + model + `","messages":[{"role":"user","content":"call ` + id + ` ` + strings.Repeat("x", i*13) + `"}]}`
		got[id] = sent{request: body}
		return id, body
	})
	if t.Failed() {
		return
	}
	for id, answer := range answers {
		got[id] = sent{got[id].request, answer}
	}
	rows := auditRows(t, drainedAuditDB(t, gw, site, dbPath), `SELECT RequestID, Request, Response FROM records`, func(stmt *sqlite3.Stmt) {
		id := stmt.ColumnText(0)
		want, ok := got[id]
		if !ok {
			t.Errorf("row for unknown request %q", id)
			return
		}
		req, resp := stmt.ColumnText(1), stmt.ColumnText(2)
		if req != want.request {
			t.Errorf("%s: stored request %.60q…, want %.60q…", id, req, want.request)
		}
		if resp != want.answer {
			t.Errorf("%s: stored answer %.80q…, want the answer the caller got, %.80q…", id, resp, want.answer)
		}
		if !bytes.Contains([]byte(resp), []byte(`"object":"chat.completion"`)) {
			t.Errorf("%s: stored answer is no chat completion: %.80q", id, resp)
		}
	})
	if rows != workers*calls {
		t.Errorf("%d rows for %d calls", rows, workers*calls)
	}
}

// TestAuditBodiesNonePooledRequests: with `bodies none` the caller's request body is read into a
// pooled buffer that goes back to the pool when the call ends, once the row's Tool and
// Multimodal flags were taken from it. Many concurrent calls, every other one with "tools" and an
// image part, check that each row's flags are its own call's and that no body is stored: flags
// taken after the buffer went back would describe a later call's body.
func TestAuditBodiesNonePooledRequests(t *testing.T) {
	up := fake(t, "pool-none")
	dbPath := filepath.Join(t.TempDir(), "record.db")
	site := gatewaySite("", clientBlock("pool-none", up.URL(), "match exact none-model"))
	gw := startGateway(t, auditGlobals(dbPath, "bodies none", "flush_interval 200ms", "batch_size 64"), site)

	const workers, calls = 8, 40
	withTools := make(map[string]bool)
	auditedCalls(t, gw.URL, workers, calls, func(w, i int) (string, string) {
		id := fmt.Sprintf("none-%d-%d", w, i)
		tools := (w+i)%2 == 0
		content := `"call ` + id + ` ` + strings.Repeat("y", i*29) + `"`
		extra := ""
		if tools {
			content = `[{"type":"text","text":"call ` + id + `"},{"type":"image_url","image_url":{"url":"data:,x"}}]`
			extra = `,"tools":[{"type":"function","function":{"name":"f"}}]`
		}
		withTools[id] = tools
		return id, `{"model":"none-model","messages":[{"role":"user","content":` + content + `}]` + extra + `}`
	})
	if t.Failed() {
		return
	}
	const query = `SELECT RequestID, Tool, Multimodal, Request IS NULL, Response IS NULL FROM records`
	rows := auditRows(t, drainedAuditDB(t, gw, site, dbPath), query, func(stmt *sqlite3.Stmt) {
		id := stmt.ColumnText(0)
		want, ok := withTools[id]
		if !ok {
			t.Errorf("row for unknown request %q", id)
			return
		}
		if tool, mm := stmt.ColumnBool(1), stmt.ColumnBool(2); tool != want || mm != want {
			t.Errorf("%s: Tool %v, Multimodal %v; the call sent tools and an image: %v", id, tool, mm, want)
		}
		if !stmt.ColumnBool(3) || !stmt.ColumnBool(4) {
			t.Errorf("%s: a body is stored under bodies none", id)
		}
	})
	if rows != workers*calls {
		t.Errorf("%d rows for %d calls", rows, workers*calls)
	}
}

// auditedCalls makes workers×calls chat calls to url, workers at a time, each on its own
// keep-alive connection; call gives the request ID and body of worker w's call i (it runs under
// a lock, so it may fill the caller's maps). It returns the answer of every call by ID; a call
// that fails is reported on t.
func auditedCalls(t *testing.T, url string, workers, calls int, call func(w, i int) (id, body string)) map[string]string {
	t.Helper()
	var mu sync.Mutex
	answers := make(map[string]string)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer hc.CloseIdleConnections()
			for i := range calls {
				mu.Lock()
				id, body := call(w, i)
				mu.Unlock()
				req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Request-Id", id)
				resp, err := hc.Do(req)
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				answer, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Errorf("%s: status %d, %v", id, resp.StatusCode, err)
					return
				}
				mu.Lock()
				answers[id] = string(answer)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return answers
}

// drainedAuditDB reloads gw without the audit app, which writes every queued row and closes the
// database, and opens the database read-only (closed with the test).
func drainedAuditDB(t *testing.T, gw *gateway, site, dbPath string) *sqlite3.Conn {
	t.Helper()
	gw.reload("", site, false)
	awaitCallsEnded(t)
	conn, err := sqlite3.OpenFlags(dbPath, sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// auditRows runs query on conn, calls row for each row, and returns how many there were.
func auditRows(t *testing.T, conn *sqlite3.Conn, query string, row func(*sqlite3.Stmt)) int {
	t.Helper()
	stmt, _, err := conn.Prepare(query)
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	n := 0
	for stmt.Step() {
		n++
		row(stmt)
	}
	if err := stmt.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
