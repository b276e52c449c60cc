package llmgateway_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	llmgateway "github.com/llmgw/caddy-llm-gateway"
)

// credentialHeaders are the ways callers send their API key, in the spellings SDKs and hand-made
// clients use; each value is a distinct secret so a leak names its header.
var credentialHeaders = []struct{ name, value string }{
	{"X-Api-Key", "sk-secret-xapikey-canonical"},
	{"x-api-key", "sk-secret-xapikey-lower"},
	{"X-API-KEY", "sk-secret-xapikey-upper"},
	{"Api-Key", "sk-secret-apikey-canonical"},
	{"api-key", "sk-secret-apikey-lower"},
	{"Authorization", "Bearer sk-secret-authorization"},
	{"authorization", "bearer sk-secret-authorization-lower"},
	{"Proxy-Authorization", "Basic sk-secret-proxyauthorization"},
	{"proxy-authorization", "Basic sk-secret-proxyauthorization-lower"},
}

// sendWithCredential makes a chat call carrying one credential header, spelled exactly as given.
func (g *gateway) sendWithCredential(name, value string) {
	g.t.Helper()
	req, err := http.NewRequest(http.MethodPost, g.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header[name] = []string{value} // as spelled: net/http would canonicalise a Set
	req.Header.Set("X-Request-Id", name)
	if status, _, body := g.do(req); status != http.StatusOK {
		g.t.Fatalf("chat with %s: %d %s", name, status, body)
	}
}

// gatewayWarnings is a global log that writes the gateway's own log entries to path.
func gatewayWarnings(path string) string {
	return fmt.Sprintf("\tlog gateway {\n\t\toutput file %s\n\t\tformat json\n\t\tinclude http.handlers.llm_gateway\n\t}", path)
}

// readLog returns the file at path, or nothing when it does not exist yet.
func readLog(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return data
}

// TestAccessLogCredentials checks what Caddy's JSON access log shows of caller credentials. A
// plain `log { format json }` shows X-Api-Key and Api-Key in clear (Caddy masks only
// Authorization), which the gateway cannot prevent: it warns at provision, naming the headers and
// the filter that fixes it. With that filter, no credential appears, in any spelling, and the
// entries keep their llm object. Without access logging there is no warning.
// filteredLog is a site log block with the documented credential filter; %s is its file.
var filteredLog = "\tlog {\n\t\toutput file %s\n\t\t" + strings.ReplaceAll(llmgateway.AccessLogFilter, "\n", "\n\t\t") + "\n\t}\n"

func TestAccessLogCredentials(t *testing.T) {
	for _, tc := range []struct {
		name        string
		logBlock    string // "" for no access log
		options     string // llm_gateway options
		wantWarning bool
		wantLeak    bool
	}{
		{"plain json log", "\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}\n", "", true, true},
		{"documented filter", filteredLog, "", true, false},
		{"documented filter, acknowledged", filteredLog, "\t\taccess_log_filtered", false, false},
		{"no access log", "", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			accessPath, warnPath := filepath.Join(dir, "access.log"), filepath.Join(dir, "gateway.log")
			up := fake(t, "cred")
			site := gatewaySite(tc.options, clientBlock("cred", up.URL(), "match keyword gpt"))
			if tc.logBlock != "" {
				site = fmt.Sprintf(tc.logBlock, accessPath) + site
			}
			gw := startGateway(t, gatewayWarnings(warnPath), site)

			warnings := readLog(t, warnPath)
			if got := bytes.Count(warnings, []byte("access logging is on")); got != map[bool]int{true: 1, false: 0}[tc.wantWarning] {
				t.Errorf("%d access-log warnings, want warning=%v:\n%s", got, tc.wantWarning, warnings)
			}
			if tc.wantWarning {
				for _, want := range []string{"X-Api-Key", "Api-Key", `request>headers>X-Api-Key delete`, `request>headers>Api-Key delete`} {
					if !bytes.Contains(warnings, []byte(want)) {
						t.Errorf("warning does not name %q:\n%s", want, warnings)
					}
				}
			}

			for _, h := range credentialHeaders {
				gw.sendWithCredential(h.name, h.value)
			}
			if tc.logBlock == "" {
				return
			}
			var data []byte
			eventually(t, "access log lines", func() (bool, string) {
				data = readLog(t, accessPath)
				return bytes.Count(data, []byte(`"llm":{`)) == len(credentialHeaders), fmt.Sprintf("access log:\n%s", data)
			})
			leaked := regexp.MustCompile(`sk-secret-[a-z-]+`).FindAll(data, -1)
			switch {
			case tc.wantLeak && len(leaked) == 0:
				t.Errorf("no key in a plain access log: the test no longer shows the leak it guards against:\n%s", data)
			case !tc.wantLeak && len(leaked) > 0:
				t.Errorf("keys %s in the filtered access log:\n%s", leaked, data)
			}
		})
	}
}

// TestLogBlocksFilterCredentials checks that every log block in the examples and docs carries the
// filter that keeps caller keys out of the access log.
func TestLogBlocksFilterCredentials(t *testing.T) {
	var files []string
	for _, pattern := range []string{"examples/*Caddyfile", "examples/*/*Caddyfile", "docs/*.md", "README.md"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	lines := strings.Split(llmgateway.AccessLogFilter, "\n")
	blocks := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// A site's log block: `log {` on a line of its own, up to its closing brace.
		for _, loc := range regexp.MustCompile(`(?m)^\s*log \{\n((?:.*\n)*?)\s*\}\n`).FindAllSubmatchIndex(data, -1) {
			blocks++
			block := string(data[loc[2]:loc[3]])
			for _, line := range lines[:len(lines)-1] { // the closing brace is matched apart
				if !strings.Contains(block, strings.TrimSpace(line)) {
					t.Errorf("%s: log block without %q:\n%s", f, strings.TrimSpace(line), block)
				}
			}
		}
	}
	if blocks == 0 {
		t.Error("no log block found in the examples and docs")
	}
}

// TestAuditRedactsCredentialHeaders checks that the audit log's default redact list masks every
// credential header a caller may send, Proxy-Authorization included, in any spelling.
func TestAuditRedactsCredentialHeaders(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "record.db")
	up := fake(t, "redact")
	site := gatewaySite("", clientBlock("redact", up.URL(), "match keyword gpt"))
	gw := startGateway(t, auditGlobals(dbPath), site)
	for _, h := range credentialHeaders {
		gw.sendWithCredential(h.name, h.value)
	}
	gw.reload("", site, false)
	awaitCallsEnded(t)

	rows := rowsByRequestID(t, readAuditRows(t, dbPath))
	for _, h := range credentialHeaders {
		r, ok := rows[h.name]
		if !ok {
			t.Errorf("no audit row for the call with %s", h.name)
			continue
		}
		secret := h.value[strings.Index(h.value, "sk-"):]
		if strings.Contains(r.Headers, secret) || !strings.Contains(r.Headers, strings.ToLower(h.name)) {
			t.Errorf("call with %s: Headers %s; want the header present and its key masked", h.name, r.Headers)
		}
	}
}
