package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// createTable is the origin's schema (db/mod.rs, since 03bb132) followed by
// this gateway's columns, so a fresh file and a migrated one look alike.
const createTable = `CREATE TABLE IF NOT EXISTS records (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	Time TEXT, IP TEXT, Model TEXT, Type TEXT,
	CompletionTokens INTEGER, PromptTokens INTEGER, TotalTokens INTEGER,
	Tool BOOLEAN, Multimodal BOOLEAN,
	Headers TEXT, Request TEXT, Response TEXT,
	Backend TEXT, Status INTEGER, LatencyMs INTEGER, TTFTMs INTEGER,
	Stream BOOLEAN, Endpoint TEXT, RequestID TEXT, Tried TEXT, Error TEXT,
	Key TEXT, CostUSD REAL
)`

// addedColumns are the columns an origin-created table lacks, in order, with
// their declared types; migrate adds whichever are missing.
var addedColumns = [...]struct{ name, decl string }{
	{"Backend", "TEXT"},
	{"Status", "INTEGER"},
	{"LatencyMs", "INTEGER"},
	{"TTFTMs", "INTEGER"},
	{"Stream", "BOOLEAN"},
	{"Endpoint", "TEXT"},
	{"RequestID", "TEXT"},
	{"Tried", "TEXT"},
	{"Error", "TEXT"},
	{"Key", "TEXT"},
	{"CostUSD", "REAL"},
}

// pageSize is the page size of a new database file. Every page written is
// written twice (to the WAL, then into the file by the checkpoint), and a
// write costs the writer a system call whatever its size: at a few KiB per
// row with bodies, SQLite's default of 4096 bytes made those calls the
// larger part of a row's cost. Larger pages cost more at a trickle, where
// every commit rewrites a whole page for one row: 32768 bytes keeps that
// within a third of the default's CPU. An existing file keeps its page size.
const pageSize = 32768

// busyTimeout bounds how long a write waits for a reader (e.g. the
// llm-audit command or an operator's sqlite3 shell) holding a lock.
const busyTimeout = 5 * time.Second

// store is one open database file: the connection and its prepared INSERT.
// Only the writer goroutine touches it.
type store struct {
	conn *sqlite3.Conn
	// insert takes one row, insertMany rowsPerInsert rows (nil if it could not be prepared:
	// every row then goes through insert).
	insert, insertMany *insertStmt
	// file identifies the file opened (nil if it could not be read), so the
	// writer notices when the path no longer leads to it.
	file os.FileInfo
	// rollup keeps rollup_hourly; nil if it could not be opened (rollupErr
	// says why), in which case rows are still written and readers fall
	// back to reading them.
	rollup    *rollup
	rollupErr error
}

// openStore opens (creating if needed) the database at path, switches it to
// WAL, creates or migrates the records table and prepares the INSERT.
func openStore(path string) (*store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating directory for %s: %w", path, err)
	}
	// No OPEN_URI: the path is a plain file name, whatever characters it has.
	conn, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READWRITE|sqlite3.OPEN_CREATE)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	s := &store{conn: conn}
	if err := s.init(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("initialising %s: %w", path, err)
	}
	s.file, _ = os.Stat(path)
	return s, nil
}

func (s *store) init() error {
	if err := s.conn.BusyTimeout(busyTimeout); err != nil {
		return err
	}
	// The page size applies to a new file only (before its first write).
	// synchronous=NORMAL in WAL mode loses no committed transaction on a
	// process crash, only possibly the last ones on power loss, and spares
	// an fsync per commit.
	if err := s.conn.Exec(`PRAGMA page_size=` + strconv.Itoa(pageSize) + `; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL`); err != nil {
		return err
	}
	if err := s.conn.Exec(createTable); err != nil {
		return err
	}
	if err := s.migrate(); err != nil {
		return err
	}
	var err error
	if s.insert, err = prepareInsert(s.conn, 1); err != nil {
		return err
	}
	// Not fatal: with a smaller SQLITE_MAX_VARIABLE_NUMBER, say, rows go one by one.
	s.insertMany, _ = prepareInsert(s.conn, rowsPerInsert)
	// A rollup failure must not stop rows from being written.
	s.rollup, s.rollupErr = openRollup(s.conn)
	return nil
}

// migrate adds this gateway's columns to a table the origin created.
func (s *store) migrate() error {
	have, err := tableColumns(s.conn)
	if err != nil {
		return err
	}
	for _, c := range addedColumns {
		if have[c.name] {
			continue
		}
		if err := s.conn.Exec("ALTER TABLE records ADD COLUMN " + c.name + " " + c.decl); err != nil {
			return fmt.Errorf("adding column %s: %w", c.name, err)
		}
	}
	return nil
}

// tableColumns returns the set of column names of the records table.
func tableColumns(conn *sqlite3.Conn) (map[string]bool, error) {
	stmt, _, err := conn.Prepare(`SELECT name FROM pragma_table_info('records')`)
	if err != nil {
		return nil, err
	}
	defer stmt.Close()
	cols := make(map[string]bool)
	for stmt.Step() {
		cols[stmt.ColumnText(0)] = true
	}
	return cols, stmt.Err()
}

// newestMonth returns the month (see monthOf) of the most recent row, or 0
// if the table is empty or its newest Time does not parse.
func (s *store) newestMonth() (int, error) {
	// rowid, not id: tables from before the origin's 03bb132 have no id.
	stmt, _, err := s.conn.Prepare(`SELECT Time FROM records ORDER BY rowid DESC LIMIT 1`)
	if err != nil {
		return 0, err
	}
	defer stmt.Close()
	if !stmt.Step() {
		return 0, stmt.Err()
	}
	return parseMonth(stmt.ColumnText(0)), nil
}

// errShared reports that another connection kept the database in WAL mode
// at close, so its side files are in use and the file must not be moved.
var errShared = errors.New("database is open elsewhere; left in WAL mode")

// close checkpoints the WAL into the main file and leaves the database in
// rollback-journal mode, so that no -wal or -shm file outlives the
// connection and the file can be renamed or copied on its own. Leaving WAL
// mode needs exclusive access; if another connection (an operator's sqlite3
// shell, say) prevents it, close returns errShared and the side files stay.
func (s *store) close() error {
	var errs []error
	errs = append(errs, s.insert.close(), s.insertMany.close())
	if s.rollup != nil {
		// Errors are not fatal: the next open sums the rows left over.
		_ = s.rollup.flushIdle(true)
		s.rollup.close()
	}
	mode, err := s.leaveWAL()
	errs = append(errs, err, s.conn.Close())
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if mode != "delete" {
		return errShared
	}
	return nil
}

// leaveWAL checkpoints and switches to journal_mode=DELETE, returning the
// resulting mode; a lock held by another connection is not an error.
func (s *store) leaveWAL() (mode string, err error) {
	defer func() {
		if errors.Is(err, sqlite3.BUSY) || errors.Is(err, sqlite3.LOCKED) {
			mode, err = "", nil
		}
	}()
	if err := s.conn.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return "", err
	}
	stmt, _, err := s.conn.Prepare(`PRAGMA journal_mode=DELETE`)
	if err != nil {
		return "", err
	}
	defer stmt.Close()
	if stmt.Step() {
		mode = stmt.ColumnText(0)
	}
	return mode, stmt.Err()
}

// monthOf returns t's year and month in local time (the time zone rows are
// stored in) as one comparable number, YYYYMM.
func monthOf(t time.Time) int {
	y, m, _ := t.Local().Date()
	return y*100 + int(m)
}

// parseMonth reads YYYYMM from the start of a stored Time ("2026-07-23 …"),
// or returns 0.
func parseMonth(s string) int {
	if len(s) < 7 || s[4] != '-' {
		return 0
	}
	y, err1 := strconv.Atoi(s[:4])
	m, err2 := strconv.Atoi(s[5:7])
	if err1 != nil || err2 != nil || m < 1 || m > 12 {
		return 0
	}
	return y*100 + m
}

// sideFiles are the files SQLite keeps beside a database.
var sideFiles = [...]string{"-wal", "-shm", "-journal"}

// removeSideFiles deletes any side file left beside path. Call it only after
// store.close succeeded: the database was then out of WAL mode with no other
// connection, so any such file is a stale leftover.
func removeSideFiles(path string) error {
	var errs []error
	for _, suffix := range sideFiles {
		if err := os.Remove(path + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// archivePath returns where the file holding month's rows is moved:
// <stem>_YYYYMM<ext> beside it, or <stem>_YYYYMM_<unix><ext> if that exists.
func archivePath(path string, month int, now time.Time) string {
	ext := filepath.Ext(path)
	stem := path[:len(path)-len(ext)]
	name := stem + "_" + strconv.Itoa(month) + ext
	if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
		return name
	}
	return stem + "_" + strconv.Itoa(month) + "_" + strconv.FormatInt(now.Unix(), 10) + ext
}
