package llmgateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ncruces/go-sqlite3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

// TestBookkeepingPanicKeepsAnswerAndAuditRow checks that a panic in the bookkeeping done after
// the answer (metrics) neither escapes finish, where net/http would drop the connection before
// flushing the answer, nor costs the call its audit row (issue #10, item 2). No input reaches
// such a panic any more, so the test provokes one: a call without a generation makes observe
// dereference nil, a stand-in for any bug there.
func TestBookkeepingPanicKeepsAnswerAndAuditRow(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "record.db")
	app := &audit.App{Path: dbPath, FlushInterval: caddy.Duration(-1)}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	handle, err := app.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.ErrorLevel)
	h := &Handler{logger: zap.New(core), audit: app}

	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	r.Header.Set("X-Request-Id", "bookkeeping-panic")
	c := &call{h: h, w: w, req: apiRequest{r: r, ep: epChat, start: time.Now()}, audit: handle,
		res: Result{Model: "gpt-4o", Status: http.StatusOK}}
	writeJSON(w, http.StatusOK, []byte(`{"answer":"complete"}`))

	func() {
		defer func() {
			if v := recover(); v != nil {
				t.Errorf("finish let a bookkeeping panic escape: %v", v)
			}
		}()
		c.finish()
	}()
	if n := logs.FilterMessageSnippet("panic updating metrics").Len(); n != 1 {
		t.Errorf("%d log entries for the metrics panic, want 1: %v", n, logs.All())
	}
	if w.Body.String() != `{"answer":"complete"}` {
		t.Errorf("answer = %q", w.Body.String())
	}

	// The app's own reference is the last one: dropping it drains and closes the writer.
	if err := app.Cleanup(); err != nil {
		t.Fatal(err)
	}
	conn, err := sqlite3.OpenFlags(dbPath, sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stmt, _, err := conn.Prepare(`SELECT Status FROM records WHERE RequestID = 'bookkeeping-panic'`)
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	if !stmt.Step() {
		t.Fatalf("no audit row for the call (%v)", stmt.Err())
	}
	if got := stmt.ColumnInt(0); got != http.StatusOK {
		t.Errorf("audit row status = %d, want 200", got)
	}
}
