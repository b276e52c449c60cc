package dashboard

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-json"
	"github.com/ncruces/go-sqlite3"
	"go.uber.org/zap"

	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/internal/apierr"
)

// OpenAI-shaped errors, as the gateway answers its own.
const (
	errTypeInvalidRequest = "invalid_request_error"
	errTypeServer         = "server_error"
)

type apiError struct {
	status  int
	typ     string
	param   string
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

func writeError(w http.ResponseWriter, e *apiError) {
	writeBody(w, e.status, apierr.OpenAI(e.typ, e.code, e.param, e.message))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, apierr.OpenAI(errTypeServer, "", "", "encoding the answer failed")
	}
	writeBody(w, status, body)
}

// writeBody sends a JSON body the browser must neither cache nor sniff.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// serveAPI answers api/<name>.
func (h *Handler) serveAPI(w http.ResponseWriter, r *http.Request, name string) {
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.QueryTimeout))
	defer cancel()
	var (
		v   any
		err error
	)
	if id, ok := strings.CutPrefix(name, "call/"); ok {
		v, err = h.call(ctx, r, id)
	} else {
		var fn func(context.Context, *params) (any, error)
		switch name {
		case "overview":
			fn = h.overview
		case "summary":
			fn = h.summary
		case "series":
			fn = h.series
		case "top":
			fn = h.top
		case "failures":
			fn = h.failures
		default:
			writeError(w, &apiError{status: http.StatusNotFound, typ: errTypeInvalidRequest, code: "not_found",
				message: "unknown API path: want overview, summary, series, top, failures or call/{id}"})
			return
		}
		var p *params
		if p, err = parseParams(r.URL.Query(), h.now()); err == nil {
			v, err = h.query(ctx, p, fn)
		}
	}
	if err != nil {
		h.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// query runs fn in one of the concurrent query slots.
func (h *Handler) query(ctx context.Context, p *params, fn func(context.Context, *params) (any, error)) (any, error) {
	release, err := h.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return fn(ctx, p)
}

func (h *Handler) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var pe *paramError
	var ae *apiError
	switch {
	case errors.As(err, &pe):
		writeError(w, &apiError{status: http.StatusBadRequest, typ: errTypeInvalidRequest, param: pe.param,
			code: "invalid_parameter", message: pe.Error()})
	case errors.As(err, &ae):
		writeError(w, ae)
	case r.Context().Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sqlite3.INTERRUPT)):
		// query_timeout, not the caller, ended the work.
		writeError(w, &apiError{status: http.StatusServiceUnavailable, typ: errTypeServer, code: "query_timeout",
			message: "the query took longer than query_timeout (" + time.Duration(h.QueryTimeout).String() + ")"})
	case r.Context().Err() != nil:
		// The caller left; nobody reads an answer.
	default:
		h.logger.Error("dashboard query failed", zap.String("uri", r.RequestURI), zap.Error(err))
		writeError(w, &apiError{status: http.StatusInternalServerError, typ: errTypeServer, code: "database_error",
			message: "reading the audit database failed; see the server log"})
	}
}

// aggregate runs the aggregation over every file.
func (h *Handler) aggregate(ctx context.Context, p *params) (*aggregator, []dbFile, error) {
	a := newAggregator(p)
	files, err := h.forEachFile(ctx, p, func(r *reader) error { return r.aggregate(p, a) })
	return a, files, err
}

// Answer shapes (docs/dashboard.md).

type totalsJSON struct {
	Requests         int64   `json:"requests"`
	Errors           int64   `json:"errors"`
	ErrorRate        float64 `json:"error_rate"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	TotalTokens      int64   `json:"total_tokens"`
	CostUSD          float64 `json:"cost_usd"`
	CostedRequests   int64   `json:"costed_requests"`
}

func totalsOf(s *sums) totalsJSON {
	t := totalsJSON{
		Requests: s.Requests, Errors: s.Errors,
		PromptTokens: s.PromptTokens, CompletionTokens: s.CompletionTokens, TotalTokens: s.TotalTokens,
		CostUSD: float64(s.CostNanos) / 1e9, CostedRequests: s.Costed,
	}
	if s.Requests > 0 {
		t.ErrorRate = float64(s.Errors) / float64(s.Requests)
	}
	return t
}

// pct is a percentile in ms, null when there is no value.
type pct *int64

func pctOf(h *hist, p float64) pct {
	if v, ok := h.percentile(p); ok {
		return &v
	}
	return nil
}

type summaryJSON struct {
	Query map[string]any `json:"query"`
	totalsJSON
	LatencyP50 pct      `json:"latency_p50_ms"`
	LatencyP95 pct      `json:"latency_p95_ms"`
	TTFTP50    pct      `json:"ttft_p50_ms"`
	TTFTP95    pct      `json:"ttft_p95_ms"`
	Files      []string `json:"files"`
}

func summaryOf(a *aggregator, files []dbFile) *summaryJSON {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = filepath.Base(f.path)
	}
	return &summaryJSON{
		Query:      a.p.describe(),
		totalsJSON: totalsOf(&a.total),
		LatencyP50: pctOf(&a.lat, 0.50), LatencyP95: pctOf(&a.lat, 0.95),
		TTFTP50: pctOf(&a.ttft, 0.50), TTFTP95: pctOf(&a.ttft, 0.95),
		Files: names,
	}
}

func (h *Handler) summary(ctx context.Context, p *params) (any, error) {
	p.noSeries = true
	a, files, err := h.aggregate(ctx, p)
	if err != nil {
		return nil, err
	}
	return summaryOf(a, files), nil
}

// seriesGroups is how many names a series stacks; the rest is "(other)".
const seriesGroups = 8

// Other names the rest of a series' or top table's names.
const Other = "(other)"

type seriesGroupJSON struct {
	Name     string  `json:"name"`
	Requests []int64 `json:"requests"`
	Tokens   []int64 `json:"tokens"`
}

type seriesJSON struct {
	Query         map[string]any    `json:"query"`
	By            string            `json:"by"`
	BucketSeconds int64             `json:"bucket_seconds"`
	Times         []int64           `json:"times"`
	Requests      []int64           `json:"requests"`
	Errors        []int64           `json:"errors"`
	Tokens        []int64           `json:"tokens"`
	CostUSD       []float64         `json:"cost_usd"`
	LatencyP50    []pct             `json:"latency_p50_ms"`
	LatencyP95    []pct             `json:"latency_p95_ms"`
	TTFTP50       []pct             `json:"ttft_p50_ms"`
	TTFTP95       []pct             `json:"ttft_p95_ms"`
	Groups        []seriesGroupJSON `json:"groups"`
}

func seriesOf(a *aggregator) *seriesJSON {
	n := len(a.buckets)
	s := &seriesJSON{
		Query: a.p.describe(), By: dimNames[a.p.by], BucketSeconds: a.width,
		Times: make([]int64, n), Requests: make([]int64, n), Errors: make([]int64, n), Tokens: make([]int64, n),
		CostUSD:    make([]float64, n),
		LatencyP50: make([]pct, n), LatencyP95: make([]pct, n), TTFTP50: make([]pct, n), TTFTP95: make([]pct, n),
		Groups: []seriesGroupJSON{},
	}
	prev := int64(math.MinInt64)
	for i := range a.buckets {
		b := &a.buckets[i]
		// The bucket's start, a wall clock of the server's zone, as a
		// Unix time; a DST change can repeat or skip one, so keep them
		// increasing for the charts.
		wall := a.start.Add(time.Duration(int64(i)*a.width) * time.Second)
		t := time.Date(wall.Year(), wall.Month(), wall.Day(), wall.Hour(), wall.Minute(), 0, 0, time.Local).Unix()
		t = max(t, prev+1)
		prev = t
		s.Times[i] = t
		s.Requests[i] = b.Requests
		s.Errors[i] = b.Errors
		s.Tokens[i] = addSat(b.PromptTokens, b.CompletionTokens)
		s.CostUSD[i] = float64(b.CostNanos) / 1e9
		s.LatencyP50[i], s.LatencyP95[i] = pctOf(b.latency, 0.5), pctOf(b.latency, 0.95)
		s.TTFTP50[i], s.TTFTP95[i] = pctOf(b.ttft, 0.5), pctOf(b.ttft, 0.95)
	}
	ranked := a.ranked(a.p.by)
	shown := map[int32]int{}
	for _, id := range ranked[:min(len(ranked), seriesGroups)] {
		shown[id] = len(s.Groups)
		s.Groups = append(s.Groups, seriesGroupJSON{Name: a.dims[a.p.by].names[id], Requests: make([]int64, n), Tokens: make([]int64, n)})
	}
	other := -1
	if len(ranked) > seriesGroups {
		other = len(s.Groups)
		s.Groups = append(s.Groups, seriesGroupJSON{Name: Other, Requests: make([]int64, n), Tokens: make([]int64, n)})
	}
	for k, c := range a.cells {
		g, ok := shown[k.name]
		if !ok {
			g = other
		}
		s.Groups[g].Requests[k.bucket] += c[0]
		s.Groups[g].Tokens[k.bucket] += c[1]
	}
	return s
}

func (h *Handler) series(ctx context.Context, p *params) (any, error) {
	a, _, err := h.aggregate(ctx, p)
	if err != nil {
		return nil, err
	}
	return seriesOf(a), nil
}

type topRowJSON struct {
	Name string `json:"name"`
	totalsJSON
	LatencyP50 pct `json:"latency_p50_ms"`
	LatencyP95 pct `json:"latency_p95_ms"`
}

type topJSON struct {
	By    string       `json:"by"`
	Rows  []topRowJSON `json:"rows"`
	Other *topRowJSON  `json:"other"` // the names beyond limit, summed; null if none
	Names int          `json:"names"` // distinct names in the range
}

func topOf(a *aggregator, by, limit int) *topJSON {
	d := &a.dims[by]
	ranked := a.ranked(by)
	t := &topJSON{By: dimNames[by], Rows: []topRowJSON{}, Names: len(ranked)}
	for _, id := range ranked[:min(len(ranked), limit)] {
		g := &d.groups[id]
		t.Rows = append(t.Rows, topRowJSON{Name: d.names[id], totalsJSON: totalsOf(&g.sums),
			LatencyP50: pctOf(g.latency, 0.5), LatencyP95: pctOf(g.latency, 0.95)})
	}
	if len(ranked) > limit {
		var rest sums
		var lat hist
		for _, id := range ranked[limit:] {
			g := &d.groups[id]
			rest.add(&g.sums)
			if g.latency != nil {
				for i, c := range g.latency {
					lat[i] += c
				}
			}
		}
		t.Other = &topRowJSON{Name: Other, totalsJSON: totalsOf(&rest), LatencyP50: pctOf(&lat, 0.5), LatencyP95: pctOf(&lat, 0.95)}
	}
	return t
}

type topAnswerJSON struct {
	Query map[string]any `json:"query"`
	*topJSON
}

func (h *Handler) top(ctx context.Context, p *params) (any, error) {
	p.noSeries = true
	a, _, err := h.aggregate(ctx, p)
	if err != nil {
		return nil, err
	}
	return &topAnswerJSON{Query: p.describe(), topJSON: topOf(a, p.by, p.limit)}, nil
}

type overviewJSON struct {
	Summary *summaryJSON `json:"summary"`
	Series  *seriesJSON  `json:"series"`
	Top     struct {
		Model   *topJSON `json:"model"`
		Key     *topJSON `json:"key"`
		Backend *topJSON `json:"backend"`
	} `json:"top"`
}

// overview is summary, series and the three top tables from one pass: what
// the page shows.
func (h *Handler) overview(ctx context.Context, p *params) (any, error) {
	a, files, err := h.aggregate(ctx, p)
	if err != nil {
		return nil, err
	}
	o := &overviewJSON{Summary: summaryOf(a, files), Series: seriesOf(a)}
	o.Top.Model, o.Top.Key, o.Top.Backend = topOf(a, 0, p.limit), topOf(a, 1, p.limit), topOf(a, 2, p.limit)
	return o, nil
}

// failureJSON is one failed call.
type failureJSON struct {
	ID        int64  `json:"id"`
	DB        string `json:"db"`
	Time      string `json:"time"`
	Status    int64  `json:"status"`
	Error     string `json:"error"`
	Tried     string `json:"tried"`
	Model     string `json:"model"`
	Key       string `json:"key"`
	Backend   string `json:"backend"`
	Endpoint  string `json:"endpoint"`
	RequestID string `json:"request_id"`
	LatencyMs *int64 `json:"latency_ms"`
	Stream    bool   `json:"stream"`
}

// failures lists the latest calls with status >= 400 in the range,
// newest first, through the index of failed rows.
func (h *Handler) failures(ctx context.Context, p *params) (any, error) {
	var rows []failureJSON
	_, err := h.forEachFile(ctx, p, func(r *reader) error {
		if !r.cols["Status"] {
			return nil // the origin stored successes only
		}
		q := `SELECT rowid, Time, Status, ` + r.col("Error") + `, ` + r.col("Tried") + `, Model, ` + r.col("Key") + `, ` +
			r.col("Backend") + `, ` + r.col("Endpoint") + `, ` + r.col("RequestID") + `, ` + r.col("LatencyMs") + `, ` + r.col("Stream") +
			` FROM records WHERE Status >= 400 AND Time >= ?1 AND Time < ?2` + r.filterSQL(3) +
			` ORDER BY Time DESC LIMIT ?7`
		stmt, _, err := r.conn.Prepare(q)
		if err != nil {
			return err
		}
		defer stmt.Close()
		f := p.filterArgs()
		if err := bindAll(stmt, p.a, p.b, f[0], f[1], f[2], f[3], p.limit); err != nil {
			return err
		}
		for stmt.Step() {
			fr := failureJSON{
				ID: stmt.ColumnInt64(0), DB: r.file.id, Time: stmt.ColumnText(1), Status: stmt.ColumnInt64(2),
				Error: stmt.ColumnText(3), Tried: stmt.ColumnText(4), Model: stmt.ColumnText(5), Key: stmt.ColumnText(6),
				Backend: stmt.ColumnText(7), Endpoint: stmt.ColumnText(8), RequestID: stmt.ColumnText(9),
				Stream: stmt.ColumnBool(11),
			}
			if stmt.ColumnType(10) != sqlite3.NULL {
				v := stmt.ColumnInt64(10)
				fr.LatencyMs = &v
			}
			rows = append(rows, fr)
		}
		return stmt.Err()
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(rows, func(x, y failureJSON) int { return strings.Compare(y.Time, x.Time) })
	rows = rows[:min(len(rows), p.limit)]
	if rows == nil {
		rows = []failureJSON{}
	}
	for i := range rows {
		rows[i].Time = isoTime(rows[i].Time)
	}
	return map[string]any{"query": p.describe(), "rows": rows}, nil
}

// isoTime turns stored Time text (local wall clock) into RFC 3339 with the
// server's offset, which browsers parse; text that is not a stored time is
// returned as is.
func isoTime(s string) string {
	t, err := time.ParseInLocation(audit.TimeLayout, s, time.Local)
	if err != nil {
		return s
	}
	return t.Format("2006-01-02T15:04:05.000000Z07:00")
}

var fileIDPattern = regexp.MustCompile(`^[0-9a-f]{12}$`)

// callColumns are the columns a call's detail shows, in order.
var callColumns = []string{"Time", "IP", "Model", "Type", "CompletionTokens", "PromptTokens", "TotalTokens",
	"Tool", "Multimodal", "Headers", "Request", "Response", "Backend", "Status", "LatencyMs", "TTFTMs",
	"Stream", "Endpoint", "RequestID", "Tried", "Error", "Key", "CostUSD"}

// call answers api/call/{id}?db={file}: one row, every column, headers as
// stored (masked by the writer) and bodies when stored.
func (h *Handler) call(ctx context.Context, r *http.Request, idText string) (any, error) {
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil || id < 0 {
		return nil, &paramError{"id", "want a call id (a non-negative integer)"}
	}
	q := r.URL.Query()
	for name, vs := range q {
		if len(vs) > 1 {
			return nil, &paramError{name, "given more than once"}
		}
	}
	db := q.Get("db")
	if !fileIDPattern.MatchString(db) {
		return nil, &paramError{"db", "want the db of a listed call (12 hex digits)"}
	}
	release, err := h.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	files, err := h.files()
	if err != nil {
		return nil, err
	}
	var out map[string]any
	for _, f := range files {
		if f.id != db {
			continue
		}
		rd, err := openReader(ctx, f)
		if err != nil {
			if errors.Is(err, errNoRecords) || isCantOpen(err) {
				break
			}
			return nil, fmt.Errorf("opening %s: %w", filepath.Base(f.path), err)
		}
		out, err = rd.call(id, db)
		rd.close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", filepath.Base(f.path), err)
		}
		break
	}
	if out == nil {
		return nil, &apiError{status: http.StatusNotFound, typ: errTypeInvalidRequest, code: "not_found",
			message: "no call " + idText + " in that database (an archive may have been rotated since: reload the list)"}
	}
	return out, nil
}

// call reads row id: every column, or nil if there is none.
func (rd *reader) call(id int64, db string) (map[string]any, error) {
	cols := make([]string, len(callColumns))
	for i, c := range callColumns {
		cols[i] = rd.col(c)
	}
	stmt, _, err := rd.conn.Prepare(`SELECT ` + strings.Join(cols, ", ") + ` FROM records WHERE rowid = ?1`)
	if err != nil {
		return nil, err
	}
	defer stmt.Close()
	if err := stmt.BindInt64(1, id); err != nil {
		return nil, err
	}
	if !stmt.Step() {
		return nil, stmt.Err()
	}
	out := map[string]any{"id": id, "db": db, "file": filepath.Base(rd.file.path)}
	for i, c := range callColumns {
		var v any
		switch stmt.ColumnType(i) {
		case sqlite3.INTEGER:
			v = stmt.ColumnInt64(i)
		case sqlite3.FLOAT:
			v = stmt.ColumnFloat(i)
		case sqlite3.TEXT, sqlite3.BLOB:
			v = stmt.ColumnText(i)
		}
		name := jsonName(c)
		switch c {
		case "Time":
			if s, ok := v.(string); ok {
				v = isoTime(s)
			}
		case "Headers":
			// Stored as a JSON object: pass it through as one.
			if s, ok := v.(string); ok && json.Valid([]byte(s)) {
				v = json.RawMessage(s)
			}
		case "Tool", "Multimodal", "Stream":
			if n, ok := v.(int64); ok {
				v = n != 0
			}
		}
		out[name] = v
	}
	return out, nil
}

// jsonName turns a column name into the API's snake_case.
func jsonName(c string) string {
	switch c {
	case "IP":
		return "ip"
	case "TTFTMs":
		return "ttft_ms"
	case "LatencyMs":
		return "latency_ms"
	case "CostUSD":
		return "cost_usd"
	case "RequestID":
		return "request_id"
	}
	var b strings.Builder
	for i, r := range c {
		if 'A' <= r && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
