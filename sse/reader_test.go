package sse

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// ev is a copy of an Event that outlives the next call to Next.
type ev struct {
	Name, Data, ID string
	Comment        bool
}

func readAll(r *Reader) ([]ev, error) {
	var evs []ev
	for {
		e, err := r.Next()
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev{string(e.Name), string(e.Data), string(e.ID), e.Comment})
	}
}

// wrappers deliver the same stream in different read sizes, so that every
// line, terminator and CRLF pair is also seen split across reads.
var wrappers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"onebyte", iotest.OneByteReader},
	{"half", iotest.HalfReader},
	{"dataerr", iotest.DataErrReader},
}

func TestReader(t *testing.T) {
	long := strings.Repeat("x", 1<<20)
	tests := []struct {
		name string
		in   string
		want []ev
	}{
		{"lf", "data: a\n\ndata: b\n\n", []ev{{Data: "a"}, {Data: "b"}}},
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", []ev{{Data: "a"}, {Data: "b"}}},
		{"cr", "data: a\r\rdata: b\r\r", []ev{{Data: "a"}, {Data: "b"}}},
		{"mixed endings", "data: a\r\n\rdata: b\n\r\n", []ev{{Data: "a"}, {Data: "b"}}},
		{"no space after colon", "data:a\n\n", []ev{{Data: "a"}}},
		{"only one space removed", "data:  a \n\n", []ev{{Data: " a "}}},
		{"colon in value", `data: {"a":"b:c"}` + "\n\n", []ev{{Data: `{"a":"b:c"}`}}},
		{"multi-line data", "data: a\ndata:\ndata: c\n\n", []ev{{Data: "a\n\nc"}}},
		{"field without colon is empty data", "data\n\n", []ev{{Data: ""}}},
		{"empty data is an event", "data:\n\n", []ev{{Data: ""}}},
		{"comments", ": hello\n:\n:no space\n\n", []ev{{Comment: true, Data: "hello"}, {Comment: true}, {Comment: true, Data: "no space"}}},
		{"comment inside event comes first", "data: a\n: ping\ndata: b\n\n", []ev{{Comment: true, Data: "ping"}, {Data: "a\nb"}}},
		{"event name and id", "event: ping\nid: 7\ndata: {}\n\n", []ev{{Name: "ping", ID: "7", Data: "{}"}}},
		{"name does not leak", "event: x\ndata: 1\n\ndata: 2\n\n", []ev{{Name: "x", Data: "1"}, {Data: "2"}}},
		{"last name wins", "event: a\nevent: b\ndata: 1\n\n", []ev{{Name: "b", Data: "1"}}},
		{"events without data are skipped", "event: x\n\nid: 3\n\n\n\ndata: y\n\n", []ev{{Data: "y"}}},
		{"id with NUL ignored", "id: a\x00b\ndata: 1\n\n", []ev{{Data: "1"}}},
		{"unknown fields and retry ignored", "retry: 10\nfoo: bar\ndata: 1\n\n", []ev{{Data: "1"}}},
		{"trailing event without blank line", "data: a\n\ndata: b\n", []ev{{Data: "a"}, {Data: "b"}}},
		{"trailing event without newline", "data: a\n\ndata: b", []ev{{Data: "a"}, {Data: "b"}}},
		{"trailing multi-line event", "data: a\ndata: b", []ev{{Data: "a\nb"}}},
		{"byte order mark", "\xef\xbb\xbfdata: a\n\n", []ev{{Data: "a"}}},
		{"bom only at start", "data: a\n\n\xef\xbb\xbfdata: b\n\n", []ev{{Data: "a"}}},
		{"long line", "data: " + long + "\n\ndata: b\n\n", []ev{{Data: long}, {Data: "b"}}},
		{"long multi-line", "data: " + long + "\ndata: " + long + "\n\n", []ev{{Data: long + "\n" + long}}},
		{"empty stream", "", nil},
		{"blank lines only", "\n\r\n\r", nil},
	}
	for _, tt := range tests {
		for _, w := range wrappers {
			if strings.HasPrefix(tt.name, "long") && w.name == "onebyte" && testing.Short() {
				continue
			}
			t.Run(tt.name+"/"+w.name, func(t *testing.T) {
				got, err := readAll(NewReader(w.wrap(strings.NewReader(tt.in))))
				if err != io.EOF {
					t.Fatalf("err = %v, want io.EOF", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("events = %+v\nwant %+v", got, tt.want)
				}
			})
		}
	}
}

func TestReaderMaxLine(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []ev
		err  error
	}{
		{"at the limit", "data: 0123456789\n\n", []ev{{Data: "0123456789"}}, io.EOF},
		{"at the limit, crlf", "data: 0123456789\r\n\r\n", []ev{{Data: "0123456789"}}, io.EOF},
		{"over the limit", "data: a\n\ndata: 01234567890\n\n", []ev{{Data: "a"}}, ErrLineTooLong},
		{"over the limit at eof", "data: a\n\ndata: 01234567890", []ev{{Data: "a"}}, ErrLineTooLong},
		{"event at the limit", "data: 0123456\ndata: 01234567\n\n", []ev{{Data: "0123456\n01234567"}}, io.EOF},
		{"event of empty lines at the limit", strings.Repeat("data\n", 17) + "\n", []ev{{Data: strings.Repeat("\n", 16)}}, io.EOF},
		{"event over the limit", "data: a\n\ndata: 0123456\ndata: 012345678\n\n", []ev{{Data: "a"}}, ErrEventTooLarge},
		{"event over the limit at eof", "data: 0123456\ndata: 012345678", nil, ErrEventTooLarge},
		{"many short lines", strings.Repeat("data: 0123456789\n", 50) + "\n", nil, ErrEventTooLarge},
		{"comments do not count", "data: 0123456789\n" + strings.Repeat(": 0123456789\n", 5) + "data: 01234\n\n",
			append(slices.Repeat([]ev{{Comment: true, Data: "0123456789"}}, 5), ev{Data: "0123456789\n01234"}), io.EOF},
	}
	for _, tt := range tests {
		for _, w := range wrappers {
			t.Run(tt.name+"/"+w.name, func(t *testing.T) {
				r := NewReaderSize(w.wrap(strings.NewReader(tt.in)), 16)
				got, err := readAll(r)
				if err != tt.err {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("events = %+v\nwant %+v", got, tt.want)
				}
				if _, err := r.Next(); err != tt.err {
					t.Errorf("error is not sticky: %v", err)
				}
			})
		}
	}
}

func TestReaderErrorMidStream(t *testing.T) {
	boom := errors.New("connection reset")
	for _, w := range wrappers {
		t.Run(w.name, func(t *testing.T) {
			src := io.MultiReader(strings.NewReader("data: a\n\ndata: {\"trunc"), iotest.ErrReader(boom))
			r := NewReader(w.wrap(src))
			got, err := readAll(r)
			if err != boom {
				t.Fatalf("err = %v, want %v", err, boom)
			}
			if want := []ev{{Data: "a"}}; !reflect.DeepEqual(got, want) {
				t.Errorf("events = %+v, want %+v (the cut event is dropped)", got, want)
			}
		})
	}
}

func TestReaderNoProgress(t *testing.T) {
	_, err := NewReader(zeroReader{}).Next()
	if err != io.ErrNoProgress {
		t.Fatalf("err = %v, want io.ErrNoProgress", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestReaderBuffered(t *testing.T) {
	const in = "data: a\r\n\r\n: c\r\ndata: b\r\n\r\n"
	r := NewReader(strings.NewReader(in))
	want := []int{len(": c\r\ndata: b\r\n\r\n"), len("data: b\r\n\r\n"), 0}
	for i, w := range want {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		// The LF of the last CRLF is not counted: the proxy must flush
		// now, not block in Next for bytes that hold no event.
		if got := r.Buffered(); got != w {
			t.Errorf("after event %d: Buffered() = %d, want %d", i, got, w)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("err = %v, want io.EOF", err)
	}
}

func TestReaderReset(t *testing.T) {
	r := NewReaderSize(strings.NewReader("event: x\ndata: a\ndata: b"), 64)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	r.Reset(strings.NewReader("data: c\n\n"))
	got, err := readAll(r)
	if err != io.EOF || !reflect.DeepEqual(got, []ev{{Data: "c"}}) {
		t.Fatalf("after Reset: %+v, %v", got, err)
	}
	var zero Reader
	zero.Reset(strings.NewReader("data: z\n\n"))
	if got, err := readAll(&zero); err != io.EOF || !reflect.DeepEqual(got, []ev{{Data: "z"}}) {
		t.Fatalf("zero Reader after Reset: %+v, %v", got, err)
	}
}

// loopReader serves the same bytes forever, in reads of at most n bytes.
type loopReader struct {
	b   []byte
	off int
	n   int
}

func (l *loopReader) Read(p []byte) (int, error) {
	p = p[:min(len(p), l.n)]
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.b[l.off:])
		n += c
		l.off = (l.off + c) % len(l.b)
	}
	return n, nil
}

func TestReaderNoAllocs(t *testing.T) {
	chunk := []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}` + "\n\n")
	for _, size := range []int{len(chunk), 7, 4096} {
		r := NewReader(&loopReader{b: chunk, n: size})
		allocs := testing.AllocsPerRun(1000, func() {
			e, err := r.Next()
			if err != nil || !bytes.HasPrefix(e.Data, []byte(`{"id"`)) {
				t.Fatalf("Next: %q, %v", e.Data, err)
			}
		})
		if allocs != 0 {
			t.Errorf("read size %d: %v allocs per event, want 0", size, allocs)
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestReaderEventCapBoundsMemory feeds one event of short data lines many times the size limit
// long: the Reader must fail with ErrEventTooLarge as soon as the event's data would pass the
// limit, having read little more than the limit from the stream and holding no data buffer
// larger than it.
func TestReaderEventCapBoundsMemory(t *testing.T) {
	line := []byte("data: " + strings.Repeat("x", 1000) + "\n")
	for _, maxLine := range []int{64 << 10, 0} {
		t.Run(strconv.Itoa(maxLine), func(t *testing.T) {
			limit := maxLine
			if limit == 0 {
				limit = DefaultMaxLineSize
			}
			src := &countingReader{r: io.MultiReader(
				io.LimitReader(&loopReader{b: line, n: 4096}, int64(16*limit)),
				strings.NewReader("\n\n"))}
			r := NewReaderSize(src, maxLine)
			got, err := readAll(r)
			if err != ErrEventTooLarge {
				t.Fatalf("err = %v after %d events, want ErrEventTooLarge", err, len(got))
			}
			if len(got) != 0 {
				t.Errorf("%d events before the error, want none", len(got))
			}
			// What was read and not kept as data sits in the read buffer (at most a line, or
			// the bulk buffer while the stream comes in bulk).
			if most := limit + bulkBufferSize + len(line); src.n > most {
				t.Errorf("read %d bytes of the stream before failing, want at most %d", src.n, most)
			}
			if cap(r.data) > limit {
				t.Errorf("event data buffer has capacity %d, over the limit %d", cap(r.data), limit)
			}
			if _, err := r.Next(); err != ErrEventTooLarge {
				t.Errorf("error is not sticky: %v", err)
			}
		})
	}
}
