package sse

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

// burstyReader alternates reads of up to big bytes with reads of up to small bytes, so a
// Reader switches between its own buffer and a borrowed bulk one.
type burstyReader struct {
	data       []byte
	big, small int
	n          int
}

func (b *burstyReader) Read(p []byte) (int, error) {
	if len(b.data) == 0 {
		return 0, io.EOF
	}
	b.n++
	limit := b.small
	if (b.n/5)%2 == 0 {
		limit = b.big
	}
	n := copy(p[:min(len(p), limit)], b.data)
	b.data = b.data[n:]
	return n, nil
}

func TestReaderBulkBufferSwitching(t *testing.T) {
	var stream bytes.Buffer
	var want []string
	for i := range 3000 {
		data := fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, bytes.Repeat([]byte{'x'}, i%300))
		want = append(want, data)
		if i%7 == 0 {
			fmt.Fprintf(&stream, "event: e%d\r\n", i)
		}
		fmt.Fprintf(&stream, "data: %s\n\n", data)
	}
	for _, sizes := range [][2]int{{64 << 10, 7}, {5000, 100}, {4096, 1}} {
		rd := NewReader(&burstyReader{data: stream.Bytes(), big: sizes[0], small: sizes[1]})
		borrowed := false
		for i, w := range want {
			ev, err := rd.Next()
			if err != nil {
				t.Fatalf("sizes %v: event %d: %v", sizes, i, err)
			}
			if string(ev.Data) != w {
				t.Fatalf("sizes %v: event %d = %q, want %q", sizes, i, ev.Data, w)
			}
			if i%7 == 0 && string(ev.Name) != fmt.Sprintf("e%d", i) {
				t.Fatalf("sizes %v: event %d name = %q", sizes, i, ev.Name)
			}
			borrowed = borrowed || rd.bulk != nil
		}
		if _, err := rd.Next(); err != io.EOF {
			t.Fatalf("sizes %v: after the last event: %v, want EOF", sizes, err)
		}
		if sizes[0] > initialBufferSize && !borrowed {
			t.Errorf("sizes %v: bulk reads never borrowed the large buffer", sizes)
		}
		rd.Reset(nil)
		if rd.bulk != nil || len(rd.buf) != initialBufferSize {
			t.Errorf("sizes %v: Reset kept a %d-byte buffer (bulk %v)", sizes, len(rd.buf), rd.bulk != nil)
		}
	}
}

func TestAppendLineMatchesAppendEvent(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"", `{"a":1}`},
		{"", ""},
		{"delta", `{"type":"response.output_text.delta"}`},
	} {
		got := AppendLine(nil, []byte(tc.name), []byte(tc.data))
		want := AppendEvent(nil, []byte(tc.name), []byte(tc.data))
		if !bytes.Equal(got, want) {
			t.Errorf("AppendLine(%q, %q) = %q, want %q", tc.name, tc.data, got, want)
		}
	}
}

func TestEventMultiline(t *testing.T) {
	rd := NewReader(bytes.NewReader([]byte("data: one\n\ndata: a\ndata: b\n\n")))
	for _, want := range []struct {
		data      string
		multiline bool
	}{{"one", false}, {"a\nb", true}} {
		ev, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		if string(ev.Data) != want.data || ev.Multiline != want.multiline {
			t.Errorf("event %q multiline=%v, want %q multiline=%v", ev.Data, ev.Multiline, want.data, want.multiline)
		}
	}
}
