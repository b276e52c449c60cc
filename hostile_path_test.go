package llmgateway

import "testing"

// TestHasDotSegment covers the path check on decoded paths (r.URL.Path), as the server hands
// them over; the end-to-end spellings are in TestHostileDotSegmentsRefused.
func TestHasDotSegment(t *testing.T) {
	for _, tt := range []struct {
		path string
		want bool
	}{
		{"/v1/chat/completions", false},
		{"/v1/files/batch.v2..jsonl", false},
		{"/v1/.well-known/x", false},
		{"/v1/.../x", false},
		{"/v1/..x/y", false},
		{"/v1/x../y", false},
		{"/v1/%zz/..x", false}, // a bad escape is kept, not a reason to give up
		{"/v1/%2e%2e%2e/x", false},
		{"/v1/../admin", true},
		{"/v1/./x", true},
		{"/v1/x/..", true},
		{"/v1/x/.", true},
		{"..", true},
		{"/v1//../x", true},
		{`/v1/..\admin`, true},
		{`/v1\..\admin`, true},
		{"/v1/..;jsessionid=1/admin", true},
		{"/v1/.;/x", true},
		{"/v1/%2e%2e/admin", true}, // "%252e%252e" on the wire
		{"/v1/%2E./admin", true},
		{"/v1/.%2e/admin", true},
		{"/v1/%2e/x", true},
		{"/v1/..%2fadmin", true},
		{"/v1/..%5cadmin", true},
		{"/v1/%252e%252e/admin", true},      // "%25252e%25252e" on the wire
		{"/v1/%25252e%25252e/admin", false}, // past maxPathDecodes
		{"/v1/%zz/%2e%2e/admin", true},
	} {
		if got := hasDotSegment(tt.path); got != tt.want {
			t.Errorf("hasDotSegment(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func BenchmarkHasDotSegment(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if hasDotSegment("/v1/chat/completions") {
			b.Fatal("dot segment")
		}
	}
}
