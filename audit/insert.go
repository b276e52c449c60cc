package audit

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// Inserting a row costs the writer more in the statement's run (the VDBE program's start and
// halt, the cursors it opens, the driver calls) and in binding its values (each text value
// is copied into SQLite's memory through its allocator) than in storing it. So rows are
// inserted several per statement, and a value equal to the one already bound to a parameter
// (the model, the backend, the headers of one client: most of a row) is not bound again.

// rowsPerInsert is how many rows the multi-row INSERT takes: enough to spread a statement's
// fixed cost thin, few enough that its program and parameters (23 per row) stay small.
const rowsPerInsert = 16

// maxSharedRowBytes bounds the values of a row inserted through the multi-row INSERT. A
// statement's bound values stay in SQLite's memory until they are bound anew, and SQLite has
// 256 MiB in all (wasm): a row with larger bodies is inserted on its own, and its bodies
// unbound right after.
const maxSharedRowBytes = 64 << 10

// columnsPerRow is the number of parameters of one row: every column of records but id.
const columnsPerRow = 23

// insertColumns is the column list of every INSERT, in parameter order.
const insertColumns = `INSERT INTO records (
	Time, IP, Model, Type, CompletionTokens, PromptTokens, TotalTokens,
	Tool, Multimodal, Headers, Request, Response,
	Backend, Status, LatencyMs, TTFTMs, Stream, Endpoint, RequestID, Tried, Error, Key, CostUSD
) VALUES `

// insertSQL returns the INSERT of n rows. Headers and the bodies are bound as BLOBs, which
// copies the bytes straight into SQLite's memory (binding TEXT from a []byte would first copy
// it to a Go string), and cast back to TEXT, as the origin stored them and json_extract expects.
func insertSQL(n int) string {
	var b strings.Builder
	b.WriteString(insertColumns)
	for row := range n {
		if row > 0 {
			b.WriteString(",\n")
		}
		b.WriteByte('(')
		for col := 1; col <= columnsPerRow; col++ {
			if col > 1 {
				b.WriteString(", ")
			}
			p := "?" + strconv.Itoa(row*columnsPerRow+col)
			switch col {
			case colHeaders, colRequest, colResponse:
				b.WriteString("CAST(" + p + " AS TEXT)")
			default:
				b.WriteString(p)
			}
		}
		b.WriteByte(')')
	}
	return b.String()
}

// Parameter positions within a row (1-based), in insertColumns order.
const (
	colTime = iota + 1
	colIP
	colModel
	colType
	colCompletionTokens
	colPromptTokens
	colTotalTokens
	colTool
	colMultimodal
	colHeaders
	colRequest
	colResponse
	colBackend
	colStatus
	colLatencyMs
	colTTFTMs
	colStream
	colEndpoint
	colRequestID
	colTried
	colError
	colKey
	colCostUSD
)

// insertStmt is a prepared INSERT of rows rows, with what is bound to each parameter as far as
// it is known, so that binding the same value again can be skipped.
type insertStmt struct {
	stmt *sqlite3.Stmt
	rows int
	last []boundValue // by parameter index - 1
}

// boundValue is a value known to be bound to a parameter. Only values worth comparing are
// tracked: text, which binding copies through SQLite's allocator, and the Headers bytes.
type boundValue struct {
	kind  boundKind
	text  string
	bytes []byte // owned copy
	n     int64
	// header and pol are the Headers and policy the bound bytes were encoded from (kind
	// boundBlob of the Headers parameter; nil otherwise): equal Headers under the same policy
	// encode to the same bytes, which need neither encoding nor comparing again.
	header http.Header
	pol    *policy
}

type boundKind uint8

const (
	boundUnknown boundKind = iota
	boundNull
	boundText
	boundBlob
	boundInt
)

func prepareInsert(conn *sqlite3.Conn, rows int) (*insertStmt, error) {
	stmt, _, err := conn.Prepare(insertSQL(rows))
	if err != nil {
		return nil, err
	}
	return &insertStmt{stmt: stmt, rows: rows, last: make([]boundValue, rows*columnsPerRow)}, nil
}

func (s *insertStmt) close() error {
	if s == nil {
		return nil
	}
	return s.stmt.Close()
}

// forget marks every parameter's value unknown, after the bindings were cleared or a bind
// failed midway.
func (s *insertStmt) forget() {
	for i := range s.last {
		s.last[i] = boundValue{bytes: s.last[i].bytes[:0]}
	}
}

// sameHeader reports whether a and b hold the same names with the same values in the same
// order, so that they encode alike.
func sameHeader(a, b http.Header) bool {
	return maps.EqualFunc(a, b, slices.Equal[[]string])
}

// clear unbinds every parameter, freeing SQLite's copies of the values.
func (s *insertStmt) clear() {
	_ = s.stmt.ClearBindings()
	s.forget()
}

func (s *insertStmt) text(param int, v string) error {
	b := &s.last[param-1]
	if b.kind == boundText && b.text == v {
		return nil
	}
	b.kind = boundUnknown
	if err := s.stmt.BindText(param, v); err != nil {
		return err
	}
	b.kind, b.text = boundText, v
	return nil
}

// optText binds v, or NULL when v is empty.
func (s *insertStmt) optText(param int, v string) error {
	if v == "" {
		return s.null(param)
	}
	return s.text(param, v)
}

func (s *insertStmt) null(param int) error {
	b := &s.last[param-1]
	if b.kind == boundNull {
		return nil
	}
	b.kind = boundUnknown
	if err := s.stmt.BindNull(param); err != nil {
		return err
	}
	b.kind = boundNull
	return nil
}

func (s *insertStmt) int64(param int, v int64) error {
	b := &s.last[param-1]
	if b.kind == boundInt && b.n == v {
		return nil
	}
	b.kind = boundUnknown
	if err := s.stmt.BindInt64(param, v); err != nil {
		return err
	}
	b.kind, b.n = boundInt, v
	return nil
}

func (s *insertStmt) bool(param int, v bool) error {
	var n int64
	if v {
		n = 1
	}
	return s.int64(param, n)
}

// blob binds v (NULL when nil), remembering a copy of it when remember is set.
func (s *insertStmt) blob(param int, v []byte, remember bool) error {
	if v == nil {
		return s.null(param)
	}
	b := &s.last[param-1]
	if remember && b.kind == boundBlob && bytes.Equal(b.bytes, v) {
		return nil
	}
	b.kind = boundUnknown
	if err := s.stmt.BindBlob(param, v); err != nil {
		return err
	}
	if remember {
		b.kind, b.bytes = boundBlob, append(b.bytes[:0], v...)
	}
	return nil
}

// float binds a float, which is never remembered: binding one allocates nothing.
func (s *insertStmt) float(param int, v float64) error {
	s.last[param-1].kind = boundUnknown
	return s.stmt.BindFloat(param, v)
}

// bindRow binds the columns of one record as the row-th row (0-based) of s. Binding copies
// each value into SQLite's memory, and the driver panics when that memory is exhausted (Go
// side, before any SQLite code runs, so the connection is intact): the panic is turned into
// an error. After an error the statement's bindings are unknown; the caller clears them.
func (w *Writer) bindRow(s *insertStmt, row int, it item) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	r, pol := it.rec, it.pol
	p := row * columnsPerRow
	w.buf = w.appendTime(w.buf[:0], r.Time)
	// The time differs from row to row: bound without being remembered.
	s.last[p+colTime-1].kind = boundUnknown
	errs := [...]error{
		s.stmt.BindRawText(p+colTime, w.buf),
		s.text(p+colIP, r.IP),
		s.text(p+colModel, r.Model),
		s.text(p+colType, r.Type),
		s.int64(p+colCompletionTokens, r.CompletionTokens),
		s.int64(p+colPromptTokens, r.PromptTokens),
		s.int64(p+colTotalTokens, r.TotalTokens),
		s.bool(p+colTool, r.Tool),
		s.bool(p+colMultimodal, r.Multimodal),
		w.bindHeaders(s, p+colHeaders, r, pol),
		s.blob(p+colRequest, pol.bodies.apply(r.Request), false),
		s.blob(p+colResponse, pol.bodies.apply(r.Response), false),
		s.text(p+colBackend, r.Backend),
		s.int64(p+colStatus, int64(r.Status)),
		s.int64(p+colLatencyMs, r.LatencyMs),
		w.bindTTFT(s, p+colTTFTMs, r),
		s.bool(p+colStream, r.Stream),
		s.text(p+colEndpoint, r.Endpoint),
		s.text(p+colRequestID, r.RequestID),
		s.text(p+colTried, r.Tried),
		s.text(p+colError, r.Error),
		s.optText(p+colKey, r.Key),
		w.bindCost(s, p+colCostUSD, r),
	}
	return errors.Join(errs[:]...)
}

// appendTime appends t in local time as TimeLayout, as t.Local().AppendFormat would. Rows come
// many to a second: the part up to the seconds is formatted once per second and zone.
func (w *Writer) appendTime(dst []byte, t time.Time) []byte {
	if sec := t.Unix(); sec != w.timeSec || time.Local != w.timeLoc || len(w.timeHead) == 0 {
		w.timeHead = t.Local().AppendFormat(w.timeHead[:0], TimeLayout[:len(TimeLayout)-len(".000000")])
		w.timeSec, w.timeLoc = sec, time.Local
	}
	dst = append(dst, w.timeHead...)
	us := t.Nanosecond() / 1000
	return append(dst, '.',
		byte('0'+us/100000), byte('0'+us/10000%10), byte('0'+us/1000%10),
		byte('0'+us/100%10), byte('0'+us/10%10), byte('0'+us%10))
}

// bindHeaders binds the Headers column. Rows of one client mostly carry the same headers: when
// those of the row last bound to the parameter are equal (and masked alike), the value bound
// stays, without encoding the headers again.
func (w *Writer) bindHeaders(s *insertStmt, param int, r *Record, pol *policy) error {
	if r.Headers == nil {
		return s.null(param)
	}
	b := &s.last[param-1]
	if b.kind == boundBlob && b.pol == pol && b.header != nil && sameHeader(b.header, r.Headers) {
		return nil
	}
	b.header, b.pol = nil, nil
	w.buf, w.keys = appendHeadersJSON(w.buf[:0], r.Headers, pol.redact, w.keys, &w.hbuf)
	if err := s.blob(param, w.buf, true); err != nil {
		return err
	}
	b.header, b.pol = r.Headers, pol
	return nil
}

func (w *Writer) bindCost(s *insertStmt, param int, r *Record) error {
	if r.CostUSD == nil {
		return s.null(param)
	}
	return s.float(param, *r.CostUSD)
}

func (w *Writer) bindTTFT(s *insertStmt, param int, r *Record) error {
	if !r.Stream || r.TTFTMs < 0 {
		return s.null(param)
	}
	return s.int64(param, r.TTFTMs)
}

// rowBytes is about how many bytes of a row's values are bound: its bodies, as stored.
func rowBytes(it item) int {
	return len(it.pol.bodies.apply(it.rec.Request)) + len(it.pol.bodies.apply(it.rec.Response))
}

// unbindBodies frees SQLite's copies of the bodies of the row-th row of s when they are
// large, so that they do not stay in SQLite's memory until the next row.
func (s *insertStmt) unbindBodies(row int, it item) {
	if rowBytes(it) <= maxSharedRowBytes {
		return
	}
	p := row * columnsPerRow
	_ = s.null(p + colRequest)
	_ = s.null(p + colResponse)
}
