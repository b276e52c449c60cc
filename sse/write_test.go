package sse

import (
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/goccy/go-json"
)

func TestAppendEvent(t *testing.T) {
	tests := []struct {
		name, evName, data, want string
	}{
		{"plain", "", `{"a":1}`, "data: {\"a\":1}\n\n"},
		{"named", "ping", "{}", "event: ping\ndata: {}\n\n"},
		{"multi-line", "", "a\nb\r\nc\rd", "data: a\ndata: b\ndata: c\ndata: d\n\n"},
		{"trailing newline", "", "a\n", "data: a\ndata: \n\n"},
		{"empty", "", "", "data: \n\n"},
		{"name with newline is cut", "x\ndata: evil", "1", "event: x\ndata: 1\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(AppendEvent([]byte("prev"), []byte(tt.evName), []byte(tt.data)))
			if got != "prev"+tt.want {
				t.Errorf("got %q, want %q", got, "prev"+tt.want)
			}
		})
	}
}

// TestAppendEventRoundTrip checks that what AppendEvent writes, a Reader
// reads back unchanged.
func TestAppendEventRoundTrip(t *testing.T) {
	in := []ev{{Data: "a"}, {Name: "x", Data: "multi\nline"}, {Data: " lead"}, {Data: ""}, {Comment: true, Data: "keepalive"}}
	var b []byte
	for _, e := range in {
		if e.Comment {
			b = AppendComment(b, []byte(e.Data))
		} else {
			b = AppendEvent(b, []byte(e.Name), []byte(e.Data))
		}
	}
	got, err := readAll(NewReader(strings.NewReader(string(b))))
	if err != io.EOF || !reflect.DeepEqual(got, in) {
		t.Fatalf("round trip = %+v, %v\nwant %+v", got, err, in)
	}
}

func TestAppendComment(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ":\n\n"},
		{"keepalive", ": keepalive\n\n"},
		{"a\nb", ": a\n: b\n\n"},
	}
	for _, tt := range tests {
		if got := string(AppendComment(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("AppendComment(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDoneEvent(t *testing.T) {
	e, err := NewReader(strings.NewReader(DoneEvent)).Next()
	if err != nil || !IsDone(e.Data) {
		t.Fatalf("DoneEvent does not read back as done: %q, %v", e.Data, err)
	}
	for in, want := range map[string]bool{"[DONE]": true, " [DONE] ": true, "[DONE]x": false, "": false, `{"done":"[DONE]"}`: false} {
		if got := IsDone([]byte(in)); got != want {
			t.Errorf("IsDone(%q) = %v", in, got)
		}
	}
}

func TestIsPing(t *testing.T) {
	tests := []struct {
		name, data string
		want       bool
	}{
		{"ping", "{}", true},
		{"", `{"type":"ping"}`, true},
		{"", ` { "id": 1, "type" : "ping" }`, true},
		{"", `{"type":"message","content":"\"ping\""}`, false},
		{"", `{"choices":[{"delta":{"content":"ping"}}]}`, false},
		{"message", `{"nested":{"type":"ping"}}`, false},
		{"", `not json "ping"`, false},
	}
	for _, tt := range tests {
		if got := IsPing([]byte(tt.name), []byte(tt.data)); got != tt.want {
			t.Errorf("IsPing(%q, %q) = %v, want %v", tt.name, tt.data, got, tt.want)
		}
	}
}

func TestErrorChunk(t *testing.T) {
	got := string(ErrorChunk("upstream stream interrupted: \"reset\"\n\x01 <é>\xff"))
	want := `{"error":{"code":"upstream_error","message":"upstream stream interrupted: \"reset\"\n\u0001 <é>\ufffd"},"choices":[{"index":0,"delta":{},"finish_reason":"error"}]}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var v struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(got), &v); err != nil || v.Error.Code != "upstream_error" {
		t.Fatalf("not valid JSON: %v", err)
	}
}
