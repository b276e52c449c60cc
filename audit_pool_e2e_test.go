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
	var mu sync.Mutex
	got := make(map[string]sent)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer hc.CloseIdleConnections()
			for i := range calls {
				id := fmt.Sprintf("pool-%d-%d", w, i)
				model := "small-model"
				if i%3 == 2 {
					model = "large-model"
				}
				body := `{"model":"` + model + `","messages":[{"role":"user","content":"call ` + id + ` ` + strings.Repeat("x", i*13) + `"}]}`
				req, _ := http.NewRequest(http.MethodPost, gw.URL+"/v1/chat/completions", strings.NewReader(body))
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
				got[id] = sent{body, string(answer)}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	gw.reload("", site, false)
	awaitCallsEnded(t)
	conn, err := sqlite3.OpenFlags(dbPath, sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stmt, _, err := conn.Prepare(`SELECT RequestID, Request, Response FROM records`)
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	rows := 0
	for stmt.Step() {
		rows++
		id := stmt.ColumnText(0)
		want, ok := got[id]
		if !ok {
			t.Errorf("row for unknown request %q", id)
			continue
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
	}
	if err := stmt.Err(); err != nil {
		t.Fatal(err)
	}
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
	var mu sync.Mutex
	withTools := make(map[string]bool)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer hc.CloseIdleConnections()
			for i := range calls {
				id := fmt.Sprintf("none-%d-%d", w, i)
				tools := (w+i)%2 == 0
				content := `"call ` + id + ` ` + strings.Repeat("y", i*29) + `"`
				extra := ""
				if tools {
					content = `[{"type":"text","text":"call ` + id + `"},{"type":"image_url","image_url":{"url":"data:,x"}}]`
					extra = `,"tools":[{"type":"function","function":{"name":"f"}}]`
				}
				body := `{"model":"none-model","messages":[{"role":"user","content":` + content + `}]` + extra + `}`
				req, _ := http.NewRequest(http.MethodPost, gw.URL+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Request-Id", id)
				resp, err := hc.Do(req)
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Errorf("%s: status %d, %v", id, resp.StatusCode, err)
					return
				}
				mu.Lock()
				withTools[id] = tools
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	gw.reload("", site, false)
	awaitCallsEnded(t)
	conn, err := sqlite3.OpenFlags(dbPath, sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stmt, _, err := conn.Prepare(`SELECT RequestID, Tool, Multimodal, Request IS NULL, Response IS NULL FROM records`)
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	rows := 0
	for stmt.Step() {
		rows++
		id := stmt.ColumnText(0)
		want, ok := withTools[id]
		if !ok {
			t.Errorf("row for unknown request %q", id)
			continue
		}
		if tool, mm := stmt.ColumnBool(1), stmt.ColumnBool(2); tool != want || mm != want {
			t.Errorf("%s: Tool %v, Multimodal %v; the call sent tools and an image: %v", id, tool, mm, want)
		}
		if !stmt.ColumnBool(3) || !stmt.ColumnBool(4) {
			t.Errorf("%s: a body is stored under bodies none", id)
		}
	}
	if err := stmt.Err(); err != nil {
		t.Fatal(err)
	}
	if rows != workers*calls {
		t.Errorf("%d rows for %d calls", rows, workers*calls)
	}
}
