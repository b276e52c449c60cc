package llmgateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/openai/openai-go/v3"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
	_ "github.com/llmgw/caddy-llm-gateway/internal/fakeupstream/caddymodule" // fake_openai, as cmd/caddy has it
)

// Addresses the examples are written for, replaced by the test's own.
const (
	exampleUpstream = "127.0.0.1:9001"       // the fake upstream's address in base_urls
	exampleFakeSite = "http://:9001 {"       // the site serving the fake upstream (fake_openai)
	exampleSite     = ":8000 {"              // the site every example serves
	exampleAdmin    = "admin localhost:2019" // admin endpoint: off in tests
)

// TestExamples runs every Caddyfile under examples/ with the files it reads laid out as it
// expects relative to the working directory, and sends it one request. An example that serves
// the fake upstream itself (fake_openai) gets it on a fresh port; the others get one of the
// test's.
func TestExamples(t *testing.T) {
	for _, tc := range []struct {
		file      string
		files     map[string]string // file the example reads (relative to the working directory) → its source under examples/
		model     string
		accessLog string // where the example writes its access log, if to a file
	}{
		{file: "Caddyfile", model: "gpt-4o", accessLog: "logs/access.log"},
		{file: "origin.Caddyfile", files: map[string]string{"examples/config.yaml": "config.yaml"}, model: "gpt-4o", accessLog: "logs/access.log"},
		{file: "docker/Caddyfile", files: map[string]string{"config/config.yaml": "config.yaml"}, model: "gpt-backup"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			upstream := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			if !exampleServesFake(t, tc.file) {
				upstream = fake(t, "example").Addr()
			}
			dir := t.TempDir()
			for dst, src := range tc.files {
				writeExample(t, filepath.Join(dir, dst), src, upstream)
			}
			// Relative paths in the examples (config, logs, audit database) land in dir.
			t.Chdir(dir)
			gw := startExample(t, filepath.Join("examples", tc.file), upstream, dir)

			status, h, body := gw.chat(tc.model)
			before := fakeStats(t, upstream)
			if status != http.StatusOK || !strings.Contains(body, "hello from "+before.Name) {
				t.Fatalf("chat %s: %d %s", tc.model, status, body)
			}
			if h.Get("X-LLM-Gateway-Backend") == "" {
				t.Errorf("no X-LLM-Gateway-Backend header")
			}
			if before.Requests != 1 {
				t.Errorf("fake upstream saw %d requests, want 1", before.Requests)
			}
			if tc.accessLog == "" {
				return
			}
			var e accessLogEntry
			eventually(t, "access log line", func() (bool, string) {
				var ok bool
				e, ok = findAccessLog(t, tc.accessLog, "/v1/chat/completions")
				return ok, "no line for the chat call in " + tc.accessLog
			})
			if e.LLM == nil || e.LLM.Model != tc.model || e.LLM.Backend != h.Get("X-LLM-Gateway-Backend") || e.LLM.TotalTokens == 0 {
				t.Errorf("access log llm fields = %+v, want model %s, the answering backend and tokens", e.LLM, tc.model)
			}
		})
	}
}

// TestExampleAnswersEveryRequest checks that the example answers what the gateway does not
// serve with an OpenAI-shaped 404 rather than Caddy's empty 200, and answers the SDK's
// retrieve-model call from the models list.
func TestExampleAnswersEveryRequest(t *testing.T) {
	upstream := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	t.Chdir(dir)
	gw := startExample(t, filepath.Join("examples", "Caddyfile"), upstream, dir)

	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v1/chat/completions", ""},
		{"GET", "/metrics", ""},
		{"GET", "/", ""},
		{"GET", "/v1/models/", ""},
		{"POST", "/v1/files", `{"purpose":"batch"}`},
		{"DELETE", "/v1/models/gpt-4o", ""},
	} {
		req, _ := http.NewRequest(tc.method, gw.URL+tc.path, strings.NewReader(tc.body))
		status, h, body := gw.do(req)
		var e struct {
			Error struct{ Type, Code string }
		}
		if status != http.StatusNotFound || h.Get("Content-Type") != "application/json" ||
			json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != "unknown_url" {
			t.Errorf("%s %s = %d %q %s, want an OpenAI-shaped JSON 404", tc.method, tc.path, status, h.Get("Content-Type"), body)
		}
	}

	client := gw.client()
	m, err := client.Models.Get(context.Background(), "gpt-4o")
	if err != nil || m.ID != "gpt-4o" {
		t.Errorf("retrieve gpt-4o: %v %+v", err, m)
	}
	_, err = client.Models.Get(context.Background(), "no-such-model")
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "model_not_found" {
		t.Errorf("retrieve no-such-model: %v, want 404 model_not_found", err)
	}
	// Each of the example's two clients lists the fake's models once; nothing else is asked.
	if st := fakeStats(t, upstream); st.Requests != 2 || st.Paths["/v1/models"] != 2 {
		t.Errorf("fake upstream saw %+v, want only a models list per client", st)
	}
}

// exampleServesFake reports whether the example at examples/file serves the fake upstream
// itself (the development binary's fake_openai).
func exampleServesFake(t *testing.T, file string) bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(pkgDir, "examples", file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(data), "\tfake_openai ")
}

// fakeStats reads the counters of the fake upstream at addr over its control endpoint, which
// works for the test's fakes and for one served by Caddy alike.
func fakeStats(t *testing.T, addr string) fakeupstream.Stats {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/_fake/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st fakeupstream.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /_fake/stats: %d %v", resp.StatusCode, err)
	}
	return st
}

// TestExamplesAreAllTested fails when an example config is added without a TestExamples case.
func TestExamplesAreAllTested(t *testing.T) {
	tested := map[string]bool{"Caddyfile": true, "origin.Caddyfile": true, "docker/Caddyfile": true, "config.yaml": true,
		"keys.Caddyfile": true, "keys.yaml": true} // TestKeysExample
	err := filepath.WalkDir("examples", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel("examples", path)
		if !tested[filepath.ToSlash(rel)] {
			t.Errorf("examples/%s has no TestExamples case", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// writeExample copies examples/src to dst with the fake upstream's address substituted.
func writeExample(t *testing.T, dst, src, upstream string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("examples", src))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	if !strings.Contains(text, exampleUpstream) {
		t.Fatalf("examples/%s does not use the fake upstream at %s", src, exampleUpstream)
	}
	text = strings.ReplaceAll(text, exampleUpstream, upstream)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startExample runs the Caddyfile at path (relative to the repository) on a fresh port with
// the admin endpoint off, the fake upstream's address substituted (also where the example
// serves it) and file logs in dir. It stops Caddy when the test ends.
func startExample(t *testing.T, path, upstream, dir string) *gateway {
	t.Helper()
	// The test has changed directory; read the example from the package directory.
	data, err := os.ReadFile(filepath.Join(pkgDir, path))
	if err != nil {
		t.Fatal(err)
	}
	cf := string(data)
	for _, want := range []string{exampleSite, exampleAdmin} {
		if strings.Count(cf, want) != 1 {
			t.Fatalf("%s: want exactly one %q to substitute", path, want)
		}
	}
	g := newGateway(t)
	cf = strings.ReplaceAll(cf, exampleUpstream, upstream)
	if strings.Count(cf, exampleFakeSite) == 1 {
		_, port, _ := strings.Cut(upstream, ":")
		cf = strings.Replace(cf, exampleFakeSite, "http://:"+port+" {", 1)
	}
	cf = strings.Replace(cf, exampleSite, fmt.Sprintf("http://127.0.0.1:%d {", g.port), 1)
	cf = strings.Replace(cf, exampleAdmin, "admin off\n\tpersist_config off", 1)
	// Caddy v2.11.9 keeps a file log writer open after its config stops, keyed by the path as
	// written, so a relative path would keep writing into the previous test's directory.
	cf = strings.ReplaceAll(cf, "output file logs/", "output file "+filepath.Join(dir, "logs")+"/")

	loadExample(g, path, cf, dir)
	return g
}

// loadExample loads the example's Caddyfile cf as a user's `caddy run` would see it, and fails
// the test when Caddy warns: the example, as written, must adapt without a warning, and the
// config must start without one (a demo that warns on every start teaches users to ignore
// warnings). Caddy's log goes to dir at level WARN instead of the terminal.
func loadExample(g *gateway, path, cf, dir string) {
	t := g.t
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	data, err := os.ReadFile(filepath.Join(pkgDir, path))
	if err != nil {
		t.Fatal(err)
	}
	if _, warnings, err := adapter.Adapt(data, map[string]any{"filename": path}); err != nil || len(warnings) > 0 {
		t.Errorf("adapting %s as written: %v, warnings %v", path, err, warnings)
	}
	cfgJSON, _, err := adapter.Adapt([]byte(cf), map[string]any{"filename": path})
	if err != nil {
		t.Fatalf("adapting %s: %v\n%s", path, err, cf)
	}
	var cfg map[string]any
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		t.Fatal(err)
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
	def, _ := logs["default"].(map[string]any) // an example's log block leaves an "exclude" there
	if def == nil {
		def = map[string]any{}
		logs["default"] = def
	}
	warnLog := filepath.Join(dir, "caddy-warnings.log")
	def["writer"] = map[string]any{"output": "file", "filename": warnLog}
	def["level"] = "WARN"
	if cfgJSON, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfgJSON, true); err != nil {
		t.Fatalf("loading %s: %v\n%s", path, err, cfgJSON)
	}
	waitListenersClosed(t, g.port, 1)
	http.DefaultClient.CloseIdleConnections()
	// Caddy logs its start-up warnings (HTTP/2 and HTTP/3 skipped for want of TLS, say) before
	// Load returns.
	warned, _ := os.ReadFile(warnLog)
	for line := range strings.Lines(string(warned)) {
		if !strings.Contains(line, `"msg":"admin endpoint disabled"`) { // the test's "admin off"
			t.Errorf("%s: Caddy warns on start: %s", path, line)
		}
	}
}

// pkgDir is the package directory, where `go test` starts.
var pkgDir = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return wd
}()
