package sse

import (
	"bytes"
	"errors"
	"io"
	"sync"
)

// DefaultMaxLineSize is the longest line a Reader accepts unless told
// otherwise, and also the most data one event may carry. A single chat
// chunk is normally well under 4 KiB, but tool calls and some vendors'
// final chunks can be much larger.
const DefaultMaxLineSize = 4 << 20

// initialBufferSize is the starting size of a Reader's buffer. It is small
// because a gateway holds one Reader per open stream: 1 KiB holds a typical
// chat chunk (200–500 bytes) whole. Bursts borrow the bulk buffer instead, and
// the buffer grows only for streams that actually send longer lines. A Reader
// whose source is a Waiter gives this buffer back to smallPool while it waits
// with nothing buffered, so idle streams hold none.
const initialBufferSize = 1 << 10

var smallPool = sync.Pool{New: func() any { b := make([]byte, initialBufferSize); return &b }}

// bulkBufferSize is the size of the buffer a Reader borrows while reads keep filling its own:
// the upstream is sending faster than events are consumed, and bigger reads save system calls.
// The buffer goes back to bulkPool as soon as the Reader has drained it, so thousands of idle
// streams hold only their small buffers.
const bulkBufferSize = 32 << 10

var bulkPool = sync.Pool{New: func() any { b := make([]byte, bulkBufferSize); return &b }}

// A Waiter is a source that can wait for its next bytes without being given a buffer. A
// Reader whose source is a Waiter, and that has nothing buffered and nothing pending (its last
// read did not fill its buffer), gives its own buffer back to a pool, calls WaitRead, and takes
// a buffer again for the read that follows. Thousands of idle Readers then hold no buffer.
//
// WaitRead returns when the source may have data, or with the error a read would have
// returned. Returning early is allowed: the read that follows then waits, with the buffer.
type Waiter interface {
	WaitRead() error
}

// ErrLineTooLong is returned by Reader.Next when a line exceeds the
// Reader's maximum line size.
var ErrLineTooLong = errors.New("sse: line too long")

// ErrEventTooLarge is returned by Reader.Next when the data of one event,
// its "data:" lines joined, would exceed the Reader's maximum line size. An
// event of many short lines is bounded like one long line: without the
// bound, an upstream that never ends its event would be buffered whole.
var ErrEventTooLarge = errors.New("sse: event too large")

// Event is one server-sent event, or one comment line.
//
// The byte slices alias the Reader's internal buffers and are valid only
// until the next call to Next. Copy them to keep them.
type Event struct {
	// Name is the value of the event's last "event:" field; empty means
	// the default type ("message").
	Name []byte
	// Data is the event's data: the values of its "data:" fields joined
	// by "\n". For a comment it is the comment text.
	Data []byte
	// ID is the value of the event's last "id:" field, if it had one.
	ID []byte
	// Comment marks a comment line (one starting with ':'). Only Data is
	// set; the leading colon and one following space are removed.
	Comment bool
	// Multiline is set when Data joins several data lines, so it holds "\n".
	// Without it Data holds no line break, and AppendLine can frame it.
	Multiline bool
}

// Reader reads server-sent events from an io.Reader, following the WHATWG
// event stream format: LF, CRLF or CR line endings, "field: value" lines
// with one optional space after the colon, multi-line data, and a leading
// byte order mark.
//
// It deviates from the standard in two ways a proxy needs. Comments are
// returned as events (Comment set) instead of being dropped, so the caller
// may forward them; a comment inside an event is returned before that
// event. And a final event that is not followed by a blank line is still
// returned when the stream ends cleanly, because upstreams that drop the
// last newline do exist and losing their last chunk loses the usage.
//
// Events without any "data:" field are skipped, as the standard says; an
// event whose data is empty ("data:" alone) is returned with empty Data.
// "retry:" fields are ignored.
type Reader struct {
	rd      io.Reader
	buf     []byte
	r, w    int
	err     error   // sticky: read error, ErrLineTooLong or ErrEventTooLarge
	maxLine int     // bounds a line, and the data of an event
	skipLF  bool    // the last line ended in '\r'; a '\n' right after belongs to it
	full    bool    // the last read filled all the free space: data comes in bulk
	small   []byte  // the Reader's own buffer while buf is borrowed from bulkPool
	bulk    *[]byte // the pool's handle of the borrowed buffer, or nil
	own     *[]byte // smallPool's handle of the Reader's own buffer; nil when it is not the pool's
	waiter  Waiter  // rd, when it is one
	started bool    // the byte order mark check is done

	// State of the event being assembled.
	nData    int    // number of data lines seen
	pinStart int    // when nData==1, the data value still sits in buf
	pinEnd   int    // at buf[pinStart:pinEnd]; pinStart<0 once copied out
	data     []byte // joined data once it no longer sits in buf
	name     []byte
	id       []byte
	hasID    bool
}

// NewReader returns a Reader reading from rd with DefaultMaxLineSize.
func NewReader(rd io.Reader) *Reader {
	return NewReaderSize(rd, DefaultMaxLineSize)
}

// NewReaderSize returns a Reader reading from rd that fails with
// ErrLineTooLong on lines longer than maxLine bytes (line terminator not
// counted), and with ErrEventTooLarge on an event whose data would exceed
// maxLine bytes, so neither buffer ever holds more. A maxLine <= 0 means
// DefaultMaxLineSize.
func NewReaderSize(rd io.Reader, maxLine int) *Reader {
	if maxLine <= 0 {
		maxLine = DefaultMaxLineSize
	}
	r := &Reader{rd: rd, maxLine: maxLine, pinStart: -1}
	r.waiter, _ = rd.(Waiter)
	r.own, r.buf = newBuffer(maxLine)
	return r
}

// newBuffer returns a Reader's own buffer for lines of up to maxLine bytes: one of smallPool's,
// with its handle, unless maxLine is below the pool's size.
func newBuffer(maxLine int) (*[]byte, []byte) {
	if maxLine+1 < initialBufferSize {
		return nil, make([]byte, maxLine+1)
	}
	h := smallPool.Get().(*[]byte)
	return h, *h
}

// Reset discards all state and makes r read from rd, so that Readers can be
// pooled. A buffer that grew for a long line is released. Reset also makes
// a zero Reader usable, with DefaultMaxLineSize.
func (r *Reader) Reset(rd io.Reader) {
	if r.bulk != nil {
		bulkPool.Put(r.bulk)
		r.buf, r.bulk, r.small = r.small, nil, nil
	}
	maxLine := r.maxLine
	if maxLine <= 0 {
		maxLine = DefaultMaxLineSize
	}
	own, buf := r.own, r.buf
	if own == nil && (cap(buf) == 0 || cap(buf) > initialBufferSize) {
		own, buf = newBuffer(maxLine)
	}
	data := r.data[:0]
	if cap(data) > 16*initialBufferSize {
		data = nil
	}
	*r = Reader{
		rd:       rd,
		buf:      buf[:cap(buf)],
		own:      own,
		maxLine:  maxLine,
		pinStart: -1,
		data:     data,
		name:     r.name[:0],
		id:       r.id[:0],
	}
	r.waiter, _ = rd.(Waiter)
}

// Buffered returns the number of bytes already read from the underlying
// reader and not yet consumed by Next. A proxy flushes its output when it
// is zero: the next call to Next would block on the network.
//
// A partial next event counts as buffered; an event is therefore flushed
// late only if the upstream split the following event across writes.
func (r *Reader) Buffered() int {
	n := r.w - r.r
	if n > 0 && r.skipLF && r.buf[r.r] == '\n' {
		n--
	}
	return n
}

// Next returns the next event or comment. It returns io.EOF after the last
// event of a stream that ended cleanly, ErrLineTooLong for an oversized
// line, ErrEventTooLarge for an oversized event (checked as each data line
// arrives, before it is kept), and any other error of the underlying reader
// as is; an event cut short by such an error is discarded. Every error but
// io.EOF is sticky.
func (r *Reader) Next() (Event, error) {
	for {
		start, end, err := r.readLine()
		if err != nil {
			if err == io.EOF && r.nData > 0 {
				return r.dispatch(), nil
			}
			r.resetEvent()
			return Event{}, err
		}
		line := r.buf[start:end]
		if !r.started {
			r.started = true
			if bytes.HasPrefix(line, []byte("\xef\xbb\xbf")) {
				line = line[3:]
			}
		}
		if len(line) == 0 {
			if r.nData > 0 {
				return r.dispatch(), nil
			}
			r.resetEvent()
			continue
		}
		if line[0] == ':' {
			return Event{Data: trimSpace1(line[1:]), Comment: true}, nil
		}
		field, value := line, line[len(line):]
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], trimSpace1(line[i+1:])
		}
		switch string(field) {
		case "data":
			r.nData++
			if r.nData == 1 {
				// Leave the value where it is: a single-line event is
				// then returned without copying it anywhere.
				r.pinEnd = end
				r.pinStart = end - len(value)
				break
			}
			size := len(r.data)
			if r.pinStart >= 0 {
				size = r.pinEnd - r.pinStart
			}
			if size+1+len(value) > r.maxLine {
				r.resetEvent()
				_, _, err := r.fail(ErrEventTooLarge)
				return Event{}, err
			}
			r.unpin()
			r.reserve(1 + len(value))
			r.data = append(r.data, '\n')
			r.data = append(r.data, value...)
		case "event":
			r.name = append(r.name[:0], value...)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				r.id = append(r.id[:0], value...)
				r.hasID = true
			}
		}
	}
}

// trimSpace1 removes one leading space, as the format prescribes.
func trimSpace1(b []byte) []byte {
	if len(b) > 0 && b[0] == ' ' {
		return b[1:]
	}
	return b
}

// dispatch returns the assembled event and clears the state for the next
// one. The returned slices stay valid because nothing is written to the
// buffers before the next call to Next.
func (r *Reader) dispatch() Event {
	ev := Event{Name: r.name, Multiline: r.nData > 1}
	if r.pinStart >= 0 {
		ev.Data = r.buf[r.pinStart:r.pinEnd]
	} else {
		ev.Data = r.data
	}
	if r.hasID {
		ev.ID = r.id
	}
	r.resetEvent()
	return ev
}

func (r *Reader) resetEvent() {
	r.nData = 0
	r.pinStart = -1
	r.data = r.data[:0]
	r.name = r.name[:0]
	r.id = r.id[:0]
	r.hasID = false
}

// unpin moves a pinned single data value into r.data.
func (r *Reader) unpin() {
	if r.pinStart >= 0 {
		r.data = r.data[:0]
		r.reserve(r.pinEnd - r.pinStart)
		r.data = append(r.data, r.buf[r.pinStart:r.pinEnd]...)
		r.pinStart = -1
	}
}

// reserve makes room in r.data for n more bytes, doubling its capacity as
// append would but never beyond maxLine: the callers checked that the data
// stays within it, so a large event's buffer is never larger than allowed.
func (r *Reader) reserve(n int) {
	need := len(r.data) + n
	if need <= cap(r.data) {
		return
	}
	nd := make([]byte, len(r.data), max(min(2*cap(r.data), r.maxLine), need))
	copy(nd, r.data)
	r.data = nd
}

// readLine returns the offsets in r.buf of the next line, without its
// terminator. The offsets are valid until the next readLine. At the end of
// the stream an unterminated last line is returned as a line before the
// error.
func (r *Reader) readLine() (start, end int, err error) {
	scanned := 0 // bytes after r.r known to hold no line terminator
	for {
		if r.skipLF && r.r < r.w {
			if r.buf[r.r] == '\n' {
				r.r++
			}
			r.skipLF = false
		}
		if i := indexEOL(r.buf[r.r+scanned : r.w]); i >= 0 {
			start, end = r.r, r.r+scanned+i
			if end-start > r.maxLine {
				return r.fail(ErrLineTooLong)
			}
			r.skipLF = r.buf[end] == '\r'
			r.r = end + 1
			return start, end, nil
		}
		scanned = r.w - r.r
		if r.err != nil {
			if r.w > r.r {
				start, end = r.r, r.w
				if end-start > r.maxLine {
					return r.fail(ErrLineTooLong)
				}
				r.r = r.w
				return start, end, nil
			}
			return 0, 0, r.err
		}
		if scanned > r.maxLine {
			return r.fail(ErrLineTooLong)
		}
		r.fill()
	}
}

func (r *Reader) fail(err error) (int, int, error) {
	r.err = err
	r.r, r.w = 0, 0
	return 0, 0, err
}

// indexEOL returns the index of the first '\n' or '\r' in b, or -1.
func indexEOL(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return bytes.IndexByte(b, '\r')
	}
	if j := bytes.IndexByte(b[:i], '\r'); j >= 0 {
		return j
	}
	return i
}

// fill reads more data into the buffer, first sliding unconsumed bytes (and
// a pinned data value) to the front, and growing the buffer when a line
// does not fit.
func (r *Reader) fill() {
	r.compact()
	if r.w == len(r.buf) && r.pinStart >= 0 {
		// Keeping the pinned value would force the buffer to grow; copy
		// it out instead so the buffer only ever holds one line.
		r.unpin()
		r.compact()
	}
	switch {
	case r.w == len(r.buf):
		// readLine bounds the pending line to maxLine, so this grows.
		r.returnBulk(false)
		r.grow(min(2*len(r.buf), r.maxLine+1))
	case r.full && r.bulk == nil && len(r.buf) < bulkBufferSize && r.maxLine+1 > bulkBufferSize:
		r.bulk = bulkPool.Get().(*[]byte)
		r.small = r.buf
		r.buf = *r.bulk
		copy(r.buf, r.small[:r.w])
	case !r.full && r.bulk != nil && r.w <= len(r.small):
		// The burst is over: go back to the small buffer before blocking in Read.
		r.returnBulk(true)
	}
	if r.w == 0 && !r.full && r.waiter != nil && r.own != nil && r.bulk == nil {
		if r.wait(); r.err != nil {
			return
		}
	}
	for range 100 {
		free := len(r.buf) - r.w
		n, err := r.rd.Read(r.buf[r.w:])
		if n < 0 || n > free {
			r.err = errors.New("sse: reader returned invalid count")
			return
		}
		r.full = n == free
		r.w += n
		if err != nil {
			r.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	r.err = io.ErrNoProgress
}

// wait lets the Waiter source wait for data while the Reader holds no buffer (fill checked
// that nothing is buffered or pending, and that the buffer is smallPool's). A gateway's open
// streams spend most of their life here.
func (r *Reader) wait() {
	smallPool.Put(r.own)
	r.own, r.buf = nil, nil
	err := r.waiter.WaitRead()
	r.own, r.buf = newBuffer(r.maxLine)
	if err != nil {
		r.err = err
	}
}

// returnBulk gives a borrowed buffer back to the pool, moving the buffered bytes to the
// Reader's own buffer when keep is set (they fit: the caller checked), or to a private copy of
// the borrowed one otherwise.
func (r *Reader) returnBulk(keep bool) {
	if r.bulk == nil {
		return
	}
	if keep {
		copy(r.small, r.buf[:r.w])
		r.buf = r.small
	} else {
		r.buf = append([]byte(nil), r.buf...)
	}
	bulkPool.Put(r.bulk)
	r.bulk, r.small = nil, nil
}

// grow replaces the buffer with a larger one holding the same bytes. A pooled buffer goes
// back to its pool: the grown one is the Reader's until Reset.
func (r *Reader) grow(size int) {
	nb := make([]byte, size)
	copy(nb, r.buf[:r.w])
	r.buf = nb
	if r.own != nil {
		smallPool.Put(r.own)
		r.own = nil
	}
}

// compact slides the live part of the buffer to its front.
func (r *Reader) compact() {
	from := r.r
	if r.pinStart >= 0 && r.pinStart < from {
		from = r.pinStart
	}
	if from == 0 {
		return
	}
	copy(r.buf, r.buf[from:r.w])
	r.w -= from
	r.r -= from
	if r.pinStart >= 0 {
		r.pinStart -= from
		r.pinEnd -= from
	}
}
