package audit

import (
	"net/http"
	"testing"

	"github.com/goccy/go-json"
)

func TestAppendMasked(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"sk-abcdefghijklmnopqrstuvwxyz", "sk-ab…yz"},
		{"Bearer sk-abcdefghijklmnopqrstuvwxyz", "Bearer sk-ab…yz"},
		{"bearer   sk-abcdefghijklmnopqrstuvwxyz", "bearer sk-ab…yz"},
		{"Basic dXNlcjpwYXNzd29yZDEyMzQ1Ng==", "Basic dXNlc…=="},
		{"Bearer short", "Bearer ***"},
		{"short", "***"},
		{"", "***"},
		{"0123456789abcde", "***"},       // 15 bytes: below maskMinLen
		{"0123456789abcdef", "01234…ef"}, // 16 bytes: shown partially
		// Not a scheme: masked as one value.
		{"session=abcdefghijklmnop; theme=dark", "sessi…rk"},
	}
	for _, tt := range tests {
		if got := string(appendMasked(nil, tt.in)); got != tt.want {
			t.Errorf("appendMasked(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestAppendHeadersJSONBytes pins the bytes of the column: strings are escaped as everywhere else in
// the gateway (internal/jsonspan), invalid UTF-8 as \ufffd and U+2028 escaped, names lower-cased.
func TestAppendHeadersJSONBytes(t *testing.T) {
	h := http.Header{"X-Weird": {"tab\tquote\"back\\slash\x01nul\xffbad\u2028é<&>"}, "Accept": {"a", "b"}}
	var scratch []byte
	got, _ := appendHeadersJSON(nil, h, newRedactor(nil), nil, &scratch)
	want := `{"accept":"a, b","x-weird":"tab\tquote\"back\\slash\u0001nul\ufffdbad\u2028é<&>"}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestAppendHeadersJSON(t *testing.T) {
	r := newRedactor([]string{"authorization", " X-API-KEY ", "Cookie", "cookie"})
	if len(r.names) != 3 {
		t.Fatalf("redactor names = %q, want 3 unique lower-case names", r.names)
	}
	h := http.Header{
		"Authorization": {"Bearer sk-abcdefghijklmnopqrstuvwxyz"},
		"X-Api-Key":     {"sk-0123456789abcdefXY"},
		"Accept":        {"text/event-stream", "application/json"},
		"Cookie":        {"a=1", "b=2"},
		"X-Weird":       {"tab\tquote\"back\\slash\x01nul\xffbad\u2028"},
		"Content-Type":  {"application/json"},
	}
	var scratch []byte
	got, keys := appendHeadersJSON([]byte("prefix:"), h, r, nil, &scratch)
	if len(keys) != len(h) {
		t.Errorf("returned %d keys, want %d", len(keys), len(h))
	}
	const prefix = "prefix:"
	if string(got[:len(prefix)]) != prefix {
		t.Fatalf("dst prefix lost: %q", got)
	}
	var m map[string]string
	if err := json.Unmarshal(got[len(prefix):], &m); err != nil {
		t.Fatalf("not valid JSON: %v\n%s", err, got)
	}
	want := map[string]string{
		"authorization": "Bearer sk-ab…yz",
		"x-api-key":     "sk-01…XY",
		"accept":        "text/event-stream, application/json",
		"cookie":        "***, ***",
		"x-weird":       "tab\tquote\"back\\slash\x01nul\ufffdbad\u2028",
		"content-type":  "application/json",
	}
	if len(m) != len(want) {
		t.Errorf("got %d headers, want %d: %v", len(m), len(want), m)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("header %q = %q, want %q", k, m[k], v)
		}
	}
	// Sorted keys make the column stable.
	again, _ := appendHeadersJSON(nil, h, r, keys, &scratch)
	if string(again) != string(got[len(prefix):]) {
		t.Errorf("encoding not deterministic:\n%s\n%s", again, got[len(prefix):])
	}
}

func TestBodyPolicy(t *testing.T) {
	body := []byte("héllo wörld") // é and ö are two bytes each
	tests := []struct {
		name string
		p    bodyPolicy
		in   []byte
		want []byte
	}{
		{"full", bodyPolicy{mode: BodiesFull}, body, body},
		{"none", bodyPolicy{mode: BodiesNone}, body, nil},
		{"truncate longer", bodyPolicy{mode: BodiesTruncate, limit: 5}, body, []byte("héll")},
		{"truncate inside rune", bodyPolicy{mode: BodiesTruncate, limit: 2}, body, []byte("h")},
		{"truncate on boundary", bodyPolicy{mode: BodiesTruncate, limit: 3}, body, []byte("hé")},
		{"truncate shorter", bodyPolicy{mode: BodiesTruncate, limit: 100}, body, body},
		{"truncate nil", bodyPolicy{mode: BodiesTruncate, limit: 4}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.p.apply(tt.in)
			if string(got) != string(tt.want) || (got == nil) != (tt.want == nil) {
				t.Errorf("apply = %q (nil %v), want %q (nil %v)", got, got == nil, tt.want, tt.want == nil)
			}
		})
	}
}

func TestCapped(t *testing.T) {
	tests := []struct {
		name  string
		b     string
		total int64
		limit int
		want  string
	}{
		{"whole, within", "abc", 3, 5, "abc"},
		{"whole, no limit", "abcdef", 6, 0, "abcdef"},
		{"whole, over", "abcdef", 6, 4, "abcd…[truncated: 6 bytes total]"},
		{"part, within", "abc", 10, 5, "abc…[truncated: 10 bytes total]"},
		{"part, over", "abcdef", 10, 4, "abcd…[truncated: 10 bytes total]"},
		{"rune not split", "ab€", 5, 3, "ab…[truncated: 5 bytes total]"},
		{"total below kept", "abcdef", 2, 4, "abcd…[truncated: 6 bytes total]"},
	}
	for _, tc := range tests {
		if got := string(Capped([]byte(tc.b), tc.total, tc.limit)); got != tc.want {
			t.Errorf("%s: Capped(%q, %d, %d) = %q, want %q", tc.name, tc.b, tc.total, tc.limit, got, tc.want)
		}
	}
}
