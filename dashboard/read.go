package dashboard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ncruces/go-sqlite3"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

// dbFile is one database file to read.
type dbFile struct {
	path string
	id   string // stable short id, for api/call
	// month is YYYYMM for an archive of the llm_audit app's database: it
	// holds no row of a later month. 0 otherwise.
	month int
}

// fileID is a short stable name for a path, which the API shows instead of
// the path itself.
func fileID(path string) string {
	sum := sha256.Sum256([]byte(path))
	return hex.EncodeToString(sum[:6])
}

// files lists the database files to read, in a stable order.
func (h *Handler) files() ([]dbFile, error) {
	var paths []string
	months := map[string]int{}
	if len(h.Databases) == 0 {
		var err error
		if paths, err = audit.DatabaseFiles(h.auditPath); err != nil {
			return nil, err
		}
		for _, p := range paths {
			if p != h.auditPath {
				months[p] = archiveMonth(h.auditPath, p)
			}
		}
	} else {
		seen := map[string]bool{}
		for _, pat := range h.Databases {
			m, err := filepath.Glob(pat)
			if err != nil {
				return nil, err
			}
			for _, p := range m {
				abs, err := filepath.Abs(p)
				if err != nil || seen[abs] || isSideFile(abs) {
					continue
				}
				if fi, err := os.Stat(abs); err != nil || !fi.Mode().IsRegular() {
					continue
				}
				seen[abs] = true
				paths = append(paths, abs)
			}
		}
		slices.Sort(paths)
	}
	out := make([]dbFile, len(paths))
	for i, p := range paths {
		out[i] = dbFile{path: p, id: fileID(p), month: months[p]}
	}
	return out, nil
}

func isSideFile(p string) bool {
	return strings.HasSuffix(p, "-wal") || strings.HasSuffix(p, "-shm") || strings.HasSuffix(p, "-journal")
}

// archiveMonth returns YYYYMM of an archive (<stem>_YYYYMM[_unix]<ext>) of
// live, or 0.
func archiveMonth(live, archive string) int {
	ext := filepath.Ext(live)
	stem := strings.TrimSuffix(filepath.Base(live), ext) + "_"
	name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(archive), stem), ext)
	if len(name) < 6 {
		return 0
	}
	m, err := strconv.Atoi(name[:6])
	if err != nil {
		return 0
	}
	return m
}

// monthOfText returns YYYYMM of stored Time text.
func monthOfText(s string) int {
	if len(s) < 7 {
		return 0
	}
	y, err1 := strconv.Atoi(s[:4])
	m, err2 := strconv.Atoi(s[5:7])
	if err1 != nil || err2 != nil {
		return 0
	}
	return y*100 + m
}

// skip reports whether f cannot hold rows of the range: an archive of a
// month before it.
func (f dbFile) skip(p *params) bool {
	return f.month != 0 && f.month < monthOfText(p.a)
}

// reader is one read-only connection to one file, inside one read
// transaction, so that the rollup and the rows it reads agree.
//
// Connections are opened per API call and closed after it, never kept
// idle: the writer leaves WAL mode when it rotates or closes the live file,
// which needs every other connection gone; an idle one would postpone that.
// Opening one costs well under a millisecond.
type reader struct {
	conn    *sqlite3.Conn
	file    dbFile
	cols    map[string]bool
	covered int64 // rowid up to which rollup_hourly sums records; 0: no rollup
}

var errNoRecords = errors.New("no records table")

func openReader(ctx context.Context, f dbFile) (*reader, error) {
	conn, err := sqlite3.OpenFlags(f.path, sqlite3.OPEN_READONLY)
	if err != nil {
		return nil, err
	}
	r := &reader{conn: conn, file: f}
	if err := r.init(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return r, nil
}

func (r *reader) init(ctx context.Context) error {
	if err := r.conn.BusyTimeout(busyTimeout); err != nil {
		return err
	}
	r.conn.SetInterrupt(ctx)
	if err := r.conn.Exec(`BEGIN`); err != nil {
		return err
	}
	stmt, _, err := r.conn.Prepare(`SELECT name FROM pragma_table_info('records')`)
	if err != nil {
		return err
	}
	r.cols = map[string]bool{}
	for stmt.Step() {
		r.cols[stmt.ColumnText(0)] = true
	}
	if err := errors.Join(stmt.Err(), stmt.Close()); err != nil {
		return err
	}
	if len(r.cols) == 0 {
		return errNoRecords
	}
	version, covered, err := audit.ReadRollupMeta(r.conn)
	if err != nil {
		return err
	}
	if version == audit.RollupVersion {
		r.covered = covered
	}
	return nil
}

func (r *reader) close() {
	_ = r.conn.Exec(`COMMIT`)
	_ = r.conn.Close()
}

// col returns a column's name, quoted, or NULL for a column the file lacks
// (the origin's files have none of this gateway's columns). Only fixed
// names reach the SQL: no text of a request does.
func (r *reader) col(name string) string {
	if r.cols[name] {
		return `"` + name + `"`
	}
	return "NULL"
}

// rowColumns are audit.RollupColumns with the file's fallbacks.
func (r *reader) rowColumns() string {
	return strings.Join([]string{
		r.col("Time"), r.col("Model"), r.col("Key"), r.col("Backend"), r.col("Status"),
		r.col("PromptTokens"), r.col("CompletionTokens"), r.col("TotalTokens"),
		r.col("CostUSD"), r.col("LatencyMs"), r.col("TTFTMs"),
	}, ", ")
}

// filterSQL matches the filters bound from parameter first on: model,
// key, backend and status class; a NULL argument matches everything.
func (r *reader) filterSQL(first int) string {
	n := func(i int) string { return "?" + strconv.Itoa(first+i) }
	return ` AND (` + n(0) + ` IS NULL OR COALESCE(` + r.col("Model") + `, '') = ` + n(0) + `)` +
		` AND (` + n(1) + ` IS NULL OR COALESCE(` + r.col("Key") + `, '') = ` + n(1) + `)` +
		` AND (` + n(2) + ` IS NULL OR COALESCE(` + r.col("Backend") + `, '') = ` + n(2) + `)` +
		` AND (` + n(3) + ` IS NULL OR COALESCE(` + r.col("Status") + `, 200) / 100 = ` + n(3) + `)`
}

// bindAll binds args to parameters 1, 2, …; nil binds NULL.
func bindAll(s *sqlite3.Stmt, args ...any) error {
	for i, a := range args {
		var err error
		switch v := a.(type) {
		case nil:
			err = s.BindNull(i + 1)
		case string:
			err = s.BindText(i+1, v)
		case int64:
			err = s.BindInt64(i+1, v)
		case int:
			err = s.BindInt64(i+1, int64(v))
		default:
			err = fmt.Errorf("binding %T", a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// scanRows feeds agg the rows with Time in [lo, hi) and rowid in
// (rmin, rmax] that match the filters. The rowid range is the way in:
// records has no index on Time (see audit.RollupSums.MinRowid).
func (r *reader) scanRows(p *params, lo, hi string, rmin, rmax int64, a *aggregator) error {
	if lo >= hi || rmin >= rmax {
		return nil
	}
	q := `SELECT ` + r.rowColumns() + ` FROM records WHERE rowid > ?3 AND rowid <= ?4 AND ` +
		r.col("Time") + ` >= ?1 AND ` + r.col("Time") + ` < ?2` + r.filterSQL(5)
	stmt, _, err := r.conn.Prepare(q)
	if err != nil {
		return err
	}
	defer stmt.Close()
	f := p.filterArgs()
	if err := bindAll(stmt, lo, hi, rmin, rmax, f[0], f[1], f[2], f[3]); err != nil {
		return err
	}
	var row audit.RollupRow
	for stmt.Step() {
		row.Scan(stmt, 0, a.intern)
		a.addRow(&row)
	}
	return stmt.Err()
}

// rollupWhere selects the rollup rows of hours in [?1, ?2) (or up to ?2
// included, with <=) matching the filters ?3 to ?6.
const rollupWhere = ` AND (?3 IS NULL OR model = ?3) AND (?4 IS NULL OR key_name = ?4)
	AND (?5 IS NULL OR backend = ?5) AND (?6 IS NULL OR status_class = ?6)`

const rollupSQL = `SELECT hour, model, key_name, backend, status_class, requests, prompt_tokens, completion_tokens,
	total_tokens, cost_nanos, costed, latency_hist, ttft_hist
FROM rollup_hourly WHERE hour >= ?1 AND hour < ?2` + rollupWhere

const dailySQL = `SELECT day, model, key_name, backend, status_class, requests, prompt_tokens, completion_tokens,
	total_tokens, cost_nanos, costed, latency_hist, ttft_hist
FROM rollup_daily WHERE day >= ?1 AND day < ?2` + rollupWhere

const rowidSpanSQL = `SELECT MIN(min_rowid), MAX(max_rowid) FROM rollup_hourly WHERE hour >= ?1 AND hour <= ?2` + rollupWhere

// scanRollup feeds agg the rollup rows of hours [hs, he).
func (r *reader) scanRollup(p *params, hs, he string, a *aggregator) error {
	return r.scanPeriods(p, rollupSQL, hs, he, a)
}

// scanPeriods feeds agg the rows of a rollup table (q: rollupSQL or
// dailySQL) of periods [lo, hi).
func (r *reader) scanPeriods(p *params, q, lo, hi string, a *aggregator) error {
	if lo >= hi {
		return nil
	}
	stmt, _, err := r.conn.Prepare(q)
	if err != nil {
		return err
	}
	defer stmt.Close()
	f := p.filterArgs()
	if err := bindAll(stmt, lo, hi, f[0], f[1], f[2], f[3]); err != nil {
		return err
	}
	for stmt.Step() {
		if err := a.addRollup(stmt); err != nil {
			return err
		}
	}
	return stmt.Err()
}

// rowidSpan returns (lo, hi]: the rowids of the covered rows of hours
// [h1, h2] that match the filters lie in it. Empty (lo >= hi) if none.
func (r *reader) rowidSpan(p *params, h1, h2 string) (lo, hi int64, err error) {
	stmt, _, err := r.conn.Prepare(rowidSpanSQL)
	if err != nil {
		return 0, 0, err
	}
	defer stmt.Close()
	f := p.filterArgs()
	if err := bindAll(stmt, h1, h2, f[0], f[1], f[2], f[3]); err != nil {
		return 0, 0, err
	}
	if stmt.Step() && stmt.ColumnType(0) != sqlite3.NULL {
		lo, hi = stmt.ColumnInt64(0)-1, min(stmt.ColumnInt64(1), r.covered)
	}
	return lo, hi, stmt.Err()
}

// scanHours feeds agg the covered rows with Time in [lo, hi), which lie in
// the hours [h1, h2].
func (r *reader) scanHours(p *params, lo, hi, h1, h2 string, a *aggregator) error {
	if lo >= hi {
		return nil
	}
	rmin, rmax, err := r.rowidSpan(p, h1, h2)
	if err != nil {
		return err
	}
	return r.scanRows(p, lo, hi, rmin, rmax, a)
}

// aggregate feeds agg every call of the range matching the filters: hours
// wholly inside the range from the rollup, the partial hours at its ends
// and any row the rollup does not cover yet from the rows themselves.
func (r *reader) aggregate(p *params, a *aggregator) error {
	if r.covered == 0 {
		// No rollup (a file the writer never opened): every row.
		return r.scanRows(p, p.a, p.b, math.MinInt64, math.MaxInt64, a)
	}
	// Rows the rollup does not count yet: the last few seconds' worth.
	if err := r.scanRows(p, p.a, p.b, r.covered, math.MaxInt64, a); err != nil {
		return err
	}
	ha, hb := audit.HourOf(p.a), audit.HourOf(p.b)
	hs, he := p.hourSpan()
	if p.rawOnly() || hs >= he {
		return r.scanHours(p, p.a, p.b, ha, hb, a)
	}
	if err := r.scanWholeHours(p, hs, he, a); err != nil {
		return fmt.Errorf("reading the rollup: %w", err)
	}
	if err := r.scanHours(p, p.a, hs+":00:00.000000", ha, ha, a); err != nil {
		return err
	}
	return r.scanHours(p, he+":00:00.000000", p.b, hb, hb, a)
}

// scanWholeHours feeds agg the rollup rows of hours [hs, he): whole days
// from rollup_daily when the series' buckets are days (or there is no
// series), the other hours from rollup_hourly.
func (r *reader) scanWholeHours(p *params, hs, he string, a *aggregator) error {
	if !p.daily() {
		return r.scanRollup(p, hs, he, a)
	}
	// Whole days: from the first midnight at or after hs to the last at or
	// before he.
	ds := audit.DayOf(hs)
	if hs[len(ds):] != " 00" {
		ds = nextDay(ds)
	}
	de := audit.DayOf(he)
	if ds >= de {
		return r.scanRollup(p, hs, he, a)
	}
	if err := r.scanPeriods(p, dailySQL, ds, de, a); err != nil {
		return err
	}
	if err := r.scanRollup(p, hs, ds+" 00", a); err != nil {
		return err
	}
	return r.scanRollup(p, de+" 00", he, a)
}

// forEachFile opens each file that may hold rows of p's range and calls fn
// with a reader on it. A file that vanished since it was listed (rotated
// away) is skipped, as is one without a records table.
func (h *Handler) forEachFile(ctx context.Context, p *params, fn func(*reader) error) ([]dbFile, error) {
	files, err := h.files()
	if err != nil {
		return nil, err
	}
	var read []dbFile
	for _, f := range files {
		if p != nil && f.skip(p) {
			continue
		}
		r, err := openReader(ctx, f)
		if err != nil {
			if errors.Is(err, errNoRecords) || errors.Is(err, fs.ErrNotExist) || isCantOpen(err) {
				continue
			}
			return nil, fmt.Errorf("opening %s: %w", filepath.Base(f.path), err)
		}
		err = fn(r)
		r.close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", filepath.Base(f.path), err)
		}
		read = append(read, f)
	}
	return read, nil
}

func isCantOpen(err error) bool {
	var e *sqlite3.Error
	return errors.As(err, &e) && e.Code() == sqlite3.CANTOPEN
}
