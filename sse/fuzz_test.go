package sse

import (
	"bytes"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/goccy/go-json"
)

// FuzzReader checks that the events of a stream do not depend on how it is
// cut into reads, and that writing them back with AppendEvent and
// AppendComment and reading that again gives the same events.
func FuzzReader(f *testing.F) {
	for _, s := range []string{
		"data: a\n\n", "data: a\r\n\r\ndata: b\r\n\r\n", "data: a\r\rdata:b\r", "event: ping\nid: 1\ndata: {}\n\n",
		": c\ndata: x\n: d\ndata: y\n\n", "\xef\xbb\xbfdata: z", "data", "event: x\n\n", strings.Repeat("data: 0123456789\n", 8),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// maxLine bounds lines and events alike: every event read holds at most that much data.
		const maxLine = 64
		whole, errW := readAll(NewReaderSize(bytes.NewReader(in), maxLine))
		split, errS := readAll(NewReaderSize(iotest.OneByteReader(bytes.NewReader(in)), maxLine))
		if errW != errS || !reflect.DeepEqual(whole, split) {
			t.Fatalf("read sizes change the result:\nwhole %+v %v\nsplit %+v %v", whole, errW, split, errS)
		}
		if errW != io.EOF && errW != ErrLineTooLong && errW != ErrEventTooLarge {
			t.Fatalf("unexpected error %v", errW)
		}
		// A source that is a Waiter: the Reader gives its pooled buffer back between reads (its
		// own buffer is pooled only for lines of 1 KiB and more).
		const pooledLine = 4 << 10
		plain, errP := readAll(NewReaderSize(bytes.NewReader(in), pooledLine))
		waited, errV := readAll(NewReaderSize(&fuzzWaiter{Reader: iotest.HalfReader(bytes.NewReader(in))}, pooledLine))
		if errP != errV || !reflect.DeepEqual(plain, waited) {
			t.Fatalf("waiting between reads changes the result:\nplain  %+v %v\nwaited %+v %v", plain, errP, waited, errV)
		}
		var enc []byte
		for i, e := range whole {
			if len(e.Data) > maxLine {
				t.Fatalf("event of %d bytes passed the %d-byte limit", len(e.Data), maxLine)
			}
			if e.Comment {
				enc = AppendComment(enc, []byte(e.Data))
			} else {
				enc = AppendEvent(enc, []byte(e.Name), []byte(e.Data))
			}
			whole[i].ID = ""
		}
		again, err := readAll(NewReader(bytes.NewReader(enc)))
		if err != io.EOF || !reflect.DeepEqual(again, whole) {
			t.Fatalf("round trip through %q:\n got %+v %v\nwant %+v", enc, again, err, whole)
		}
	})
}

// FuzzThinkingStream cuts a text into deltas at fuzzed positions.
//
// For the Reasoning format the concatenated content and reasoning,
// flush included, must equal the whole text split on its tags, however it
// was cut. For ThinkTag the deltas alternate between reasoning and content
// by the cut bytes' high bit, and splitting the concatenated output on its
// tags must give back exactly the reasoning and content that went in.
func FuzzThinkingStream(f *testing.F) {
	f.Add("<think>R</think>A", []byte{3, 9})
	f.Add("a<think>b</think>c<think>d", []byte{1, 1, 1, 1, 1, 1, 1})
	f.Add("x </thi <thin", []byte{0x82, 4, 0x81})
	f.Fuzz(func(t *testing.T, text string, cuts []byte) {
		var pieces []string
		rest := text
		for _, c := range cuts {
			n := min(int(c&0x0f), len(rest))
			pieces, rest = append(pieces, rest[:n]), rest[n:]
		}
		pieces = append(pieces, rest)

		wantC, wantR := refSplit(text)
		if c, r := runSplit(t, pieces); c != wantC || r != wantR {
			t.Fatalf("cut %q: got %q/%q, want %q/%q", pieces, c, r, wantC, wantR)
		}

		if strings.Contains(text, "<") {
			return // the input's own tags would be indistinguishable
		}
		s := NewThinkingStream(ThinkTag)
		var out, inC, inR strings.Builder
		for i, p := range pieces {
			in := Piece{Content: []byte(p), HasContent: true}
			if i < len(cuts) && cuts[i]&0x80 != 0 {
				in = Piece{Reasoning: []byte(p)}
				inR.WriteString(p)
			} else {
				inC.WriteString(p)
			}
			got := s.Step(in)
			if len(got.Reasoning) != 0 || (in.HasContent && !got.HasContent) {
				t.Fatalf("step %q: %+v", p, got)
			}
			out.Write(got.Content)
		}
		out.Write(s.Flush().Content)
		if c, r := refSplit(out.String()); c != inC.String() || r != inR.String() {
			t.Fatalf("think_tag output %q splits into %q/%q, want %q/%q", out.String(), c, r, inC.String(), inR.String())
		}
	})
}

// FuzzTransform checks that no chunk makes the transformer panic, and that
// a valid JSON chunk stays valid JSON whatever is configured.
func FuzzTransform(f *testing.F) {
	f.Add([]byte(chatChunk(`"content":"<think>R</think>A"`)), uint8(0xff))
	f.Add([]byte(chatChunk(`"reasoning_content":"R","content":null`)), uint8(0x0e))
	f.Add([]byte(`{"choices":[],"usage":{"prompt_tokens":1}}`), uint8(0x10))
	f.Add([]byte(`{"choices":[{"text":"a","index":0}]}`), uint8(0x05))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		opts := Options{
			Kind:               Kind(mode & 1),
			Thinking:           Format(mode >> 1 & 3),
			DropUsageOnlyChunk: mode&0x10 != 0,
		}
		if mode&0x08 != 0 {
			opts.Prefix = "<think>\"\n"
		}
		tr := NewChunkTransformer(opts)
		valid := json.Valid(data)
		for range 2 {
			out, fwd := tr.Transform(data)
			if fwd && valid && !json.Valid(out) {
				t.Fatalf("%+v turned %s into invalid %s", opts, data, out)
			}
		}
		if fl := tr.Flush(); fl != nil && !json.Valid(fl) {
			t.Fatalf("invalid flush %s", fl)
		}
		if body, err := TransformResponse(data, opts.Kind, opts.Prefix, opts.Thinking); err == nil && valid && !json.Valid(body) {
			t.Fatalf("TransformResponse turned %s into invalid %s", data, body)
		}
	})
}

// fuzzWaiter is a Waiter whose waits return at once: the Reader then reads with a buffer taken
// again from its pool.
type fuzzWaiter struct{ io.Reader }

func (fuzzWaiter) WaitRead() error { return nil }
