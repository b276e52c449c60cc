package llmgateway_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Hostile inputs (issue #10): malformed request bodies, upstreams that lie about what they send,
// and caller credentials in every spelling. Each case ends in an answer of the right shape, the
// gateway keeps serving, and nothing reaches an upstream that should not.

// TestHostileMalformedBodies posts bodies no JSON decoder should accept as a call. Each is a 400
// in OpenAI's shape, and no upstream sees any of them.
func TestHostileMalformedBodies(t *testing.T) {
	up := fake(t, "up")
	gw := startGateway(t, "", gatewaySite("", clientBlock("up", up.URL(), "match exact gpt-4")))

	deep := strings.Repeat("[", 200000) + strings.Repeat("]", 200000)
	for _, tc := range []struct{ name, body string }{
		{"empty", ""},
		{"white space", " \r\n\t "},
		{"null", "null"},
		{"array", `[{"model":"gpt-4"}]`},
		{"number", "42"},
		{"string", `"gpt-4"`},
		{"truncated", `{"model":"gpt-4","messages":[`},
		{"unterminated string", `{"model":"gpt-4`},
		{"trailing garbage", `{"model":"gpt-4","messages":[]} {}`},
		{"two objects", `{"model":"gpt-4"}{"model":"gpt-4"}`},
		{"nul byte", "{\"model\":\"gpt-4\",\x00\"messages\":[]}"},
		{"byte order mark", "\xef\xbb\xbf{\"model\":\"gpt-4\",\"messages\":[]}"},
		{"single quotes", `{'model':'gpt-4'}`},
		{"bare key", `{model:"gpt-4"}`},
		{"bad escape", `{"model":"gpt\q-4","messages":[]}`},
		{"lone surrogate escape in model", `{"model":"gpt-4\ud800","messages":[]}`},
		{"model null", `{"model":null,"messages":[]}`},
		{"model number", `{"model":4,"messages":[]}`},
		{"model object", `{"model":{"name":"gpt-4"},"messages":[]}`},
		{"no model", `{"messages":[{"role":"user","content":"hi"}]}`},
		{"empty model", `{"model":"","messages":[]}`},
		{"deep nesting beside the model", `{"model":"gpt-4","x":` + deep + `}`},
		{"deep nesting, unclosed", `{"model":"gpt-4","x":` + strings.Repeat("[", 200000) + `}`},
		{"huge exponent", `{"model":"gpt-4","max_tokens":1e999999999,"messages":[]`},
		{"stream not a bool, truncated", `{"model":"gpt-4","stream":tru`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := gw.post("/v1/chat/completions", "application/json", tc.body)
			if status < 400 || status >= 500 {
				t.Fatalf("got %d %.200q, want a 4xx", status, body)
			}
			var e struct {
				Error *struct{ Message, Type string }
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == nil || e.Error.Message == "" {
				t.Fatalf("got %d %.200q, want an OpenAI-shaped error", status, body)
			}
		})
	}
	if n := up.Requests(); n != 0 {
		t.Errorf("the upstream saw %d of the malformed bodies, want none", n)
	}
	if status, _, body := gw.chat("gpt-4"); status != 200 {
		t.Errorf("after the malformed bodies: %d %s, want the gateway still serving", status, body)
	}
}

// TestHostileMalformedMultipart sends broken multipart forms to the transcription endpoint: each
// is a 400 in OpenAI's shape, and no upstream sees it.
func TestHostileMalformedMultipart(t *testing.T) {
	up := fake(t, "up")
	gw := startGateway(t, "", gatewaySite("", clientBlock("up", up.URL(), "match exact whisper-1")))

	manyParts := strings.Repeat("--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n", 20000) + "--b--\r\n"
	for _, tc := range []struct{ name, contentType, body string }{
		{"no boundary", "multipart/form-data", "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b--\r\n"},
		{"wrong boundary", "multipart/form-data; boundary=zzz", "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b--\r\n"},
		{"empty body", "multipart/form-data; boundary=b", ""},
		{"unterminated part", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1"},
		{"no model among many parts", "multipart/form-data; boundary=b", manyParts},
		{"model field named twice, different", "multipart/form-data; boundary=b",
			"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nother\r\n--b--\r\n"},
		{"json body on an upload endpoint", "application/json", `{"model":"whisper-1"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := gw.post("/v1/audio/transcriptions", tc.contentType, tc.body)
			wantInvalidRequest(t, status, body, nil)
		})
	}
	if n := up.Requests(); n != 0 {
		t.Errorf("the upstream saw %d of the malformed forms, want none", n)
	}
}

// lyingUpstream serves raw HTTP/1.1 answers written by answer, whatever the request, so an
// answer can say one thing in its headers and do another.
func lyingUpstream(t *testing.T, answer string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					return
				}
				req.Body.Close()
				_, _ = conn.Write([]byte(answer))
			}()
		}
	}()
	return "http://" + l.Addr().String() + "/v1"
}

// TestHostileLyingUpstreams points the gateway at upstreams whose answers are not what their
// headers say. A broken answer from the first client fails over to the second, which answers;
// with no second client the caller gets a 502 in OpenAI's shape, never a hang or an empty reply.
func TestHostileLyingUpstreams(t *testing.T) {
	for _, tc := range []struct {
		name, answer string
		stream       bool
		want         int // status with no other client; 0: the lie cannot be seen before it is relayed
	}{
		{"content-length longer than the body", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"id\":\"x\"}", false, 502},
		{"garbage instead of HTTP", "SSH-2.0-OpenSSH_9.6\r\n\r\n", false, 502},
		{"headers never end", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n", false, 502},
		{"chunked encoding broken", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", false, 502},
		{"stream answered with a cut JSON body", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"choices\":[", true, 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := fake(t, "good")
			liar := lyingUpstream(t, tc.answer)
			body := `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`
			if tc.stream {
				body = `{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"hi"}]}`
			}

			// With a second client, the broken answer fails over.
			gw := startGateway(t, "", gatewaySite("", clientBlock("liar", liar, "match exact gpt-4", "priority 1"),
				clientBlock("good", good.URL(), "match exact gpt-4")))
			status, h, got := gw.post("/v1/chat/completions", "application/json", body)
			if status != 200 || h.Get("X-LLM-Gateway-Backend") != "good" || h.Get("X-LLM-Gateway-Tried") != "liar,good" {
				t.Errorf("with a second client: %d backend %q tried %q %.200s, want 200 from good after liar",
					status, h.Get("X-LLM-Gateway-Backend"), h.Get("X-LLM-Gateway-Tried"), got)
			}

			// Alone, it is the caller's 502.
			gw.reload("", gatewaySite("", clientBlock("liar", liar, "match exact gpt-4")), true)
			status, _, got = gw.post("/v1/chat/completions", "application/json", body)
			var e struct {
				Error *struct{ Message, Type string }
			}
			if status != tc.want || json.Unmarshal([]byte(got), &e) != nil || e.Error == nil {
				t.Errorf("alone: %d %.200q, want %d with an OpenAI-shaped error", status, got, tc.want)
			}
		})
	}
}

// TestHostileCredentialSpellings sends the caller's key under every header and spelling the
// SDKs and curl users produce. A client with its own key never forwards any of them; the audit
// row masks each one.
func TestHostileCredentialSpellings(t *testing.T) {
	up := fake(t, "up")
	dbPath := t.TempDir() + "/audit.db"
	globals := "\tllm_audit {\n\t\tpath " + dbPath + "\n\t\tflush_interval -1ns\n\t}"
	site := gatewaySite("", clientBlock("up", up.URL(), "match exact gpt-4", "api_key sk-operator-key-000000"))
	gw := startGateway(t, globals, site)

	const secret = "sk-caller-secret-9f8e7d6c5b4a"
	spellings := []string{"Authorization", "authorization", "AUTHORIZATION", "X-Api-Key", "x-api-key", "X-API-KEY",
		"Api-Key", "api-key", "API-KEY", "Proxy-Authorization", "proxy-authorization"}
	for i, name := range spellings {
		value := secret
		if strings.Contains(strings.ToLower(name), "authorization") {
			value = "Bearer " + secret
		}
		// Raw bytes, so the header name goes out exactly as spelled.
		req := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s: %s\r\n"+
			"X-Request-Id: cred-%d\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			name, value, i, len(chatBody), chatBody)
		status, body, err := rawExchange(t, gw, req)
		if err != nil || status != 200 {
			t.Fatalf("%s: %d %.200s (%v)", name, status, body, err)
		}
		last := up.LastRequest()
		for hn, values := range last.Header {
			for _, v := range values {
				if strings.Contains(v, secret) {
					t.Errorf("%s: the upstream received the caller's key in %s", name, hn)
				}
			}
		}
		if got := last.Header.Get("Authorization"); got != "Bearer sk-operator-key-000000" {
			t.Errorf("%s: upstream Authorization %q, want the operator's key", name, got)
		}
	}

	rows := auditRowsAfter(t, gw, gatewaySite("", clientBlock("up", up.URL(), "match exact gpt-4")), dbPath)
	for i, name := range spellings {
		row, ok := rows[fmt.Sprintf("cred-%d", i)]
		if !ok {
			t.Errorf("%s: no audit row", name)
			continue
		}
		if strings.Contains(row.Headers, secret) {
			t.Errorf("%s: the audit row stores the caller's key: %s", name, row.Headers)
		}
	}
}

const chatBody = `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`
