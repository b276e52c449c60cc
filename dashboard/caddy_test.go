package dashboard

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/goccy/go-json"
	"golang.org/x/crypto/bcrypt"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

// caddyMu serialises the tests that run the process-wide Caddy.
var caddyMu sync.Mutex

const (
	testUser     = "admin"
	testPassword = "demo-password"
)

// site is a running Caddy serving the dashboard under /usage/ behind basic_auth, reading
// the llm_audit app's database.
type site struct {
	URL  string // http://127.0.0.1:PORT
	path string // the audit database
}

// startSite runs Caddy in this process with the dashboard mounted as the example config
// does; dashOpts is the body of the llm_dashboard block, if any.
func startSite(t testing.TB, dbPath, dashOpts string) *site {
	t.Helper()
	caddyMu.Lock()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		caddyMu.Unlock()
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		caddyMu.Unlock()
		t.Fatal(err)
	}
	dash := "llm_dashboard"
	if dashOpts != "" {
		dash += " {\n" + dashOpts + "\n}"
	}
	cf := fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
}
:%d {
	bind 127.0.0.1
	redir /usage /usage/
	handle_path /usage/* {
		basic_auth {
			%s %s
		}
		%s
	}
	handle_path /stats* {
		basic_auth {
			%s %s
		}
		%s
	}
	respond "site root" 200
}
`, port, testUser, hash, dash, testUser, hash, dash)
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		caddyMu.Unlock()
		t.Fatalf("adapting: %v\n%s", err, cf)
	}
	// The llm_audit app, as the gateway's global option configures it (that option's parser
	// lives in the root package, which imports this one).
	var cfg map[string]any
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		caddyMu.Unlock()
		t.Fatal(err)
	}
	cfg["apps"].(map[string]any)["llm_audit"] = map[string]any{"path": dbPath}
	if !testingVerbose() {
		cfg["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{"writer": map[string]any{"output": "discard"}}}}
	}
	cfgJSON, _ = json.Marshal(cfg)
	if err := caddy.Load(cfgJSON, true); err != nil {
		caddyMu.Unlock()
		t.Fatalf("loading: %v\n%s", err, cfgJSON)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
		http.DefaultClient.CloseIdleConnections()
		caddyMu.Unlock()
	})
	return &site{URL: fmt.Sprintf("http://127.0.0.1:%d", port), path: dbPath}
}

func testingVerbose() bool { return testing.Verbose() }

// fetch GETs a path of the site, with the dashboard's credentials if auth is set.
func (s *site) fetch(t testing.TB, path string, auth bool) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth {
		req.SetBasicAuth(testUser, testPassword)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: time.Minute}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(body)
}

// TestServedUnderMountThroughCaddy runs the dashboard in a real Caddy under handle_path with
// basic_auth: the page, its assets and its API answer under the mount with mount-relative
// URLs only, nothing without credentials, and figures equal to SQL over the database, rows
// written while Caddy's own writer holds the file included.
func TestServedUnderMountThroughCaddy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "record.db")
	now := time.Now()
	rng := rand.New(rand.NewPCG(6, 14))
	writeRecords(t, path, genRecords(rng, now, 3*24*time.Hour, 1500))
	s := startSite(t, path, "")

	for _, p := range []string{"/usage/", "/usage/api/summary", "/usage/static/app.js"} {
		if res, _ := s.fetch(t, p, false); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without credentials: %d, want 401", p, res.StatusCode)
		}
	}
	res, _ := s.fetch(t, "/usage", true)
	if res.StatusCode/100 != 3 || res.Header.Get("Location") != "/usage/" {
		t.Errorf("/usage: %d to %q, want a redirect to /usage/", res.StatusCode, res.Header.Get("Location"))
	}
	// Mounted without a slash, the handler sends the bare mount point to its directory.
	res, _ = s.fetch(t, "/stats?x=1", true)
	if res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Location") != "/stats/?x=1" {
		t.Errorf("/stats: %d to %q, want 308 to /stats/?x=1", res.StatusCode, res.Header.Get("Location"))
	}
	if res, _ := s.fetch(t, "/stats/api/summary", true); res.StatusCode != http.StatusOK {
		t.Errorf("/stats/api/summary: %d", res.StatusCode)
	}
	res, page := s.fetch(t, "/usage/", true)
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/usage/: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if res.Header.Get("Content-Security-Policy") == "" {
		t.Error("page without Content-Security-Policy")
	}
	// Only mount-relative URLs: no absolute path, no other host.
	for _, attr := range []string{`src="/`, `href="/`, `src="http`, `href="http`, `//`} {
		if strings.Contains(page, attr) {
			t.Errorf("page has a non-relative URL (%s)", attr)
		}
	}
	for _, asset := range []string{"static/app.js", "static/app.css", "static/vendor/uPlot.iife.min.js", "static/vendor/uPlot.min.css", "static/vendor/uPlot.LICENSE"} {
		if !strings.Contains(page, asset) && !strings.HasSuffix(asset, "LICENSE") {
			t.Errorf("page does not load %s", asset)
		}
		res, body := s.fetch(t, "/usage/"+asset, true)
		if res.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("%s: %d, %d bytes", asset, res.StatusCode, len(body))
		}
	}
	js := assets["app.js"].body
	if strings.Contains(string(js), `fetch("/`) || strings.Contains(string(js), `fetchJSON("/`) || strings.Contains(string(js), "innerHTML") {
		t.Error("app.js fetches an absolute path or writes HTML")
	}

	// Rows written now, through the writer Caddy's llm_audit app holds open.
	app := openApp(t, path)
	defer app.Cleanup()
	for _, r := range genRecords(rng, now, time.Minute, 25) {
		app.Writer().Enqueue(r)
	}
	syncApp(t, app)

	files, _ := audit.DatabaseFiles(path)
	for _, f := range []filter{{from: now.Add(-24 * time.Hour), to: now.Add(time.Minute)}, {from: now.Add(-48 * time.Hour), to: now.Add(time.Minute), key: ptr("team-b"), class: 5}} {
		res, body := s.fetch(t, "/usage/api/summary?"+f.query(), true)
		var got summaryAnswer
		if res.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil {
			t.Fatalf("summary: %d %s", res.StatusCode, body)
		}
		if e := oracle(t, files, f); got.Requests != e.requests || got.PromptTokens != e.prompt || got.Errors != e.errors {
			t.Errorf("%s: requests %d prompt %d errors %d, SQL %d %d %d", f.query(), got.Requests, got.PromptTokens, got.Errors, e.requests, e.prompt, e.errors)
		}
	}
	res, body := s.fetch(t, "/usage/api/summary?from=nonsense", true)
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"invalid_request_error"`) || res.Header.Get("Content-Type") != "application/json" {
		t.Errorf("bad filter: %d %s %s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	if res, _ := s.fetch(t, "/", false); res.StatusCode != http.StatusOK {
		t.Errorf("site root: %d: the mount must not swallow the rest of the site", res.StatusCode)
	}
}

// TestCaddyfileSyntax adapts the directive's forms and rejects bad ones.
func TestCaddyfileSyntax(t *testing.T) {
	for _, tc := range []struct {
		name, block, want, wantErr string
	}{
		{name: "bare", block: "llm_dashboard", want: `"handler":"llm_dashboard"`},
		{name: "databases", block: "llm_dashboard {\n databases /a/*.db /b/record.db\n databases /c/x.db\n query_timeout 5s\n}",
			want: `"databases":["/a/*.db","/b/record.db","/c/x.db"],"handler":"llm_dashboard","query_timeout":5000000000`},
		{name: "argument", block: "llm_dashboard extra", wantErr: "wrong argument count"},
		{name: "matcher", block: "llm_dashboard /stats*", want: `"path":["/stats*"]`},
		{name: "databases without pattern", block: "llm_dashboard {\n databases\n}", wantErr: "wrong argument count"},
		{name: "bad timeout", block: "llm_dashboard {\n query_timeout soon\n}", wantErr: "query_timeout"},
		{name: "zero timeout", block: "llm_dashboard {\n query_timeout 0s\n}", wantErr: "must be positive"},
		{name: "timeout extra", block: "llm_dashboard {\n query_timeout 1s 2s\n}", wantErr: "wrong argument count"},
		{name: "unknown", block: "llm_dashboard {\n path /x\n}", wantErr: `unknown llm_dashboard option "path"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cf := ":8080 {\n\thandle_path /usage/* {\n\t\t" + tc.block + "\n\t}\n}\n"
			out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("adapted to %s\nwant it to contain %s", out, tc.want)
			}
		})
	}
	// Ordered after basic_auth without a route block.
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(":8080 {\n\tllm_dashboard\n\tbasic_auth {\n\t\ta $2a$04$abcdefghijklmnopqrstuu5vC9J5aOw.JQzIRZKf9hN4x5iTmL5bq\n\t}\n}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a, d := strings.Index(string(out), "authentication"), strings.Index(string(out), "llm_dashboard"); a < 0 || d < a {
		t.Errorf("llm_dashboard not ordered after basic_auth: %s", out)
	}
}

// TestProvisionWithoutDatabase: neither llm_audit nor databases is a config error.
func TestProvisionWithoutDatabase(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	err := new(Handler).Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), "llm_audit") {
		t.Errorf("err = %v, want one naming llm_audit", err)
	}
	h := &Handler{Databases: []string{"[bad"}}
	if err := h.Provision(ctx); err == nil || !strings.Contains(err.Error(), "databases") {
		t.Errorf("bad glob: err = %v", err)
	}
}
