package llmgateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Hostile requests (issue #10, request side): model names no model has, paths that climb out of
// base_url, and bodies that name two models. Each is refused with a 400 in OpenAI's shape before
// any upstream sees it, and each still gets its audit row.

// rawExchange writes request, as it is, on a fresh connection to the gateway and reads one
// response. Go's HTTP client cleans and re-encodes paths, so path tricks need the raw bytes.
func rawExchange(t *testing.T, gw *gateway, request string) (int, string, error) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(gw.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, request); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// rawPost is a raw POST of a body to target (the request-target, exactly as sent).
func rawPost(t *testing.T, gw *gateway, target, contentType, body, requestID string) (int, string, error) {
	t.Helper()
	return rawExchange(t, gw, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n"+
		"Authorization: Bearer sk-caller-key-123456\r\nX-Request-Id: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		target, strings.TrimPrefix(gw.URL, "http://"), contentType, requestID, len(body), body))
}

// formBody builds a multipart/form-data body, fields in order; a name starting with "@" is a file.
func formBody(t *testing.T, fields ...[2]string) (contentType, body string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		var (
			w   io.Writer
			err error
		)
		if name, ok := strings.CutPrefix(f[0], "@"); ok {
			w, err = mw.CreateFormFile(name, "audio.wav")
		} else {
			w, err = mw.CreateFormField(f[0])
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, f[1])
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.String()
}

// wantInvalidRequest checks an OpenAI-shaped 400 invalid_request_error.
func wantInvalidRequest(t *testing.T, status int, body string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("no answer: %v (want a 400)", err)
	}
	var e struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
		} `json:"error"`
	}
	if status != http.StatusBadRequest || json.Unmarshal([]byte(body), &e) != nil || e.Error == nil ||
		e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
		t.Fatalf("got %d %.300q, want a 400 invalid_request_error in OpenAI's shape", status, body)
	}
}

// auditRowsAfter ends the test's audited calls (a config without llm_audit closes the writer)
// and returns the rows by request id.
func auditRowsAfter(t *testing.T, gw *gateway, site, dbPath string) map[string]auditRow {
	t.Helper()
	gw.reload("", site, false)
	awaitCallsEnded(t)
	return rowsByRequestID(t, readAuditRows(t, dbPath))
}

func TestHostileModelNameRefusedBeforeUpstream(t *testing.T) {
	up := fake(t, "hm-up")
	dbPath := filepath.Join(t.TempDir(), "record.db")
	site := gatewaySite("", clientBlock("hm-up", up.URL(), "match keyword gpt"))
	gw := startGateway(t, auditGlobals(dbPath), site)

	const invalid = "gpt-4o\xff\xfe"
	long := "gpt-" + strings.Repeat("x", 253) // 257 bytes: one past the limit
	chat := func(model string, stream bool) string {
		return fmt.Sprintf(`{"model":"%s","stream":%v,"messages":[{"role":"user","content":"hi"}]}`, model, stream)
	}
	type tc struct {
		name, path, contentType, body string
	}
	cases := []tc{
		{"json invalid UTF-8", "/v1/chat/completions", "application/json", chat(invalid, false)},
		{"json invalid UTF-8 stream", "/v1/chat/completions", "application/json", chat(invalid, true)},
		{"json invalid UTF-8 generic", "/v1/images/generations", "application/json", `{"model":"` + invalid + `","prompt":"x"}`},
		{"json escaped NUL", "/v1/chat/completions", "application/json", chat(`gpt\u0000`, false)},
		{"json escaped newline stream", "/v1/chat/completions", "application/json", chat(`gpt-4\nX-Injected: 1`, true)},
		{"json raw DEL", "/v1/completions", "application/json", "{\"model\":\"gpt\x7f\",\"prompt\":\"x\"}"},
		{"json too long", "/v1/chat/completions", "application/json", chat(long, false)},
		{"json too long stream", "/v1/chat/completions", "application/json", chat(long, true)},
	}
	for _, f := range []struct {
		name  string
		model string
	}{{"invalid UTF-8", invalid}, {"control character", "gpt\r\n"}, {"too long", long}} {
		ct, body := formBody(t, [2]string{"@file", "RIFF"}, [2]string{"model", f.model})
		cases = append(cases, tc{"multipart " + f.name, "/v1/audio/transcriptions", ct, body})
		ct, body = formBody(t, [2]string{"model", f.model}, [2]string{"stream", "true"}, [2]string{"@file", "RIFF"})
		cases = append(cases, tc{"multipart stream " + f.name, "/v1/audio/transcriptions", ct, body})
		ct, body = formBody(t, [2]string{"model", f.model}, [2]string{"prompt", "x"})
		cases = append(cases, tc{"multipart generic " + f.name, "/v1/images/edits", ct, body})
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body, err := rawPost(t, gw, c.path, c.contentType, c.body, fmt.Sprintf("hm-%d", i))
			wantInvalidRequest(t, status, body, err)
		})
	}
	if n := up.Requests(); n != 0 {
		t.Errorf("the upstream saw %d requests; a bad model name must be refused before any upstream call", n)
	}

	// A good model still goes through, and every call has its row.
	if status, _, body := gw.chat("gpt-4o"); status != http.StatusOK {
		t.Fatalf("valid model: %d %s", status, body)
	}
	rows := auditRowsAfter(t, gw, site, dbPath)
	for i, c := range cases {
		r, ok := rows[fmt.Sprintf("hm-%d", i)]
		if !ok {
			t.Errorf("%s: no audit row", c.name)
			continue
		}
		if r.Status != http.StatusBadRequest || r.Backend != "" || r.Tried != "" {
			t.Errorf("%s: audit row status=%d backend=%q tried=%q, want a 400 with no upstream", c.name, r.Status, r.Backend, r.Tried)
		}
	}
}

func TestHostileDotSegmentsRefused(t *testing.T) {
	up := fake(t, "hd-up")
	dbPath := filepath.Join(t.TempDir(), "record.db")
	// The clean paths below get the fake's 404s: keep the breaker out of the count.
	site := gatewaySite("\t\thealth_check {\n\t\t\tfailure_threshold 100\n\t\t}", clientBlock("hd-up", up.URL(), "match keyword gpt"))
	gw := startGateway(t, auditGlobals(dbPath), site)
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`

	targets := []string{
		"/v1/../admin",
		"/v1/./chat/completions",
		"/v1/chat/completions/..",
		"/v1/chat/completions/.",
		"/v1/x/../../admin",
		"/v1/%2e%2e/internal/secret",
		"/v1/%2E%2E/internal/secret",
		"/v1/.%2e/admin",
		"/v1/%2e./admin",
		"/v1/%2e/chat/completions",
		"/v1/..%2fadmin",
		"/v1%2f..%2fadmin",
		"/v1/%2e%2e%2Fadmin",
		`/v1/..\admin`,
		`/v1/x\..\..\admin`,
		"/v1/%5c..%5cadmin",
		"/v1/%252e%252e/admin",
		"/v1/%25252e%25252e/admin",
		"/v1/..;/admin",
		"/v1/.;x/chat/completions",
		"/v1/..?q=1",
		"http://" + strings.TrimPrefix(gw.URL, "http://") + "/v1/../admin", // absolute-form
	}
	for i, target := range targets {
		t.Run(target, func(t *testing.T) {
			status, resp, err := rawPost(t, gw, target, "application/json", body, fmt.Sprintf("hd-%d", i))
			wantInvalidRequest(t, status, resp, err)
		})
	}
	if n := up.Requests(); n != 0 {
		t.Errorf("the upstream saw %d requests (last %s); a dot segment must never reach it", n, up.LastRequest().Path)
	}

	// Dots inside a segment are no dot segments: these are forwarded under base_url.
	for i, target := range []string{"/v1/chat/completions", "/v1/files/batch.v2..jsonl", "/v1/.well-known/x", "/v1/x/...", "/v1/%2e%2e%2e/x"} {
		status, resp, err := rawPost(t, gw, target, "application/json", body, fmt.Sprintf("hd-ok-%d", i))
		if err != nil || status == http.StatusBadRequest {
			t.Errorf("POST %s = %d %s %v, want it forwarded", target, status, resp, err)
		}
	}
	if n := up.Requests(); n != 5 {
		t.Errorf("the upstream saw %d requests, want the 5 clean paths", n)
	}

	rows := auditRowsAfter(t, gw, site, dbPath)
	for i, target := range targets {
		if r, ok := rows[fmt.Sprintf("hd-%d", i)]; !ok || r.Status != http.StatusBadRequest {
			t.Errorf("%s: audit row %+v (found %v), want a 400", target, r, ok)
		}
	}
}

func TestHostileDuplicateModelRefused(t *testing.T) {
	cheap, expensive := fake(t, "hdup-cheap"), fake(t, "hdup-expensive")
	dbPath := filepath.Join(t.TempDir(), "record.db")
	site := gatewaySite("",
		clientBlock("hdup-cheap", cheap.URL(), "match exact cheap"),
		clientBlock("hdup-expensive", expensive.URL(), "match exact expensive"))
	gw := startGateway(t, auditGlobals(dbPath), site)

	type tc struct{ name, path, contentType, body string }
	cases := []tc{
		{"json", "/v1/chat/completions", "application/json", `{"model":"cheap","model":"expensive","messages":[]}`},
		{"json stream", "/v1/chat/completions", "application/json", `{"model":"cheap","stream":true,"messages":[],"model":"expensive"}`},
		{"json case variant", "/v1/chat/completions", "application/json", `{"model":"cheap","Model":"expensive","messages":[]}`},
		{"json escaped key", "/v1/embeddings", "application/json", `{"model":"cheap","input":"x","mod\u0065l":"expensive"}`},
		{"json generic", "/v1/images/generations", "application/json", `{"model":"cheap","prompt":"x","model":"expensive"}`},
	}
	ct, b := formBody(t, [2]string{"model", "cheap"}, [2]string{"@file", "RIFF"}, [2]string{"model", "expensive"})
	cases = append(cases, tc{"multipart", "/v1/audio/transcriptions", ct, b})
	ct, b = formBody(t, [2]string{"model", "cheap"}, [2]string{"model", "expensive"}, [2]string{"prompt", "x"})
	cases = append(cases, tc{"multipart generic", "/v1/images/edits", ct, b})
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body, err := rawPost(t, gw, c.path, c.contentType, c.body, fmt.Sprintf("hdup-%d", i))
			wantInvalidRequest(t, status, body, err)
		})
	}
	if n, m := cheap.Requests(), expensive.Requests(); n+m != 0 {
		t.Errorf("upstreams saw %d + %d requests; a body naming two models must reach none", n, m)
	}

	// The same model twice is one model.
	if status, body, err := rawPost(t, gw, "/v1/chat/completions", "application/json",
		`{"model":"cheap","messages":[],"model":"cheap"}`, "hdup-same"); err != nil || status != http.StatusOK {
		t.Errorf("same model twice: %d %s %v, want 200", status, body, err)
	}
	ct, b = formBody(t, [2]string{"model", "cheap"}, [2]string{"@file", "RIFF"}, [2]string{"model", "cheap"})
	if status, body, err := rawPost(t, gw, "/v1/audio/transcriptions", ct, b, "hdup-same-form"); err != nil || status != http.StatusOK {
		t.Errorf("same form model twice: %d %s %v, want 200", status, body, err)
	}

	rows := auditRowsAfter(t, gw, site, dbPath)
	for i, c := range cases {
		if r, ok := rows[fmt.Sprintf("hdup-%d", i)]; !ok || r.Status != http.StatusBadRequest || r.Backend != "" {
			t.Errorf("%s: audit row %+v (found %v), want a 400 with no backend", c.name, r, ok)
		}
	}
}
