package llmgateway

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

// TestReadLimitedNeverGrowsPastLimit checks that the buffer of a non-stream answer stays within
// its bound whatever the upstream declares or sends: a doubling buffer would reach twice it.
func TestReadLimitedNeverGrowsPastLimit(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 10000)
	for _, tc := range []struct {
		name          string
		contentLength int64
		limit         int64
		want          int
	}{
		{"unknown length, over the limit", -1, 4097, 4097},
		{"unknown length, within the limit", -1, 20000, 10000},
		{"declared length within the limit", 10000, 20000, 10000},
		{"declared length understates", 10, 6000, 6000},
		{"declared length overstates", 1 << 40, 3000, 3000},
		{"empty", 0, 100, 0},
	} {
		for _, pooled := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, pooled %t", tc.name, pooled), func(t *testing.T) {
				src := body
				if tc.contentLength == 0 {
					src = nil
				}
				resp := &http.Response{ContentLength: tc.contentLength, Body: io.NopCloser(iotest.HalfReader(bytes.NewReader(src)))}
				var got []byte
				var err error
				if pooled {
					// A dirty pooled buffer: what a previous answer left in it must not show.
					buf := pooledAnswerBuf(resp)
					if buf != nil {
						copy(buf[:cap(buf)], bytes.Repeat([]byte{'#'}, cap(buf)))
					}
					got, err = readInto(resp, tc.limit, buf)
					defer putAnswerBuf(got)
				} else {
					got, err = readLimited(resp, tc.limit)
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != tc.want || !bytes.Equal(got, src[:tc.want]) {
					t.Errorf("read %d bytes, want the first %d", len(got), tc.want)
				}
				if int64(cap(got)) > tc.limit {
					t.Errorf("buffer capacity %d exceeds the limit %d", cap(got), tc.limit)
				}
			})
		}
	}
}

// TestTailWriterUsage checks that the usage of a relayed answer is found in its last bytes
// however the answer was split into writes.
func TestTailWriterUsage(t *testing.T) {
	answer := `{"object":"list","data":[{"embedding":[` + strings.Repeat("0.0123,", 3000) +
		`0.5]}],"model":"e","usage":{"prompt_tokens":8,"total_tokens":8}}`
	for _, chunk := range []int{1, 7, 100, 4095, 4096, 4097, 9000, len(answer)} {
		var tw tailWriter
		for rest := []byte(answer); len(rest) > 0; {
			n := min(chunk, len(rest))
			_, _ = tw.Write(rest[:n])
			rest = rest[n:]
		}
		if !strings.HasSuffix(answer, string(tw.buf[:tw.n])) || tw.n != len(tw.buf) {
			t.Fatalf("chunks of %d: kept %d bytes that are not the answer's end", chunk, tw.n)
		}
		u, ok := tw.usage()
		if !ok || u.PromptTokens != 8 || u.TotalTokens != 8 {
			t.Errorf("chunks of %d: usage %+v, %v; want 8 prompt, 8 total", chunk, u, ok)
		}
	}

	for _, tail := range []string{
		`"choices":[]}`,                // no usage at all
		`"type":"usage"}`,              // the word as a value
		`"usage":null}`,                // a null usage
		`"usage":{"prompt_tokens":3,"`, // cut short
	} {
		var tw tailWriter
		_, _ = tw.Write([]byte(tail))
		if u, ok := tw.usage(); ok {
			t.Errorf("tail %s: usage %+v; want none", tail, u)
		}
	}
}
