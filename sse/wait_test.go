package sse

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// waitingSource is a Waiter over a list of reads: each WaitRead records whether the Reader held
// a buffer at the time, and reads return one chunk each.
type waitingSource struct {
	r         *Reader
	chunks    []string
	waits     int
	heldBufs  int   // WaitRead calls made while the Reader held a buffer
	waitErr   error // returned by WaitRead once the chunks are read
	readEmpty int   // reads with an empty p (a Waiter is never read that way)
}

func (s *waitingSource) WaitRead() error {
	s.waits++
	if s.r.buf != nil || s.r.own != nil {
		s.heldBufs++
	}
	if len(s.chunks) == 0 && s.waitErr != nil {
		return s.waitErr
	}
	return nil
}

func (s *waitingSource) Read(p []byte) (int, error) {
	if len(p) == 0 {
		s.readEmpty++
	}
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.chunks[0])
	if s.chunks[0] = s.chunks[0][n:]; s.chunks[0] == "" {
		s.chunks = s.chunks[1:]
	}
	return n, nil
}

// TestReaderWaitsWithoutBuffer checks that a Reader whose source is a Waiter waits for each read
// that finds nothing buffered holding no buffer, and only then: events split across reads, a
// pending partial line, and a read that filled the buffer (data is pending) read on without a
// wait; a Reader whose buffer grew for a long line keeps it and waits in its reads.
func TestReaderWaitsWithoutBuffer(t *testing.T) {
	long := strings.Repeat("x", 3000) // a line over the Reader's own buffer: it grows for good
	for _, tc := range []struct {
		name      string
		chunks    []string
		want      []string
		wantWaits int
	}{
		{"one event per read", []string{"data: a\n\n", "data: b\n\n"}, []string{"a", "b"}, 3},
		{"event split across reads", []string{"da", "ta: a\n", "\ndata: b\n\n"}, []string{"a", "b"}, 2},
		// The first read fills the buffer (1,024 bytes): the next one follows without a wait.
		{"full read", []string{"data: " + long[:1016] + "\n\n", "data: c\n\n"}, []string{long[:1016], "c"}, 2},
		{"grown buffer", []string{"data: " + long + "\n\n", "data: d\n\n"}, []string{long, "d"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &waitingSource{chunks: append([]string(nil), tc.chunks...)}
			rd := NewReader(src)
			src.r = rd
			for i, want := range tc.want {
				ev, err := rd.Next()
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if string(ev.Data) != want {
					t.Fatalf("event %d = %.40q, want %.40q", i, ev.Data, want)
				}
			}
			if _, err := rd.Next(); err != io.EOF {
				t.Fatalf("after the events: %v, want EOF", err)
			}
			if src.waits != tc.wantWaits {
				t.Errorf("%d waits, want %d", src.waits, tc.wantWaits)
			}
			if src.heldBufs != 0 {
				t.Errorf("%d of %d waits held a buffer", src.heldBufs, src.waits)
			}
			if src.readEmpty != 0 {
				t.Errorf("the Waiter was read with an empty buffer %d times", src.readEmpty)
			}
			rd.Reset(nil)
			if len(rd.buf) != initialBufferSize || rd.own == nil {
				t.Errorf("after Reset: a %d-byte buffer, pooled %v", len(rd.buf), rd.own != nil)
			}
		})
	}
}

// TestReaderWaitError checks that an error of WaitRead ends the stream as a read error would,
// after the events already read, and sticks.
func TestReaderWaitError(t *testing.T) {
	cut := errors.New("upstream went away")
	src := &waitingSource{chunks: []string{"data: a\n\n"}, waitErr: cut}
	rd := NewReader(src)
	src.r = rd
	if ev, err := rd.Next(); err != nil || string(ev.Data) != "a" {
		t.Fatalf("first event: %q, %v", ev.Data, err)
	}
	for range 2 {
		if _, err := rd.Next(); !errors.Is(err, cut) {
			t.Fatalf("after the wait failed: %v, want %v", err, cut)
		}
	}
	if rd.buf == nil {
		t.Error("the Reader was left without a buffer after a failed wait")
	}
}
