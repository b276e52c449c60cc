package llmgateway_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// connUpstream is a fake upstream on a server of its own that tells which connection each
// request came on and when a connection closes, so a test sees the gateway's connection pool
// from the upstream's side. A chat for holdModel streams its first chunk and then waits until
// the test releases it, keeping its connection busy.
type connUpstream struct {
	fake *fakeupstream.Server
	srv  *http.Server
	URL  string

	held    chan struct{} // gets a value when a held stream sent its first chunk
	release chan struct{} // closed to let held streams finish

	mu     sync.Mutex
	last   string                   // remote address of the latest request
	closed map[string]chan struct{} // per remote address, closed when that connection closed
}

const holdModel = "gpt-hold"

func newConnUpstream(t *testing.T, name string) *connUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &connUpstream{
		fake:    fakeupstream.New(name),
		URL:     "http://" + ln.Addr().String() + "/v1",
		held:    make(chan struct{}, 1),
		release: make(chan struct{}),
		closed:  map[string]chan struct{}{},
	}
	u.srv = &http.Server{Handler: u, ConnState: u.connState, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = u.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		u.releaseHeld()
		_ = u.srv.Close()
		<-served
		_ = u.fake.Close()
	})
	return u
}

func (u *connUpstream) connState(c net.Conn, st http.ConnState) {
	addr := c.RemoteAddr().String()
	u.mu.Lock()
	defer u.mu.Unlock()
	switch st {
	case http.StateNew:
		u.closed[addr] = make(chan struct{})
	case http.StateClosed, http.StateHijacked:
		if ch := u.closed[addr]; ch != nil {
			close(ch)
			u.closed[addr] = nil
		}
	}
}

func (u *connUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.last = r.RemoteAddr
	u.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if bytes.Contains(body, []byte(`"model":"`+holdModel+`"`)) {
		w = &holdWriter{ResponseWriter: w, u: u}
	}
	u.fake.ServeHTTP(w, r)
}

// holdWriter holds a stream after its first chunk: the fake flushes once for the headers,
// then once per chunk.
type holdWriter struct {
	http.ResponseWriter
	u       *connUpstream
	flushes int
}

func (hw *holdWriter) Flush() {
	hw.ResponseWriter.(http.Flusher).Flush()
	if hw.flushes++; hw.flushes == 2 {
		hw.u.held <- struct{}{}
		<-hw.u.release
	}
}

// releaseHeld lets held streams finish; it may be called more than once.
func (u *connUpstream) releaseHeld() {
	u.mu.Lock()
	defer u.mu.Unlock()
	select {
	case <-u.release:
	default:
		close(u.release)
	}
}

// lastConn returns the remote address of the connection the latest request came on.
func (u *connUpstream) lastConn() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

// isOpen reports whether the connection from addr is open.
func (u *connUpstream) isOpen(addr string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.closed[addr] != nil
}

// waitClosed waits until the connection from addr is closed, failing the test after limit.
func (u *connUpstream) waitClosed(t *testing.T, addr string, limit time.Duration, what string) {
	t.Helper()
	u.mu.Lock()
	ch, known := u.closed[addr]
	u.mu.Unlock()
	if !known {
		t.Fatalf("%s: no connection from %s", what, addr)
	}
	if ch == nil {
		return
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("%s: connection from %s still open %v later", what, addr, limit)
	}
}

// waitModel polls until a chat for model is answered by backend, or fails after limit.
func waitModel(t *testing.T, gw *gateway, model, backend string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		status, h, body := gw.chat(model)
		if status == 200 && h.Get("X-LLM-Gateway-Backend") == backend {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v %s still answered by %q (%d %s), want %q", limit, model, h.Get("X-LLM-Gateway-Backend"), status, body, backend)
		}
		time.Sleep(25 * time.Millisecond) // polling: the watcher's apply is seen only from outside
	}
}

// heldStream is a streaming chat for holdModel read by the test.
type heldStream struct {
	resp *http.Response
	sc   *bufio.Scanner
}

// startHeld starts a held stream and returns once its first chunk arrived.
func startHeld(t *testing.T, gw *gateway, u *connUpstream) *heldStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gw.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"`+holdModel+`","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("held stream: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		t.Fatalf("held stream: status %d", resp.StatusCode)
	}
	select {
	case <-u.held:
	case <-ctx.Done():
		t.Fatal("held stream: the upstream never sent its first chunk")
	}
	s := &heldStream{resp: resp, sc: bufio.NewScanner(resp.Body)}
	for s.sc.Scan() {
		if strings.HasPrefix(s.sc.Text(), "data: {") {
			return s
		}
	}
	t.Fatalf("held stream ended before its first chunk: %v", s.sc.Err())
	return nil
}

// finish reads the rest of the stream and checks it is whole.
func (s *heldStream) finish() error {
	var chunks int
	done := false
	for s.sc.Scan() {
		data, ok := strings.CutPrefix(s.sc.Text(), "data: ")
		switch {
		case !ok:
		case data == "[DONE]":
			done = true
		default:
			chunks++
		}
	}
	if err := s.sc.Err(); err != nil {
		return fmt.Errorf("after %d more chunks: %w", chunks, err)
	}
	if !done || chunks == 0 {
		return fmt.Errorf("truncated: %d more chunks, [DONE] %v", chunks, done)
	}
	return nil
}

// TestYAMLEditClosesReplacedTransport checks that a YAML edit replacing a client cleans its
// transport up at once: the idle keep-alive connection to the upstream is closed as soon as the
// edit is applied, not when the Caddy config unloads, while a stream in flight on the old
// client keeps its connection and finishes whole.
func TestYAMLEditClosesReplacedTransport(t *testing.T) {
	up := newConnUpstream(t, "up")
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	writeFileAtomic(t, cfgPath, originYAML("alpha", up.URL))
	gw := startGateway(t, "", gatewaySite("config "+cfgPath))

	// A stream keeps one connection busy, so the next call dials a second one, which then
	// stays idle in the old transport's pool.
	stream := startHeld(t, gw, up)
	busy := up.lastConn()
	waitModel(t, gw, "gpt-4", "alpha", 0)
	idle := up.lastConn()
	if idle == busy {
		t.Fatalf("the call after the held stream came on the stream's connection %s", busy)
	}

	// Renaming the client replaces it, transport included.
	writeFileAtomic(t, cfgPath, originYAML("alpha2", up.URL))
	waitModel(t, gw, "gpt-4", "alpha2", applyDeadline)
	if up.lastConn() == idle {
		t.Fatalf("the replaced client's connection %s served the new client", idle)
	}
	up.waitClosed(t, idle, applyDeadline, "idle connection of the replaced client")
	if !up.isOpen(busy) {
		t.Fatalf("the connection of the stream in flight was closed by the edit")
	}

	up.releaseHeld()
	if err := stream.finish(); err != nil {
		t.Fatalf("stream in flight across the edit: %v", err)
	}
	// Back in the released transport's pool, the stream's connection is closed too.
	up.waitClosed(t, busy, applyDeadline, "connection of the finished stream")
}

// TestYAMLEditKeepsUnchangedTransport checks that a client a YAML edit leaves unchanged keeps
// its transport: its next call reuses the keep-alive connection it had before the edit, after
// the generation that loaded the transport was released.
func TestYAMLEditKeepsUnchangedTransport(t *testing.T) {
	up, other := newConnUpstream(t, "up"), fake(t, "other")
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	twoClients := func(second string) string {
		return originYAML("alpha", up.URL) + fmt.Sprintf(`  - name: %s
    base_url: %s
    model_match:
      type: exact
      value: ["claude"]
`, second, other.URL())
	}
	writeFileAtomic(t, cfgPath, twoClients("beta"))
	gw := startGateway(t, "", gatewaySite("config "+cfgPath))
	waitModel(t, gw, "gpt-4", "alpha", 0)
	conn := up.lastConn()

	// Two edits, so the generation that loaded alpha's transport is released while alpha
	// stays, and then the one that inherited it.
	writeFileAtomic(t, cfgPath, twoClients("beta2"))
	waitModel(t, gw, "claude", "beta2", applyDeadline)
	writeFileAtomic(t, cfgPath, twoClients("beta3"))
	waitModel(t, gw, "claude", "beta3", applyDeadline)

	waitModel(t, gw, "gpt-4", "alpha", 0)
	if got := up.lastConn(); got != conn {
		t.Errorf("after the edits alpha's call came on connection %s, want the kept %s", got, conn)
	}
	if !up.isOpen(conn) {
		t.Errorf("alpha's connection %s was closed", conn)
	}
}

// TestYAMLWatchRacesReload has YAML edits applied by the watcher while Caddy reloads, so a
// watcher builds a generation while Caddy provisions the next config and unloads the one the
// watcher belongs to. Run under -race: nothing the watcher touches may be shared with Caddy
// without synchronisation. After the reloads the last file written is the one serving.
//
// Each edit is written right after a reload, so the new handler's watcher applies it about two
// watch intervals later; the next reload is timed around that moment, at offsets sweeping
// 300 ms either side of it, so some applies land while Caddy provisions and unloads. Nothing is
// awaited between an edit and the reload on purpose: observing the apply (a request, a log
// line) would order it before the reload and hide a race from the detector.
func TestYAMLWatchRacesReload(t *testing.T) {
	a, b := fake(t, "a"), fake(t, "b")
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	yamls := [2]string{originYAML("alpha", a.URL()), originYAML("beta", b.URL())}
	writeFileAtomic(t, cfgPath, yamls[0])
	site := gatewaySite("config " + cfgPath)
	gw := startGateway(t, "", site)

	const rounds = 8
	for i := range rounds {
		gw.reload("", site, true)
		loaded := time.Now()
		writeFileAtomic(t, cfgPath, yamls[(i+1)%2])
		offset := 200*time.Millisecond + time.Duration(i)*400*time.Millisecond/rounds
		time.Sleep(time.Until(loaded.Add(offset))) // pacing: waiting for time itself
	}
	gw.reload("", site, true)
	waitModel(t, gw, "gpt-4", [2]string{"alpha", "beta"}[rounds%2], applyDeadline)
}

// writeYAML is writeFileAtomic for goroutines other than the test's.
func writeYAML(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
