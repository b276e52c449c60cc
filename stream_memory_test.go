package llmgateway_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// holdingUpstream serves every POST with one chat chunk and then holds the stream open until the
// caller goes away or the test ends. It reads and forgets the request body, so whatever holds a
// request body in this process is the gateway.
func holdingUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}`+"\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		close(done)
		srv.Close()
	})
	return "http://" + ln.Addr().String() + "/v1"
}

// liveHeap is the heap in use after two full collections: objects in sync.Pools (the JSON
// decoder pools copies of the bodies it decoded) are dropped on the second.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestStreamReleasesRequestBodies checks that an open stream holds neither the caller's request
// body nor the one sent upstream when the audit log stores no bodies: a long prompt held for a
// stream's whole life, thousands of times over, would be most of the gateway's memory. The audit
// row's flags, read from the body, must survive the release.
func TestStreamReleasesRequestBodies(t *testing.T) {
	const promptSize = 4 << 20
	for _, tc := range []struct {
		name  string
		audit bool
	}{
		{"audit off", false},
		{"audit without bodies", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var globals, dbPath string
			if tc.audit {
				dbPath = filepath.Join(t.TempDir(), "record.db")
				globals = auditGlobals(dbPath, "bodies none")
			}
			site := gatewaySite("", clientBlock("holder", holdingUpstream(t), "match keyword gpt"))
			gw := startGateway(t, globals, site)
			body := []byte(`{"model":"gpt-4o","stream":true,"tools":[{"type":"function","function":{"name":"f"}}],` +
				`"messages":[{"role":"user","content":"` + strings.Repeat("x", promptSize) + `"}]}`)

			before := liveHeap()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, gw.URL+"/v1/chat/completions", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "data: ") {
				t.Fatalf("first line %q, %v; want a data line", line, err)
			}

			// The stream is open: the gateway sits in its read of the upstream.
			if grown := liveHeap() - before; grown > promptSize/2 {
				t.Errorf("live heap grew by %d bytes with one open stream of a %d-byte prompt: a request body is still held", grown, promptSize)
			}
			runtime.KeepAlive(body)

			if !tc.audit {
				return
			}
			cancel()
			resp.Body.Close()
			gw.reload("", site, false)
			awaitCallsEnded(t)
			if tool := auditTool(t, dbPath); !tool {
				t.Error("audit row: Tool = false for a request with tools")
			}
		})
	}
}

// auditTool returns the Tool column of the only row of the audit database at path.
func auditTool(t *testing.T, path string) bool {
	t.Helper()
	conn, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatalf("opening audit database %s: %v", path, err)
	}
	defer conn.Close()
	stmt, _, err := conn.Prepare(`SELECT Tool, count(*) OVER () FROM records`)
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	if !stmt.Step() {
		t.Fatalf("no audit row: %v", stmt.Err())
	}
	if n := stmt.ColumnInt64(1); n != 1 {
		t.Fatalf("%d audit rows, want 1", n)
	}
	return stmt.ColumnBool(0)
}
