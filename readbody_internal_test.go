package llmgateway

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// closeRecorder is a request body that records whether it was closed.
type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

// TestReadBodyCloses: a body read whole is closed at once (an HTTP/2 server keeps the body's
// buffer until then, for as long as a stream lasts); one over the limit is left to the server.
func TestReadBodyCloses(t *testing.T) {
	for _, tc := range []struct {
		name       string
		body       string
		length     int64 // ContentLength; -1: unknown
		limit      int64
		wantErr    bool
		wantClosed bool
	}{
		{"declared length", `{"model":"m"}`, 13, 100, false, true},
		{"unknown length", `{"model":"m"}`, -1, 100, false, true},
		{"unknown length at the limit", `{"model":"m"}`, -1, 13, false, true},
		{"unknown length over the limit", `{"model":"m"}`, -1, 12, true, false},
		{"declared length over the limit", `{"model":"m"}`, 13, 12, true, false},
		{"short body", `{"mo`, 13, 100, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := &closeRecorder{Reader: strings.NewReader(tc.body)}
			r := &http.Request{Body: body, ContentLength: tc.length}
			got, _, err := readBody(r, tc.limit, false)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			var tooLarge *http.MaxBytesError
			if err != nil && tc.length >= 0 && tc.length <= tc.limit && errors.As(err, &tooLarge) {
				t.Fatalf("err = %v: a short body is no body too large", err)
			}
			if err == nil && string(got) != tc.body {
				t.Errorf("body = %q, want %q", got, tc.body)
			}
			if body.closed != tc.wantClosed {
				t.Errorf("closed = %v, want %v", body.closed, tc.wantClosed)
			}
		})
	}
}
