package llmgateway

import (
	"mime"
	"testing"
)

func TestHasMediaTypeAgreesWithMime(t *testing.T) {
	for _, ct := range []string{
		"text/event-stream",
		"text/event-stream; charset=utf-8",
		"Text/Event-Stream;charset=UTF-8",
		"  text/event-stream ; x=1",
		"text/event-streams",
		"text/event",
		"application/json",
		"",
		"multipart/form-data; boundary=abc",
		"multipart/form-data",
		"multipart/mixed; boundary=abc",
	} {
		for _, mt := range []string{"text/event-stream", "multipart/form-data"} {
			parsed, _, err := mime.ParseMediaType(ct)
			want := err == nil && parsed == mt
			if got := hasMediaType(ct, mt); got != want {
				t.Errorf("hasMediaType(%q, %q) = %v, mime says %v", ct, mt, got, want)
			}
		}
	}
}
