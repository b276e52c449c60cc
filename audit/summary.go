package audit

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// Summary groupings, the values of SummaryOptions.By.
const (
	ByModel   = "model"
	ByBackend = "backend"
	ByIP      = "ip"
	ByDay     = "day"
	ByKey     = "key" // the gateway key's name (SPEC §12); "" for calls made without one
)

// SummaryOptions selects and groups the rows Summarize counts.
type SummaryOptions struct {
	// By is the grouping: ByModel (default), ByBackend, ByIP or ByDay.
	By string
	// Since keeps rows at or after this instant; zero means no lower bound.
	Since time.Time
	// Until keeps rows strictly before this instant; zero means no bound.
	Until time.Time
}

// Usage is the usage of one group (or of all rows, as Summary.Total).
type Usage struct {
	Key              string `json:"key"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
	// Errors counts rows with Status >= 400 (origin files have no Status
	// column: they logged successes only).
	Errors int64 `json:"errors"`
	// CostUSD sums the rows' CostUSD (rows without a price count 0).
	CostUSD float64 `json:"cost_usd"`
}

func (u *Usage) add(v Usage) {
	u.CostUSD += v.CostUSD
	u.Requests = addSat(u.Requests, v.Requests)
	u.PromptTokens = addSat(u.PromptTokens, v.PromptTokens)
	u.CompletionTokens = addSat(u.CompletionTokens, v.CompletionTokens)
	u.TotalTokens = addSat(u.TotalTokens, v.TotalTokens)
	u.Errors = addSat(u.Errors, v.Errors)
}

// addSat adds two non-negative counts, stopping at math.MaxInt64.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// MaxStoredTokens bounds each token count of a row as the report reads it:
// a stored count below 0 counts as 0, one above it (or not a number) as
// this bound. The gateway clamps usage to the same bound before storing it
// (sse.MaxTokens); older rows, other writers and hand edits may not have.
const MaxStoredTokens = 1 << 40

// tokenSum is the SQL sum of a token column, robust to any stored value:
// each value is read as REAL (text becomes its numeric prefix or 0, NULL 0)
// and clamped to 0..MaxStoredTokens, and TOTAL sums in floating point, so
// no value can overflow the sum, whatever a file holds.
func tokenSum(col string) string {
	return "TOTAL(MIN(MAX(CAST(COALESCE(" + col + ", 0) AS REAL), 0.0), " + strconv.Itoa(MaxStoredTokens) + ".0))"
}

// costValue is a summed cost as reported: NaN (which no clamped sum should give) counts 0.
func costValue(f float64) float64 {
	if !(f > 0) {
		return 0
	}
	return f
}

// floatCount converts a TOTAL() result to a count, saturating.
func floatCount(f float64) int64 {
	switch {
	case !(f > 0): // NaN too
		return 0
	case f >= math.MaxInt64:
		return math.MaxInt64
	}
	return int64(f)
}

// Summary is the result of Summarize.
type Summary struct {
	By    string   `json:"by"`
	Files []string `json:"files"`
	// Groups are sorted by day for ByDay, else by requests, most first.
	Groups []Usage `json:"groups"`
	Total  Usage   `json:"total"`
}

// DatabaseFiles returns the archives of the database at path
// (<stem>_YYYYMM.db and <stem>_YYYYMM_<unix>.db beside it, in name order,
// hence month order) followed by path itself, keeping only files that exist.
func DatabaseFiles(path string) ([]string, error) {
	dir, base := filepath.Split(path)
	ext := filepath.Ext(base)
	stem := strings.TrimSuffix(base, ext) + "_"
	entries, err := os.ReadDir(cmp.Or(dir, "."))
	if err != nil {
		return nil, fmt.Errorf("listing audit archives: %w", err)
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, stem) || !strings.HasSuffix(name, ext) {
			continue
		}
		if isArchiveSuffix(name[len(stem) : len(name)-len(ext)]) {
			files = append(files, filepath.Join(dir, name))
		}
	}
	if _, err := os.Stat(path); err == nil {
		files = append(files, path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return files, nil
}

// DatabaseFilesOf returns the files of several audit databases (several nodes' files, SPEC §14):
// each pattern is a database path or a glob (filepath.Match syntax) of database paths, and each
// database brings its archives (see DatabaseFiles). A file matched more than once (a glob that
// also matches archives) is listed once; SQLite's -wal, -shm and -journal files are skipped. A
// pattern that matches no database is an error, so a typo is not a silently smaller report.
func DatabaseFilesOf(patterns []string) ([]string, error) {
	var files []string
	seen := make(map[string]bool)
	for _, pat := range patterns {
		paths := []string{pat}
		if strings.ContainsAny(pat, "*?[") {
			var err error
			if paths, err = filepath.Glob(pat); err != nil {
				return nil, fmt.Errorf("--db %q: %w", pat, err)
			}
		}
		n := 0
		for _, p := range paths {
			if strings.HasSuffix(p, "-wal") || strings.HasSuffix(p, "-shm") || strings.HasSuffix(p, "-journal") {
				continue
			}
			fs, err := DatabaseFiles(p)
			if err != nil {
				return nil, err
			}
			for _, f := range fs {
				if c := filepath.Clean(f); !seen[c] {
					seen[c] = true
					files = append(files, f)
				}
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("no audit database at %s", pat)
		}
	}
	return files, nil
}

// isArchiveSuffix matches "YYYYMM" and "YYYYMM_<unix>".
func isArchiveSuffix(s string) bool {
	month, unix, hasUnix := strings.Cut(s, "_")
	return len(month) == 6 && isDigits(month) && (!hasUnix || unix != "" && isDigits(unix))
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Summarize sums requests, tokens and errors per group over the records
// tables of files. Files written by the origin system (without this
// gateway's columns) are read too.
func Summarize(files []string, opt SummaryOptions) (*Summary, error) {
	by := cmp.Or(opt.By, ByModel)
	switch by {
	case ByModel, ByBackend, ByIP, ByDay, ByKey:
	default:
		return nil, fmt.Errorf("grouping %q: want %s, %s, %s, %s or %s", opt.By, ByModel, ByBackend, ByIP, ByDay, ByKey)
	}
	groups := make(map[string]*Usage)
	sum := &Summary{By: by, Files: files, Groups: []Usage{}, Total: Usage{Key: "TOTAL"}}
	for _, f := range files {
		if err := summarizeFile(f, by, opt, groups); err != nil {
			return nil, fmt.Errorf("summarising %s: %w", f, err)
		}
	}
	for _, u := range groups {
		sum.Groups = append(sum.Groups, *u)
		sum.Total.add(*u)
	}
	slices.SortFunc(sum.Groups, func(a, b Usage) int {
		if by != ByDay {
			if c := cmp.Compare(b.Requests, a.Requests); c != 0 {
				return c
			}
		}
		return strings.Compare(a.Key, b.Key)
	})
	return sum, nil
}

func summarizeFile(path, by string, opt SummaryOptions, groups map[string]*Usage) error {
	conn, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.BusyTimeout(busyTimeout); err != nil {
		return err
	}
	cols, err := tableColumns(conn)
	if err != nil {
		return err
	}
	if len(cols) == 0 {
		return errors.New("no records table")
	}
	stmt, _, err := conn.Prepare(summaryQuery(by, cols, opt))
	if err != nil {
		return err
	}
	defer stmt.Close()
	if !opt.Since.IsZero() {
		if err := stmt.BindText(stmt.BindIndex(":since"), opt.Since.Local().Format(TimeLayout)); err != nil {
			return err
		}
	}
	if !opt.Until.IsZero() {
		if err := stmt.BindText(stmt.BindIndex(":until"), opt.Until.Local().Format(TimeLayout)); err != nil {
			return err
		}
	}
	for stmt.Step() {
		v := Usage{
			Key:              stmt.ColumnText(0),
			Requests:         stmt.ColumnInt64(1),
			PromptTokens:     floatCount(stmt.ColumnFloat(2)),
			CompletionTokens: floatCount(stmt.ColumnFloat(3)),
			TotalTokens:      floatCount(stmt.ColumnFloat(4)),
			Errors:           stmt.ColumnInt64(5),
			CostUSD:          costValue(stmt.ColumnFloat(6)),
		}
		u := groups[v.Key]
		if u == nil {
			u = &Usage{Key: v.Key}
			groups[v.Key] = u
		}
		u.add(v)
	}
	return stmt.Err()
}

// summaryQuery builds the GROUP BY query for one file's columns. Only fixed
// SQL fragments are concatenated; the dates are bound. Time compares as
// text, which TimeLayout makes chronological.
func summaryQuery(by string, cols map[string]bool, opt SummaryOptions) string {
	col := func(name, fallback string) string {
		if cols[name] {
			return name
		}
		return fallback
	}
	var key string
	switch by {
	case ByBackend:
		key = col("Backend", "''")
	case ByIP:
		key = "IP"
	case ByDay:
		key = "substr(Time, 1, 10)"
	case ByKey:
		key = col("Key", "''")
	default:
		key = "Model"
	}
	errs := "0"
	if cols["Status"] {
		errs = "SUM(Status >= 400)"
	}
	cost := "0.0"
	if cols["CostUSD"] {
		// Each value read as REAL and clamped like the token counts, so no stored value can
		// make the sum fail or go negative.
		cost = "TOTAL(MIN(MAX(CAST(COALESCE(CostUSD, 0) AS REAL), 0.0), 1e12))"
	}
	var where []string
	if !opt.Since.IsZero() {
		where = append(where, "Time >= :since")
	}
	if !opt.Until.IsZero() {
		where = append(where, "Time < :until")
	}
	q := "SELECT COALESCE(" + key + ", '') AS k, COUNT(*), " +
		tokenSum("PromptTokens") + ", " + tokenSum("CompletionTokens") + ", " + tokenSum("TotalTokens") + ", " +
		"COALESCE(" + errs + ", 0), " + cost + " FROM records"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return q + " GROUP BY k"
}
