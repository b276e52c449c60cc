package llmgateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ncruces/go-sqlite3"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// These tests check the audit log (SPEC §8) end to end: real calls through a real Caddy, then
// the SQLite file read with its own connection once the writer has closed it. The writer drains
// and closes when its last reference goes, so a test awaits its rows by loading a config without
// llm_audit (or ending the process) and waiting until no call holds a reference any more.

// callerKey is the key gateway.client sends; the audit log must never hold it in clear.
const callerKey = "sk-caller-key-123456"

// auditRow is one row of the records table, with the columns these tests check.
type auditRow struct {
	RequestID, Model, Type, IP, Endpoint, Backend, Tried, Error, Headers string
	Response                                                             *string // nil for NULL
	Prompt, Completion, Total, Status, LatencyMs                         int64
	TTFTMs                                                               *int64 // nil for NULL
	Stream                                                               bool
}

// readAuditRows returns every row of the audit database at path, in insertion order.
func readAuditRows(t *testing.T, path string) []auditRow {
	t.Helper()
	conn, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatalf("opening audit database %s: %v", path, err)
	}
	defer conn.Close()
	stmt, _, err := conn.Prepare(`SELECT RequestID, Model, Type, IP, Endpoint, Backend, Tried, Error, Headers,
		Response, PromptTokens, CompletionTokens, TotalTokens, Status, LatencyMs, TTFTMs, Stream
		FROM records ORDER BY id`)
	if err != nil {
		t.Fatalf("preparing audit query: %v", err)
	}
	defer stmt.Close()
	var rows []auditRow
	for stmt.Step() {
		r := auditRow{
			RequestID:  stmt.ColumnText(0),
			Model:      stmt.ColumnText(1),
			Type:       stmt.ColumnText(2),
			IP:         stmt.ColumnText(3),
			Endpoint:   stmt.ColumnText(4),
			Backend:    stmt.ColumnText(5),
			Tried:      stmt.ColumnText(6),
			Error:      stmt.ColumnText(7),
			Headers:    stmt.ColumnText(8),
			Prompt:     stmt.ColumnInt64(10),
			Completion: stmt.ColumnInt64(11),
			Total:      stmt.ColumnInt64(12),
			Status:     stmt.ColumnInt64(13),
			LatencyMs:  stmt.ColumnInt64(14),
			Stream:     stmt.ColumnBool(16),
		}
		if stmt.ColumnType(9) != sqlite3.NULL {
			s := stmt.ColumnText(9)
			r.Response = &s
		}
		if stmt.ColumnType(15) != sqlite3.NULL {
			v := stmt.ColumnInt64(15)
			r.TTFTMs = &v
		}
		rows = append(rows, r)
	}
	if err := stmt.Err(); err != nil {
		t.Fatalf("reading audit rows: %v", err)
	}
	return rows
}

// rowsByRequestID indexes rows by RequestID and fails the test on a duplicate: one call, one row.
func rowsByRequestID(t *testing.T, rows []auditRow) map[string]auditRow {
	t.Helper()
	m := make(map[string]auditRow, len(rows))
	for _, r := range rows {
		if _, dup := m[r.RequestID]; dup {
			t.Errorf("two rows for request %q", r.RequestID)
		}
		m[r.RequestID] = r
	}
	return m
}

// awaitCallsEnded waits until the gateway serves no API call: each has then run its finish and
// released its audit reference, so a writer no config holds any more is closed. The in_flight
// gauge drops only after that release, and nothing else signals the moment to a test.
func awaitCallsEnded(t *testing.T) {
	t.Helper()
	eventually(t, "gateway calls to end", func() (bool, string) {
		ctx := caddy.ActiveContext()
		reg := ctx.GetMetricsRegistry()
		if reg == nil {
			return false, "no active config"
		}
		fams, err := reg.Gather()
		if err != nil {
			return false, "gathering metrics: " + err.Error()
		}
		for _, f := range fams {
			if f.GetName() != "caddy_llm_gateway_in_flight" {
				continue
			}
			var n float64
			for _, m := range f.GetMetric() {
				n += m.GetGauge().GetValue()
			}
			return n == 0, fmt.Sprintf("%v calls in flight", n)
		}
		return false, "caddy_llm_gateway_in_flight not registered"
	})
}

// auditGlobals is the llm_audit global option writing to path.
func auditGlobals(path string, lines ...string) string {
	return "\tllm_audit {\n\t\tpath " + path + "\n\t\t" + strings.Join(lines, "\n\t\t") + "\n\t}"
}

func TestAuditMixedCalls(t *testing.T) {
	const upDelay = 25 * time.Millisecond
	jsonUp, streamUp, slowUp := fake(t, "au-json"), fake(t, "au-stream"), fake(t, "au-slow")
	down1, down2 := fake(t, "au-down1"), fake(t, "au-down2")
	for _, up := range []*fakeupstream.Server{jsonUp, streamUp, slowUp, down1, down2} {
		up.Update(func(s *fakeupstream.Settings) { s.Delay = upDelay })
	}
	streamUp.Update(func(s *fakeupstream.Settings) { s.Chunks = 4 })
	slowUp.Update(func(s *fakeupstream.Settings) {
		s.Chunks = 5
		s.ChunkDelay = time.Minute
	})
	for _, up := range []*fakeupstream.Server{down1, down2} {
		up.Update(func(s *fakeupstream.Settings) { s.Status = http.StatusServiceUnavailable })
	}
	dbPath := filepath.Join(t.TempDir(), "record.db")
	site := gatewaySite("\t\thealth_check {\n\t\t\tfailure_threshold 100\n\t\t}",
		clientBlock("au-json", jsonUp.URL(), "match exact json-model"),
		clientBlock("au-stream", streamUp.URL(), "match exact stream-model"),
		clientBlock("au-slow", slowUp.URL(), "match exact slow-model"),
		clientBlock("au-down1", down1.URL(), "match exact down-model"),
		clientBlock("au-down2", down2.URL(), "match exact down-model"))
	gw := startGateway(t, auditGlobals(dbPath), site)
	client := gw.client()
	ctx := context.Background()
	id := func(s string) option.RequestOption { return option.WithHeader("X-Request-Id", s) }

	if _, err := client.Chat.Completions.New(ctx, chatParams("json-model"), id("chat")); err != nil {
		t.Fatalf("chat: %v", err)
	}
	if _, err := client.Completions.New(ctx, openai.CompletionNewParams{
		Model:  "json-model",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon")},
	}, id("completion")); err != nil {
		t.Fatalf("completion: %v", err)
	}
	if _, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "json-model",
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("embed me")},
	}, id("embedding")); err != nil {
		t.Fatalf("embedding: %v", err)
	}
	var apiErr *openai.Error
	if _, err := client.Chat.Completions.New(ctx, chatParams("down-model"), id("down")); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("chat to failing upstreams: err = %v, want the upstream's 503", err)
	}
	downStream := client.Chat.Completions.NewStreaming(ctx, chatParams("down-model"), id("down-stream"))
	if downStream.Next() || !errors.As(downStream.Err(), &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("stream to failing upstreams: err = %v, want the upstream's 503", downStream.Err())
	}
	downStream.Close()

	// The SDK closes the body as soon as it reads [DONE], as real callers do; the row must
	// still be a complete 200 with the upstream's usage.
	drain(t, client.Chat.Completions.NewStreaming(ctx, chatParams("stream-model"), id("stream")))
	withUsage := chatParams("stream-model")
	withUsage.StreamOptions.IncludeUsage = openai.Bool(true)
	chunks := drain(t, client.Chat.Completions.NewStreaming(ctx, withUsage, id("stream-usage")))
	if len(chunks) == 0 {
		t.Fatal("include_usage stream: no chunk")
	}
	if u := chunks[len(chunks)-1].Usage; u.PromptTokens != fakeupstream.DefaultPromptTokens || u.CompletionTokens != 4 {
		t.Errorf("include_usage stream: last chunk usage = %+v, want 11 prompt and 4 completion tokens", u)
	}
	drain(t, client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model:  "stream-model",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon")},
	}, id("completion-stream")))

	// A caller that gives up mid-stream still gets its (partial) row.
	cctx, cancel := context.WithCancel(ctx)
	cut := client.Chat.Completions.NewStreaming(cctx, chatParams("slow-model"), id("cancelled"))
	if !cut.Next() {
		t.Fatalf("cancelled stream: no first chunk: %v", cut.Err())
	}
	cancel()
	cut.Close()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := slowUp.WaitCancelled(wctx, 1); err != nil {
		t.Fatalf("cancelled stream never reached the upstream: %v", err)
	}

	gw.reload("", site, false)
	awaitCallsEnded(t)
	rows := readAuditRows(t, dbPath)
	byID := rowsByRequestID(t, rows)

	const p, c = fakeupstream.DefaultPromptTokens, fakeupstream.DefaultCompletionTokens
	for _, want := range []struct {
		id, typ, endpoint, model, tried string
		status                          int64
		prompt, completion, total       int64
		stream, ttft                    bool
		minLatency                      time.Duration
		errPart                         string // "" means the Error column must be empty
		respPart                        string // part of the body the caller received (a stream's: its response object, SPEC §8)
	}{
		{"chat", "chat.completions", "/v1/chat/completions", "json-model", "au-json", 200, p, c, p + c, false, false, upDelay, "", "hello from au-json"},
		{"completion", "text_completion", "/v1/completions", "json-model", "au-json", 200, p, c, p + c, false, false, upDelay, "", "hello from au-json"},
		{"embedding", "embeddings", "/v1/embeddings", "json-model", "au-json", 200, p, 0, p, false, false, upDelay, "", `"embedding":[`},
		{"down", "chat.completions", "/v1/chat/completions", "down-model", "au-down1,au-down2", 503, 0, 0, 0, false, false, 2 * upDelay, "503", "status 503"},
		{"down-stream", "chat.completions", "/v1/chat/completions", "down-model", "au-down1,au-down2", 503, 0, 0, 0, true, false, 2 * upDelay, "503", "status 503"},
		{"stream", "chat.completions", "/v1/chat/completions", "stream-model", "au-stream", 200, p, 4, p + 4, true, true, upDelay, "", `"message":{"role":"assistant","content":"hello from au-stream"},"finish_reason":"stop"`},
		{"stream-usage", "chat.completions", "/v1/chat/completions", "stream-model", "au-stream", 200, p, 4, p + 4, true, true, upDelay, "", `"completion_tokens":4`},
		{"completion-stream", "text_completion", "/v1/completions", "stream-model", "au-stream", 200, p, 4, p + 4, true, true, upDelay, "", `"text":"hello from au-stream","finish_reason":"stop"`},
		// Cut before the upstream reported usage: no tokens are known.
		{"cancelled", "chat.completions", "/v1/chat/completions", "slow-model", "au-slow", 499, 0, 0, 0, true, true, upDelay, "caller closed", `"role":"assistant"`},
	} {
		r, ok := byID[want.id]
		if !ok {
			t.Errorf("%s: no audit row", want.id)
			continue
		}
		tried := strings.Split(r.Tried, ",")
		wantTried := strings.Split(want.tried, ",")
		// The random strategy orders equal candidates either way; the last one tried is the
		// backend of a call that failed everywhere.
		slices.Sort(tried)
		if !slices.Equal(tried, wantTried) || r.Backend != r.Tried[strings.LastIndex(r.Tried, ",")+1:] {
			t.Errorf("%s: Tried %q Backend %q, want tried %s, backend the last one", want.id, r.Tried, r.Backend, want.tried)
		}
		if r.Type != want.typ || r.Endpoint != want.endpoint || r.Model != want.model || r.IP != "127.0.0.1" {
			t.Errorf("%s: Type %q Endpoint %q Model %q IP %q, want %q %q %q 127.0.0.1", want.id, r.Type, r.Endpoint, r.Model, r.IP, want.typ, want.endpoint, want.model)
		}
		if r.Status != want.status || r.Stream != want.stream {
			t.Errorf("%s: Status %d Stream %v, want %d %v", want.id, r.Status, r.Stream, want.status, want.stream)
		}
		if r.Prompt != want.prompt || r.Completion != want.completion || r.Total != want.total {
			t.Errorf("%s: tokens %d/%d/%d, want %d/%d/%d (prompt/completion/total)", want.id, r.Prompt, r.Completion, r.Total, want.prompt, want.completion, want.total)
		}
		if r.LatencyMs < want.minLatency.Milliseconds() {
			t.Errorf("%s: LatencyMs %d, want at least the upstream delay of %v", want.id, r.LatencyMs, want.minLatency)
		}
		switch {
		case !want.ttft && r.TTFTMs != nil:
			t.Errorf("%s: TTFTMs %d, want NULL (no stream was relayed)", want.id, *r.TTFTMs)
		case want.ttft && r.TTFTMs == nil:
			t.Errorf("%s: TTFTMs NULL, want the time to the first token", want.id)
		case want.ttft && (*r.TTFTMs < upDelay.Milliseconds() || *r.TTFTMs > r.LatencyMs):
			t.Errorf("%s: TTFTMs %d, want between the upstream delay %v and LatencyMs %d", want.id, *r.TTFTMs, upDelay, r.LatencyMs)
		}
		if (want.errPart == "") != (r.Error == "") || !strings.Contains(r.Error, want.errPart) {
			t.Errorf("%s: Error %q, want one containing %q", want.id, r.Error, want.errPart)
		}
		var headers map[string]string
		if err := json.Unmarshal([]byte(r.Headers), &headers); err != nil {
			t.Errorf("%s: Headers %q is not a JSON object of strings: %v", want.id, r.Headers, err)
		}
		if got := headers["authorization"]; got != "Bearer sk-ca…56" || strings.Contains(r.Headers, callerKey) {
			t.Errorf("%s: authorization stored as %q, want it masked as \"Bearer sk-ca…56\"", want.id, got)
		}
		if r.Response == nil || !strings.Contains(*r.Response, want.respPart) {
			t.Errorf("%s: Response %v, want the body the caller received, with %q", want.id, r.Response, want.respPart)
		}
	}
	if len(rows) != 9 {
		t.Errorf("%d audit rows for 9 calls", len(rows))
	}
}

// loadCounts is what the reload test's workers saw.
type loadCounts struct {
	mu        sync.Mutex
	byBackend map[string][]string // request ids of complete answers, by the backend that gave them
	resends   atomic.Int64        // requests sent again after a connection error with no byte of answer
	failures  atomic.Int64
}

// countingConn counts the bytes read from a connection, so a worker can tell a request that
// got no byte of answer (safe to resend) from one whose answer started and was cut.
type countingConn struct {
	net.Conn
	read atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

// loadClient is an HTTP client whose connections count the bytes they read.
func loadClient() *http.Client {
	var d net.Dialer
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 4,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &countingConn{Conn: conn}, nil
			},
		},
	}
}

// loadCall sends one request, resending it (up to 3 times) if it got a connection error before any byte
// of answer (DESIGN-NOTES, "Known Caddy behaviour"). It returns the backend of a complete 200
// answer, or an error for anything else.
func loadCall(hc *http.Client, url, reqID string, stream bool, counts *loadCounts) (string, error) {
	body := `{"model":"rl-model","messages":[{"role":"user","content":"hi"}]}`
	if stream {
		body = chatStreamBody("rl-model")
	}
	for attempt := 0; ; attempt++ {
		var conn *countingConn
		var before int64
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			conn, _ = info.Conn.(*countingConn)
			if conn != nil {
				before = conn.read.Load()
			}
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
			http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			return "", err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Request-Id", reqID)
		resp, err := hc.Do(req)
		if err != nil {
			if attempt < 3 && (conn == nil || conn.read.Load() == before) {
				// Resend on a new connection, as an SDK's retry would: the other pooled ones
				// may belong to the same stopping server, and with reloads this close together
				// a new connection can also land on an old socket about to close.
				hc.CloseIdleConnections()
				counts.resends.Add(1)
				continue
			}
			return "", fmt.Errorf("%s: %w", reqID, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			return "", fmt.Errorf("%s: answer cut after %d bytes: %w", reqID, len(b), err)
		case resp.StatusCode != http.StatusOK:
			return "", fmt.Errorf("%s: status %d: %s", reqID, resp.StatusCode, b)
		case stream && !strings.HasSuffix(string(b), "data: [DONE]\n\n"):
			return "", fmt.Errorf("%s: stream ended without [DONE]: %q", reqID, b)
		case !stream && !strings.Contains(string(b), "hello from rl-up"):
			return "", fmt.Errorf("%s: unexpected answer %q", reqID, b)
		}
		return resp.Header.Get("X-LLM-Gateway-Backend"), nil
	}
}

func TestAuditReloadUnderLoad(t *testing.T) {
	const workers, reloads = 4, 20
	up := fake(t, "rl-up")
	up.Update(func(s *fakeupstream.Settings) {
		s.Chunks = 4
		s.ChunkDelay = 15 * time.Millisecond
	})
	dbPath := filepath.Join(t.TempDir(), "record.db")
	// Each config names its client differently, so X-LLM-Gateway-Backend tells which config
	// served a call: "ra" and "rb" audit to the same file (rb without bodies), "rc" not at all.
	type config struct{ globals, site string }
	site := func(name string) string {
		return gatewaySite("", clientBlock(name, up.URL(), "match exact rl-model"))
	}
	configs := []config{
		{auditGlobals(dbPath, "bodies none"), site("rb")},
		{"", site("rc")},
		{auditGlobals(dbPath), site("ra")},
	}
	gw := startGateway(t, configs[2].globals, configs[2].site)

	counts := &loadCounts{byBackend: map[string][]string{}}
	progress := make(chan struct{}, 1024)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	// On a fatal failure too, no worker may outlive the test (and its Caddy).
	defer stopLoad()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := loadClient()
			defer hc.CloseIdleConnections()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				reqID := fmt.Sprintf("w%d-%d", w, i)
				backend, err := loadCall(hc, gw.URL, reqID, (w+i)%2 == 0, counts)
				if err != nil {
					counts.failures.Add(1)
					t.Errorf("call failed during reloads: %v", err)
					return
				}
				counts.mu.Lock()
				counts.byBackend[backend] = append(counts.byBackend[backend], reqID)
				counts.mu.Unlock()
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}

	// Every reload waits for a few answers first, so calls (streams most of all) straddle each one.
	for i := range reloads {
		for range workers {
			select {
			case <-progress:
			case <-time.After(30 * time.Second):
				t.Fatalf("no progress before reload %d", i)
			}
		}
		cfg := configs[i%len(configs)]
		gw.reload(cfg.globals, cfg.site, true)
	}
	if (reloads-1)%len(configs) != 1 {
		t.Fatal("the last reload must drop llm_audit, so the writer closes")
	}
	stopLoad()
	awaitCallsEnded(t)

	rows := readAuditRows(t, dbPath)
	byID := rowsByRequestID(t, rows)
	audited := 0
	for backend, ids := range counts.byBackend {
		for _, reqID := range ids {
			r, ok := byID[reqID]
			switch {
			case backend == "rc" && ok:
				t.Errorf("%s was served by the config without llm_audit but has a row", reqID)
			case backend == "rc":
			case !ok:
				t.Errorf("%s (backend %s) has no row", reqID, backend)
			case r.Backend != backend || r.Status != http.StatusOK || r.Error != "":
				t.Errorf("%s: row Backend %q Status %d Error %q, want %s 200 and no error", reqID, r.Backend, r.Status, r.Error, backend)
			case (r.Response == nil) != (backend == "rb"):
				t.Errorf("%s: Response stored = %v, want bodies only from the config with bodies full (ra)", reqID, r.Response != nil)
			}
		}
		if backend != "rc" {
			audited += len(ids)
		}
	}
	t.Logf("%d reloads: calls ra=%d rb=%d rc=%d (not audited), resends after a zero-byte connection error=%d, failures=%d; audit rows=%d",
		reloads, len(counts.byBackend["ra"]), len(counts.byBackend["rb"]), len(counts.byBackend["rc"]),
		counts.resends.Load(), counts.failures.Load(), len(rows))
	if len(rows) != audited {
		t.Errorf("%d audit rows for %d audited calls", len(rows), audited)
	}
	if len(counts.byBackend["ra"]) == 0 || len(counts.byBackend["rb"]) == 0 || len(counts.byBackend["rc"]) == 0 {
		t.Errorf("calls by config %v: the load did not reach every config", counts.byBackend)
	}
}

// caddyProcess is a gateway binary running as a child process.
type caddyProcess struct {
	cmd    *exec.Cmd
	ready  chan struct{} // closed when Caddy logs that it serves its config
	exited chan struct{} // closed when the process has exited
	err    error         // the Wait error, set before exited is closed
	mu     sync.Mutex
	log    strings.Builder // the process's stderr
}

// startCaddyProcess runs bin (see caddyBinary) with the Caddyfile at config and waits until it
// serves.
func startCaddyProcess(t *testing.T, bin, config string) *caddyProcess {
	t.Helper()
	p := &caddyProcess{ready: make(chan struct{}), exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "--config", config, "--adapter", "caddyfile")
	// Keep Caddy's data and config directories out of the user's home.
	dir := t.TempDir()
	p.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "HOME="+dir, runAsCaddyEnv+"=1")
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		ready := false
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if !ready && strings.Contains(sc.Text(), "serving initial configuration") {
				ready = true
				close(p.ready)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("caddy output:\n%s", p.output())
		}
	})
	select {
	case <-p.ready:
	case <-p.exited:
		t.Fatalf("caddy exited before serving: %v", p.err)
	case <-time.After(60 * time.Second):
		t.Fatal("caddy did not start serving within 60s")
	}
	return p
}

func (p *caddyProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func TestAuditShutdownWritesPartialRows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGTERM")
	}
	const streams = 4
	dir := t.TempDir()
	bin := caddyBinary(t) // Caddy as a process of its own: the process exit is what is tested

	up := fake(t, "sd-up")
	up.Update(func(s *fakeupstream.Settings) {
		s.Chunks = 5
		s.ChunkDelay = time.Minute // the streams stay open until the gateway cuts them
	})
	dbPath := filepath.Join(dir, "record.db")
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	caddyfile := fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\tpersist_config off\n\tauto_https off\n\tgrace_period 2s\n%s\n}\n:%d {\n\tbind 127.0.0.1\n%s}\n",
		freePort(t), auditGlobals(dbPath), port, gatewaySite("", clientBlock("sd-up", up.URL(), "match keyword gpt")))
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := startCaddyProcess(t, bin, cfgPath)

	// Each stream reports its first chunk, then what it received in all once the gateway ends it.
	started := make(chan struct{}, streams)
	type result struct {
		id   string
		body string
		err  error
	}
	results := make(chan result, streams)
	for i := range streams {
		reqID := fmt.Sprintf("sd-%d", i)
		go func() {
			req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(chatStreamBody("gpt-4o")))
			if err != nil {
				results <- result{reqID, "", err}
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+callerKey)
			req.Header.Set("X-Request-Id", reqID)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				results <- result{reqID, "", err}
				return
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			first, err := br.ReadString('\n')
			if err != nil {
				results <- result{reqID, first, err}
				return
			}
			started <- struct{}{}
			rest, err := io.ReadAll(br)
			results <- result{reqID, first + string(rest), err}
		}()
	}
	for range streams {
		select {
		case <-started:
		case r := <-results:
			t.Fatalf("stream %s ended before its first chunk: %v %q", r.id, r.err, r.body)
		case <-time.After(30 * time.Second):
			t.Fatal("streams did not start")
		}
	}

	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-proc.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("caddy did not exit within 30s of SIGTERM")
	}
	if proc.err != nil {
		t.Errorf("caddy exit: %v", proc.err)
	}
	for range streams {
		select {
		case r := <-results:
			// The gateway tells a caller whose stream it cuts why, in an error chunk.
			if !strings.Contains(r.body, `"error"`) {
				t.Errorf("stream %s ended without an error chunk: %v %q", r.id, r.err, r.body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a stream was still open after caddy exited")
		}
	}

	for _, side := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(dbPath + side); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("side file %s left after exit (stat: %v)", filepath.Base(dbPath+side), err)
		}
	}
	rows := readAuditRows(t, dbPath)
	byID := rowsByRequestID(t, rows)
	for i := range streams {
		reqID := fmt.Sprintf("sd-%d", i)
		r, ok := byID[reqID]
		switch {
		case !ok:
			t.Errorf("stream %s cut by the shutdown has no row", reqID)
		case !r.Stream || r.Status != http.StatusOK || r.Backend != "sd-up" || r.TTFTMs == nil:
			t.Errorf("%s: Stream %v Status %d Backend %q TTFTMs %v, want a committed stream from sd-up", reqID, r.Stream, r.Status, r.Backend, r.TTFTMs)
		case r.Error == "" || r.Response == nil || !strings.Contains(*r.Response, `"object":"chat.completion"`) || !strings.Contains(*r.Response, `"role":"assistant"`):
			t.Errorf("%s: Error %q Response %v, want the cut noted and the response object as aggregated up to the cut", reqID, r.Error, r.Response)
		}
	}
	if len(rows) != streams {
		t.Errorf("%d audit rows for %d streams", len(rows), streams)
	}
	t.Logf("shutdown: %d streams cut, %d rows; first error: %q", streams, len(rows), func() string {
		if len(rows) > 0 {
			return rows[0].Error
		}
		return ""
	}())
}
