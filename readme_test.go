package llmgateway_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeDemo follows the README's first steps as a new user does: the run command's config
// is loaded (in process, on fresh ports), the curl command is sent as written, and the answer
// and the "ready" line are what the README says.
func TestReadmeDemo(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(readme, 2)
	if len(blocks) < 2 {
		t.Fatal("README: want the run command and the curl command as its first two sh blocks")
	}
	run, curl := strings.TrimSpace(blocks[0][1]), strings.TrimSpace(blocks[1][1])

	// One process: nothing in the background, nothing to leave behind on Ctrl-C.
	config, ok := strings.CutPrefix(run, "go run ./cmd/caddy run --config ")
	if !ok || strings.ContainsAny(config, "&;| \n") {
		t.Fatalf("README run command %q: want one go run ./cmd/caddy run --config <file>", run)
	}
	if !strings.Contains(readme, "serving initial configuration") {
		t.Error("README does not say what ready looks like (Caddy's \"serving initial configuration\")")
	}

	args := shellWords(t, curl)
	if len(args) == 0 || args[0] != "curl" {
		t.Fatalf("README curl block %q does not start with curl", curl)
	}
	req := curlRequest(t, args[1:])

	upstream := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	t.Chdir(dir)
	gw := startExample(t, config, upstream, dir)
	req.URL.Scheme, req.URL.Host = "http", strings.TrimPrefix(gw.URL, "http://")
	req.Host = ""
	status, _, body := gw.do(req)
	if status != http.StatusOK || !strings.Contains(body, `"content":"hello from fake"`) {
		t.Fatalf("README curl: %d %s", status, body)
	}
	if !strings.Contains(readme, "`\"content\":\"hello from fake\"`") {
		t.Errorf("README does not show the answer the demo gives (%s)", body)
	}
	if _, err := os.Stat(filepath.Join(dir, "logs", "record.db")); err != nil {
		t.Errorf("README promises logs/record.db: %v", err)
	}
}

// curlRequest builds the request of a curl command line without "curl". A silent curl (-s)
// is refused: it hides "connection refused" from a user whose gateway is not up yet.
func curlRequest(t *testing.T, args []string) *http.Request {
	t.Helper()
	var url, body string
	header := http.Header{}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-H" && i+1 < len(args):
			i++
			name, value, _ := strings.Cut(args[i], ":")
			header.Add(name, strings.TrimSpace(value))
		case a == "-d" && i+1 < len(args):
			i++
			body = args[i]
		case strings.HasPrefix(a, "-"):
			t.Fatalf("README curl: option %s: the first curl must show errors and take no other options", a)
		default:
			url = a
		}
	}
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	method := http.MethodGet
	if body != "" {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	return req
}

// shellWords splits a POSIX shell command line with line continuations and single quotes,
// which is all the README's commands use.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	s = strings.ReplaceAll(s, "\\\n", " ")
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			cur.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case r == '"' || r == '\\' || r == '$':
			t.Fatalf("shellWords: %q needs a real shell", s)
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("shellWords: unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
