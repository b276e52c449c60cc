package llmgateway_test

import (
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Addresses the examples are written for, replaced by the test's own.
const (
	exampleUpstream = "127.0.0.1:9001"       // the README's fake upstream
	exampleSite     = ":8000 {"              // the site every example serves
	exampleAdmin    = "admin localhost:2019" // admin endpoint: off in tests
)

// TestExamples runs every Caddyfile under examples/ against a fake upstream, with the files it
// reads laid out as it expects relative to the working directory, and sends it one request.
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
			up := fake(t, "example")
			dir := t.TempDir()
			for dst, src := range tc.files {
				writeExample(t, filepath.Join(dir, dst), src, up.Addr())
			}
			// Relative paths in the examples (config, logs, audit database) land in dir.
			t.Chdir(dir)
			gw := startExample(t, filepath.Join("examples", tc.file), up.Addr(), dir)

			status, h, body := gw.chat(tc.model)
			if status != http.StatusOK || !strings.Contains(body, "hello from example") {
				t.Fatalf("chat %s: %d %s", tc.model, status, body)
			}
			if h.Get("X-LLM-Gateway-Backend") == "" {
				t.Errorf("no X-LLM-Gateway-Backend header")
			}
			if up.Requests() != 1 {
				t.Errorf("fake upstream saw %d requests, want 1", up.Requests())
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
// the admin endpoint off, the fake upstream's address substituted and file logs in dir. It
// stops Caddy when the test ends.
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
	cf = strings.Replace(cf, exampleSite, fmt.Sprintf("http://127.0.0.1:%d {", g.port), 1)
	cf = strings.Replace(cf, exampleAdmin, "admin off\n\tpersist_config off", 1)
	// Caddy v2.11.9 keeps a file log writer open after its config stops, keyed by the path as
	// written, so a relative path would keep writing into the previous test's directory.
	cf = strings.ReplaceAll(cf, "output file logs/", "output file "+filepath.Join(dir, "logs")+"/")

	g.loadCaddyfile(path, cf, true)
	return g
}

// pkgDir is the package directory, where `go test` starts.
var pkgDir = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return wd
}()
