package llmgateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	_ "github.com/llmgw/caddy-llm-gateway"
	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// caddyMu serialises tests that run the process-wide Caddy instance.
var caddyMu sync.Mutex

// givenPorts are the ports freePort has returned in this test binary.
var givenPorts struct {
	sync.Mutex
	m map[int]bool
}

// freePort returns a loopback port nobody listens on right now, and never the same port twice
// in one test binary: a test that takes two ports before it listens on either (an example that
// serves the fake upstream itself, say) would otherwise get the same one back now and then, and
// two of its servers would share it.
func freePort(t testing.TB) int {
	t.Helper()
	givenPorts.Lock()
	defer givenPorts.Unlock()
	if givenPorts.m == nil {
		givenPorts.m = make(map[int]bool)
	}
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !givenPorts.m[port] {
			givenPorts.m[port] = true
			return port
		}
	}
	t.Fatal("no loopback port not given before in 100 tries")
	return 0
}

// gateway is a running Caddy with llm_gateway on its own port.
type gateway struct {
	t    testing.TB
	port int
	URL  string // http://127.0.0.1:PORT
}

// newGateway reserves the process-wide Caddy and a fresh port for the test; it stops Caddy
// when the test ends. Load a config with reload or loadCaddyfile.
func newGateway(t testing.TB) *gateway {
	t.Helper()
	caddyMu.Lock()
	g := &gateway{t: t, port: freePort(t)}
	g.URL = fmt.Sprintf("http://127.0.0.1:%d", g.port)
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
		caddyMu.Unlock()
	})
	return g
}

// startGateway runs Caddy in this process with site as the body of a site block on a fresh
// port (globals go into the global options block).
func startGateway(t testing.TB, globals, site string) *gateway {
	t.Helper()
	g := newGateway(t)
	g.reload(globals, site, true)
	return g
}

// reload applies a config to the running Caddy as `caddy reload` does; without force, Caddy
// skips a config identical to the running one.
func (g *gateway) reload(globals, site string, force bool) {
	g.t.Helper()
	cf := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tauto_https off\n\tgrace_period 2s\n%s\n}\n:%d {\n\tbind 127.0.0.1\n%s\n}\n", globals, g.port, site)
	g.loadCaddyfile("Caddyfile", cf, force)
}

// loadCaddyfile adapts and loads a whole Caddyfile.
func (g *gateway) loadCaddyfile(filename, cf string, force bool) {
	g.t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfgJSON, warnings, err := adapter.Adapt([]byte(cf), map[string]any{"filename": filename})
	if err != nil {
		g.t.Fatalf("adapting %s: %v\n%s", filename, err, cf)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "not formatted") {
			g.t.Logf("adapt warning: %s", w.String())
		}
	}
	if !testing.Verbose() {
		cfgJSON = quietLogs(g.t, cfgJSON)
	}
	if err := caddy.Load(cfgJSON, force); err != nil {
		g.t.Fatalf("loading %s: %v\n%s", filename, err, cfgJSON)
	}
	// caddy.Load returns once the old server has been told to stop, not once it has stopped
	// accepting: until its SO_REUSEPORT socket closes, the kernel still hands it some of the new
	// connections, which it serves with the old config or resets (DESIGN-NOTES, Reload and
	// lifecycle). Wait for that socket to go, then drop our idle keep-alive connections, which
	// the old server closes, so the next request dials the new one.
	waitListenersClosed(g.t, g.port, 1)
	http.DefaultClient.CloseIdleConnections()
}

// quietLogs sends Caddy's default log to nowhere unless the config sets one itself, so a test
// run prints only its own output (go test -v keeps Caddy's logs).
func quietLogs(t testing.TB, cfgJSON []byte) []byte {
	t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		t.Fatalf("decoding adapted config: %v", err)
	}
	logging, _ := cfg["logging"].(map[string]any)
	if logging == nil {
		logging = map[string]any{}
		cfg["logging"] = logging
	}
	logs, _ := logging["logs"].(map[string]any)
	if logs == nil {
		logs = map[string]any{}
		logging["logs"] = logs
	}
	if _, ok := logs["default"]; ok {
		return cfgJSON
	}
	logs["default"] = map[string]any{"writer": map[string]any{"output": "discard"}}
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("encoding config: %v", err)
	}
	return out
}

// waitListenersClosed waits until at most max sockets listen on the loopback TCP port, as
// /proc/net/tcp shows them. Where /proc is not there (not Linux) it returns at once.
func waitListenersClosed(t testing.TB, port, max int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		lines, ok := listeners(port)
		if !ok || len(lines) <= max {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sockets still listen on port %d 15 s after a config load:\n%s", len(lines), port, strings.Join(lines, ""))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// listeners returns the /proc/net/tcp and tcp6 lines (local address, uid, inode, …) of the TCP
// sockets in LISTEN state on port, over IPv4 and IPv6.
func listeners(port int) (lines []string, ok bool) {
	want := fmt.Sprintf(":%04X", port)
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			return nil, false
		}
		for line := range strings.Lines(string(data)) {
			f := strings.Fields(line)
			// f[1] is local_address (hex ip:port), f[3] the state; 0A is LISTEN.
			if len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], want) {
				lines = append(lines, table+": "+line)
			}
		}
	}
	return lines, true
}

// client returns an official OpenAI client for the gateway, without retries so every failure
// is the gateway's.
func (g *gateway) client(opts ...option.RequestOption) openai.Client {
	base := []option.RequestOption{
		option.WithBaseURL(g.URL + "/v1/"),
		option.WithAPIKey("sk-caller-key-123456"),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(30 * time.Second),
		option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			defer watchCall(g.t, req)()
			return next(req)
		}),
	}
	return openai.NewClient(append(base, opts...)...)
}

// slowCall is how long an HTTP call of the harness may take before watchCall reports it. Every
// such call times out after 30 s; none takes near 20 s in a passing test.
const slowCall = 20 * time.Second

// watchCall reports a call of the harness still unanswered after slowCall, with the stacks of
// every goroutine of the test binary (the gateway's included: Caddy runs in it), so that a call
// that hangs until its timeout leaves what it waited on, not only "context deadline exceeded".
// The report goes to stderr, which go test shows when the package fails: the test may have
// ended when it is written. Call the returned func when the call returns (or its answer was
// read: a stream's body is part of the call).
func watchCall(t testing.TB, req *http.Request) (done func()) {
	name, method, url := t.Name(), req.Method, req.URL.String()
	timer := time.AfterFunc(slowCall, func() {
		stacks := make([]byte, 8<<20)
		stacks = stacks[:runtime.Stack(stacks, true)]
		fmt.Fprintf(os.Stderr, "\n=== %s: %s %s unanswered after %v; every goroutine:\n%s\n", name, method, url, slowCall, stacks)
	})
	return func() { timer.Stop() }
}

// post sends a raw request and returns the status, headers and body.
func (g *gateway) post(path, contentType, body string, header ...string) (int, http.Header, string) {
	g.t.Helper()
	req, err := http.NewRequest(http.MethodPost, g.URL+path, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return g.do(req)
}

func (g *gateway) get(path string) (int, http.Header, string) {
	g.t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.URL+path, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	return g.do(req)
}

func (g *gateway) do(req *http.Request) (int, http.Header, string) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	defer watchCall(g.t, req)()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		g.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("reading body: %v", err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// chat posts a minimal chat completion for model.
func (g *gateway) chat(model string) (int, http.Header, string) {
	g.t.Helper()
	return g.post("/v1/chat/completions", "application/json",
		`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
}

// fake starts a fake upstream named name for the test's duration.
func fake(t testing.TB, name string) *fakeupstream.Server {
	t.Helper()
	s, err := fakeupstream.Listen(name, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// refusedURL is a base URL whose port accepts no connection.
func refusedURL(t testing.TB) string {
	return fmt.Sprintf("http://127.0.0.1:%d/v1", freePort(t))
}
