package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/goccy/go-json"
)

func provision(t *testing.T, a *App) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return a.Provision(ctx)
}

func dur(d time.Duration) *caddy.Duration {
	cd := caddy.Duration(d)
	return &cd
}

func TestAppDefaultsFromEnvironment(t *testing.T) {
	tests := []struct {
		name, recdPath, interval string
		wantPath                 string
		wantInterval             time.Duration
		wantErr                  string
	}{
		{name: "nothing set", wantPath: DefaultPath, wantInterval: 60 * time.Second},
		{name: "origin url", recdPath: "sqlite:./data/r.db", interval: "15", wantPath: "./data/r.db", wantInterval: 15 * time.Second},
		{name: "sqlx url with slashes and query", recdPath: "sqlite:///var/lib/r.db?mode=rwc", wantPath: "/var/lib/r.db", wantInterval: 60 * time.Second},
		{name: "plain path", recdPath: "/tmp/x.db", wantPath: "/tmp/x.db", wantInterval: 60 * time.Second},
		{name: "interval zero", interval: "0", wantErr: "DB_ROTATION_CHECK_INTERVAL_SEC"},
		{name: "interval negative", interval: "-3", wantErr: "DB_ROTATION_CHECK_INTERVAL_SEC"},
		{name: "interval garbage", interval: "soon", wantErr: "DB_ROTATION_CHECK_INTERVAL_SEC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(envPath, tt.recdPath)
			t.Setenv(envCheckInterval, tt.interval)
			a := new(App)
			err := a.setDefaults()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Path != tt.wantPath || time.Duration(*a.CheckInterval) != tt.wantInterval {
				t.Errorf("path %q interval %s, want %q %s", a.Path, time.Duration(*a.CheckInterval), tt.wantPath, tt.wantInterval)
			}
			if a.Rotate != RotateMonthly || a.Bodies != BodiesFull || a.QueueSize != DefaultQueueSize ||
				a.BatchSize != DefaultBatchSize || time.Duration(a.FlushInterval) != DefaultFlushInterval ||
				len(a.RedactHeaders) != len(DefaultRedactHeaders) {
				t.Errorf("defaults not applied: %+v", a)
			}
		})
	}
}

func TestAppConfiguredIntervalWinsOverEnvironment(t *testing.T) {
	t.Setenv(envCheckInterval, "0") // would be an error if read
	a := &App{CheckInterval: dur(time.Second)}
	if err := a.setDefaults(); err != nil || time.Duration(*a.CheckInterval) != time.Second {
		t.Errorf("setDefaults = %v, interval %s", err, time.Duration(*a.CheckInterval))
	}
}

func TestAppValidation(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		wantErr string // empty: valid
	}{
		{"minimal", `{}`, ""},
		{"all set", `{"rotate":"off","check_interval":"30s","bodies":"truncate","truncate_bytes":4096,"redact_headers":["X-Secret"],"queue_size":10,"batch_size":5,"flush_interval":"-1ns","max_body_size":2048}`, ""},
		{"max_body_size negative", `{"max_body_size":-1}`, "max_body_size"},
		{"max_body_size above the limit", `{"max_body_size":16777217}`, "max_body_size"},
		{"check_interval zero", `{"check_interval":0}`, "check_interval"},
		{"check_interval negative", `{"check_interval":"-1s"}`, "check_interval"},
		{"rotate unknown", `{"rotate":"weekly"}`, "rotate"},
		{"bodies unknown", `{"bodies":"some"}`, "bodies"},
		{"truncate without bytes", `{"bodies":"truncate"}`, "truncate_bytes"},
		{"bytes without truncate", `{"truncate_bytes":10}`, "truncate_bytes"},
		{"queue negative", `{"queue_size":-1}`, "queue_size"},
		{"batch negative", `{"batch_size":-1}`, "batch_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(envCheckInterval, "")
			a := new(App)
			if err := json.Unmarshal([]byte(tt.json), a); err != nil {
				t.Fatal(err)
			}
			a.Path = filepath.Join(t.TempDir(), "record.db")
			err := provision(t, a)
			t.Cleanup(func() { a.Cleanup() })
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Provision: %v", err)
				}
				if err := a.Validate(); err != nil {
					t.Errorf("Validate after Provision: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Provision err = %v, want one mentioning %q", err, tt.wantErr)
			}
			if a.Writer() != nil {
				t.Error("invalid config opened a writer")
			}
		})
	}
}

func TestAppsShareOneWriterUntilLastRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "record.db")
	// Two config generations auditing the same file, with different body
	// settings; the second spells the path differently.
	gen1 := &App{Path: path}
	gen2 := &App{Path: filepath.Join(filepath.Dir(path), ".", "record.db"), Bodies: BodiesNone}
	for _, a := range []*App{gen1, gen2} {
		if err := provision(t, a); err != nil {
			t.Fatal(err)
		}
	}
	w := gen1.Writer()
	if w == nil || gen2.Writer() != w {
		t.Fatalf("writers %p and %p, want one shared", gen1.Writer(), gen2.Writer())
	}
	refs := func() int {
		n, _ := writers.References(path)
		return n
	}
	if refs() != 2 {
		t.Fatalf("refs = %d, want 2", refs())
	}

	// A request of each generation holds a reference.
	h1, err := gen1.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	h2, err := gen2.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	if h1.Writer() != w || h2.Writer() != w || refs() != 4 {
		t.Fatalf("handles %p %p refs %d", h1.Writer(), h2.Writer(), refs())
	}

	// Both configs are unloaded while the requests still run.
	for _, a := range []*App{gen1, gen2} {
		if err := a.Cleanup(); err != nil {
			t.Fatal(err)
		}
		if a.Writer() != nil {
			t.Error("Writer() after Cleanup")
		}
	}
	if err := gen1.Cleanup(); err != nil || refs() != 2 {
		t.Fatalf("second Cleanup: %v, refs %d; want a no-op", err, refs())
	}
	if !h1.Enqueue(fullRecord(1, time.Now())) {
		t.Fatal("Enqueue refused after the apps were cleaned up")
	}
	if err := h1.Release(); err != nil {
		t.Fatal(err)
	}
	if !h2.Enqueue(fullRecord(2, time.Now())) {
		t.Fatal("Enqueue refused while a handle is still held")
	}
	if err := h2.Release(); err != nil { // last reference: drains and closes
		t.Fatal(err)
	}
	if _, ok := writers.References(path); ok {
		t.Error("writer still pooled after the last release")
	}
	if err := w.Sync(context.Background()); !errors.Is(err, errClosed) {
		t.Errorf("Sync = %v, want errClosed", err)
	}
	// Each row followed its own generation's bodies setting.
	rows := query(t, path, `SELECT RequestID, Request IS NULL FROM records ORDER BY id`)
	if fmt.Sprint(rows) != "[[req-1 0] [req-2 1]]" {
		t.Errorf("rows = %v, want req-1 with body, req-2 without", rows)
	}
	assertNoSideFiles(t, path)

	// A straggler of an unloaded config still gets its row written.
	h3, err := gen1.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	if h3.Writer() == w {
		t.Error("Acquire returned the closed writer")
	}
	h3.Enqueue(fullRecord(3, time.Now()))
	if err := h3.Release(); err != nil {
		t.Fatal(err)
	}
	if got := count(t, path); got != 3 {
		t.Errorf("rows = %d, want 3", got)
	}
}

func TestZeroHandleIsNoop(t *testing.T) {
	var a *App // auditing not configured
	h, err := a.Acquire()
	if err != nil || h.Writer() != nil {
		t.Fatalf("Acquire on nil App = %v, %v", h, err)
	}
	if h.Enqueue(&Record{}) {
		t.Error("zero Handle accepted a record")
	}
	if err := h.Release(); err != nil {
		t.Error(err)
	}
	if _, err := new(App).Acquire(); err == nil {
		t.Error("Acquire before Provision succeeded")
	}
}

// TestReloadThroughCaddy runs the app in real Caddy config loads: a reload
// that keeps the app shares the writer; one that drops it closes the writer.
func TestReloadThroughCaddy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "record.db")
	cfg := func(withAudit bool) []byte {
		apps := `{}`
		if withAudit {
			apps = fmt.Sprintf(`{"llm_audit":{"path":%q,"check_interval":"1m"}}`, path)
		}
		return fmt.Appendf(nil, `{"admin":{"disabled":true,"config":{"persist":false}},"apps":%s}`, apps)
	}
	t.Cleanup(func() { caddy.Stop() })
	refs := func() int {
		n, _ := writers.References(path)
		return n
	}
	if err := caddy.Load(cfg(true), true); err != nil {
		t.Fatal(err)
	}
	if refs() != 1 {
		t.Fatalf("refs after load = %d, want 1", refs())
	}
	app, err := caddy.ActiveContext().App("llm_audit")
	if err != nil {
		t.Fatal(err)
	}
	h, err := app.(*App).Acquire() // an in-flight request
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg(true), true); err != nil {
		t.Fatal(err)
	}
	if refs() != 2 {
		t.Fatalf("refs after reload = %d, want 2 (new app + request)", refs())
	}
	if err := caddy.Load(cfg(false), true); err != nil {
		t.Fatal(err)
	}
	if refs() != 1 || !h.Enqueue(fullRecord(1, time.Now())) {
		t.Fatalf("refs after dropping the app = %d, want the request's 1 and a working writer", refs())
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if _, ok := writers.References(path); ok {
		t.Error("writer still open after the last request ended")
	}
	if got := count(t, path); got != 1 {
		t.Errorf("rows = %d, want 1", got)
	}
}

func TestRequestPathDoesNotAllocate(t *testing.T) {
	a := &App{Path: filepath.Join(t.TempDir(), "record.db")}
	if err := provision(t, a); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Cleanup() })
	rec := fullRecord(0, time.Now())
	allocs := testing.AllocsPerRun(100, func() {
		h, err := a.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		h.Enqueue(rec)
		h.Release()
	})
	if allocs != 0 {
		t.Errorf("Acquire+Enqueue+Release allocates %.1f times per request, want 0", allocs)
	}
}

// TestNewWriterWhileOldOneCloses releases the last reference of a writer (its close leaves WAL
// mode and removes the side files) while a new config opens the same file, as a reload that turns
// auditing off and on again does. The old close is held between closing its connection and
// removing the side files until the new config's connection is in WAL mode or half a second
// passed: the new writer must wait for the old close, else the old one removes the new
// connection's -wal and -shm files from under it ("disk I/O error", lost rows).
func TestNewWriterWhileOldOneCloses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "record.db")
	old := &App{Path: path}
	if err := provision(t, old); err != nil {
		t.Fatal(err)
	}
	h, err := old.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	h.Enqueue(fullRecord(0, time.Now()))
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	connClosed := make(chan struct{})
	var overlapped atomic.Bool
	// Set before Release, whose close request reaches the writer goroutine through a channel.
	h.Writer().cfg.closedConn = func() {
		close(connClosed)
		// Hold on until the next config's connection is in WAL mode (its -wal file exists), or
		// for half a second when the next config waits for this close, as it must.
		for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if _, err := os.Stat(path + "-wal"); err == nil {
				overlapped.Store(true)
				return
			}
		}
	}
	released := make(chan error, 1)
	go func() { released <- h.Release() }()
	<-connClosed

	next := &App{Path: path}
	if err := provision(t, next); err != nil {
		t.Fatalf("provisioning the next config: %v", err)
	}
	if err := <-released; err != nil {
		t.Fatalf("releasing the old writer: %v", err)
	}
	if overlapped.Load() {
		t.Error("the next config opened the database while the previous writer was still closing it")
	}
	h2, err := next.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	h2.Enqueue(fullRecord(1, time.Now()))
	if err := h2.Writer().Sync(context.Background()); err != nil {
		t.Fatalf("the next writer cannot write: %v", err)
	}
	if err := next.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := h2.Release(); err != nil {
		t.Fatal(err)
	}
	if got := count(t, path); got != 2 {
		t.Errorf("rows = %d, want 2", got)
	}
}
