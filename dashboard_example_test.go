package llmgateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleDashboard runs examples/Caddyfile: its usage dashboard answers only with the
// documented demo credentials, and counts the call just made through the gateway.
func TestExampleDashboard(t *testing.T) {
	upstream := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // the example serves its fake there
	dir := t.TempDir()
	t.Chdir(dir)
	gw := startExample(t, filepath.Join("examples", "Caddyfile"), upstream, dir)
	if status, _, body := gw.chat("gpt-4o"); status != http.StatusOK {
		t.Fatalf("chat: %d %s", status, body)
	}
	get := func(path, user, password string) (int, string, string) {
		req, err := http.NewRequest(http.MethodGet, gw.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header.Get("Content-Type"), string(body)
	}
	// Each checked password costs a bcrypt comparison (slow under -race): two suffice.
	for _, c := range [][2]string{{"", ""}, {"admin", "wrong"}} {
		if status, _, _ := get("/usage/", c[0], c[1]); status != http.StatusUnauthorized {
			t.Errorf("/usage/ as %q/%q: %d, want 401", c[0], c[1], status)
		}
	}
	status, ctype, body := get("/usage/", "admin", "demo")
	if status != http.StatusOK || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(body, "static/app.js") {
		t.Fatalf("/usage/: %d %s", status, ctype)
	}
	eventually(t, "the call in the dashboard", func() (bool, string) {
		_, _, body := get("/usage/api/summary", "admin", "demo")
		var s struct {
			Requests int64 `json:"requests"`
		}
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			return false, err.Error()
		}
		return s.Requests == 1, fmt.Sprintf("summary %s, want 1 request", body)
	})
}
