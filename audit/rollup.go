package audit

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// The hourly rollup lets the usage dashboard answer for a month of calls
// without reading a month of rows. The writer keeps it in the same
// transaction as the rows it sums, so a reader's snapshot always sees both
// agree, and builds it once from the rows of a file that has none.
//
// One rollup row sums the calls of one local hour (the first 13 characters
// of Time, "2026-07-23 11") with the same model, gateway key, backend and
// status class. rollup_meta.covered is the rowid up to which every row of
// records is counted: rows above it (written by something other than this
// writer since) are read directly by whoever needs exact figures, and
// rolled up by the writer's next batch or start.
//
// Rows changed or deleted by hand are not seen; dropping both tables
// rebuilds them at the next start.
const (
	// RollupVersion is rollup_meta.version. A file with another version
	// (another bucket layout) is rebuilt by the writer and not trusted by
	// readers.
	RollupVersion = 2

	createRollup = `CREATE TABLE IF NOT EXISTS rollup_hourly (
	hour TEXT NOT NULL,
	model TEXT NOT NULL,
	key_name TEXT NOT NULL,
	backend TEXT NOT NULL,
	status_class INTEGER NOT NULL,
	requests INTEGER NOT NULL,
	prompt_tokens INTEGER NOT NULL,
	completion_tokens INTEGER NOT NULL,
	total_tokens INTEGER NOT NULL,
	cost_nanos INTEGER NOT NULL,
	costed INTEGER NOT NULL,
	latency_hist BLOB NOT NULL,
	ttft_hist BLOB NOT NULL,
	min_rowid INTEGER NOT NULL,
	max_rowid INTEGER NOT NULL,
	PRIMARY KEY (hour, model, key_name, backend, status_class)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_daily (
	day TEXT NOT NULL,
	model TEXT NOT NULL,
	key_name TEXT NOT NULL,
	backend TEXT NOT NULL,
	status_class INTEGER NOT NULL,
	requests INTEGER NOT NULL,
	prompt_tokens INTEGER NOT NULL,
	completion_tokens INTEGER NOT NULL,
	total_tokens INTEGER NOT NULL,
	cost_nanos INTEGER NOT NULL,
	costed INTEGER NOT NULL,
	latency_hist BLOB NOT NULL,
	ttft_hist BLOB NOT NULL,
	PRIMARY KEY (day, model, key_name, backend, status_class)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_meta (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	version INTEGER NOT NULL,
	covered INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_failed ON records (Time) WHERE Status >= 400`

	dropRollup = `DROP TABLE IF EXISTS rollup_hourly; DROP TABLE IF EXISTS rollup_daily; DROP TABLE IF EXISTS rollup_meta`

	upsertRollup = `INSERT INTO rollup_hourly (hour, model, key_name, backend, status_class,
	requests, prompt_tokens, completion_tokens, total_tokens, cost_nanos, costed, latency_hist, ttft_hist, min_rowid, max_rowid)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
ON CONFLICT (hour, model, key_name, backend, status_class) DO UPDATE SET
	requests = requests + excluded.requests,
	prompt_tokens = prompt_tokens + excluded.prompt_tokens,
	completion_tokens = completion_tokens + excluded.completion_tokens,
	total_tokens = total_tokens + excluded.total_tokens,
	cost_nanos = cost_nanos + excluded.cost_nanos,
	costed = costed + excluded.costed,
	latency_hist = llm_hist_merge(latency_hist, excluded.latency_hist),
	ttft_hist = llm_hist_merge(ttft_hist, excluded.ttft_hist),
	min_rowid = MIN(min_rowid, excluded.min_rowid),
	max_rowid = MAX(max_rowid, excluded.max_rowid)`

	upsertDaily = `INSERT INTO rollup_daily (day, model, key_name, backend, status_class,
	requests, prompt_tokens, completion_tokens, total_tokens, cost_nanos, costed, latency_hist, ttft_hist)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (day, model, key_name, backend, status_class) DO UPDATE SET
	requests = requests + excluded.requests,
	prompt_tokens = prompt_tokens + excluded.prompt_tokens,
	completion_tokens = completion_tokens + excluded.completion_tokens,
	total_tokens = total_tokens + excluded.total_tokens,
	cost_nanos = cost_nanos + excluded.cost_nanos,
	costed = costed + excluded.costed,
	latency_hist = llm_hist_merge(latency_hist, excluded.latency_hist),
	ttft_hist = llm_hist_merge(ttft_hist, excluded.ttft_hist)`

	// rollupRowsSQL reads the rows of records a rollup sums, with rowid in
	// (?1, ?2]: the rowid, then the columns RollupRow.Scan reads.
	rollupRowsSQL = `SELECT rowid, ` + RollupColumns + ` FROM records WHERE rowid > ?1 AND rowid <= ?2 ORDER BY rowid`

	// RollupColumns are the columns of records RollupRow.Scan reads.
	RollupColumns = `Time, Model, "Key", Backend, Status, PromptTokens, CompletionTokens, TotalTokens, CostUSD, LatencyMs, TTFTMs`

	// MaxCallCost bounds one call's cost as the rollup counts it (USD); a
	// stored cost below 0 counts as 0. Costs are summed in nano-dollars
	// (CostNanos), so sums are exact and do not depend on the order rows
	// are added in.
	MaxCallCost = 1e6

	// rollupFlushGroups bounds the groups the writer holds in memory
	// before writing them to rollup_hourly, whatever the interval.
	rollupFlushGroups = 4096
	// DefaultRollupInterval is how often the writer writes its sums to
	// rollup_hourly. Each write costs one upsert per group, so writing
	// every few seconds rather than every batch keeps the rollup's cost
	// per row small; readers read the rows written since directly (rowid
	// above covered), a few seconds' worth.
	DefaultRollupInterval = 5 * time.Second
)

// StatusClass is the status class a row counts under: Status / 100, with a
// NULL Status (the origin's rows, which were all successes) counted as 2.
func StatusClass(status int64, null bool) int64 {
	if null {
		return 2
	}
	return status / 100
}

// ClampTokens is a token count as every report reads it (see tokenSum):
// below 0 counts as 0, above MaxStoredTokens as MaxStoredTokens.
func ClampTokens(f float64) int64 {
	switch {
	case !(f > 0):
		return 0
	case f > MaxStoredTokens:
		return MaxStoredTokens
	}
	return int64(f)
}

// CostNanos is a call's cost in units of 1e-9 USD as the rollup sums it:
// rounded to the nearest nano-dollar and clamped to 0..MaxCallCost.
func CostNanos(usd float64) int64 {
	switch {
	case !(usd > 0):
		return 0
	case usd > MaxCallCost:
		usd = MaxCallCost
	}
	return int64(math.Round(usd * 1e9))
}

// RollupKey is the identity of a rollup row.
type RollupKey struct {
	Hour, Model, Key, Backend string
	Class                     int64
}

// RollupSums are the sums of a rollup row.
type RollupSums struct {
	Requests, PromptTokens, CompletionTokens, TotalTokens int64
	CostNanos, Costed                                     int64
	Latency, TTFT                                         Hist
	// MinRowid and MaxRowid bound the rowids of the rows summed: readers
	// find an hour's rows through them, so records needs no index on
	// Time (which would cost the writer more than the whole rollup).
	MinRowid, MaxRowid int64
}

func (s *RollupSums) addRowid(id int64) {
	if s.Requests == 0 || id < s.MinRowid {
		s.MinRowid = id
	}
	s.MaxRowid = max(s.MaxRowid, id)
}

// RollupRow is one row of records as the rollup reads it.
type RollupRow struct {
	Time, Model, Key, Backend string
	Status                    int64
	StatusNull                bool
	PromptTokens              float64
	CompletionTokens          float64
	TotalTokens               float64
	Cost                      float64
	HasCost                   bool
	LatencyMs                 int64
	HasLatency                bool
	TTFTMs                    int64
	HasTTFT                   bool
}

// Scan reads a row selected with RollupColumns starting at column first.
// Strings are interned through intern (may be nil) to spare an allocation
// per repeated value.
func (r *RollupRow) Scan(s *sqlite3.Stmt, first int, intern func([]byte) string) {
	text := func(i int) string {
		b := s.ColumnRawText(first + i)
		if intern != nil {
			return intern(b)
		}
		return string(b)
	}
	r.Time = text(0)
	r.Model = text(1)
	r.Key = text(2)
	r.Backend = text(3)
	r.StatusNull = s.ColumnType(first+4) == sqlite3.NULL
	r.Status = s.ColumnInt64(first + 4)
	r.PromptTokens = s.ColumnFloat(first + 5)
	r.CompletionTokens = s.ColumnFloat(first + 6)
	r.TotalTokens = s.ColumnFloat(first + 7)
	r.HasCost = s.ColumnType(first+8) != sqlite3.NULL
	r.Cost = s.ColumnFloat(first + 8)
	r.HasLatency = s.ColumnType(first+9) != sqlite3.NULL
	r.LatencyMs = s.ColumnInt64(first + 9)
	r.HasTTFT = s.ColumnType(first+10) != sqlite3.NULL
	r.TTFTMs = s.ColumnInt64(first + 10)
}

// HourOf returns the rollup hour of a stored Time: its first 13
// characters, "YYYY-MM-DD HH".
func HourOf(t string) string {
	if len(t) > 13 {
		return t[:13]
	}
	return t
}

// rollup sums the rows the writer inserts and writes the sums to
// rollup_hourly, with rollup_meta.covered, every interval (and when they
// reach rollupFlushGroups groups, and when the file closes), inside the
// transaction of a batch. It belongs to a store and is used by the writer
// goroutine only.
//
// The sums held in memory are those of the rows in (covered, last]. When a
// batch's first row does not follow last (rows inserted by another
// connection, or the sums dropped with a failed batch), the rows between
// are read back from the file first, so covered never passes a row the
// rollup does not count.
type rollup struct {
	conn       *sqlite3.Conn
	upsert     *sqlite3.Stmt
	daily      *sqlite3.Stmt // upsertDaily
	setCovered *sqlite3.Stmt
	rows       *sqlite3.Stmt // rollupRowsSQL
	interval   time.Duration // <= 0: write every batch
	covered    int64         // committed rollup_meta.covered
	lastWrite  time.Time

	// The pending sums, of rows (covered, last].
	pending rollupSet
	last    int64

	// The pending sums by day, made from the hourly ones as they are written.
	days rollupSet

	inBatch  bool  // the current batch's first row was seen
	writing  int64 // covered once the current transaction commits; 0: no write in it
	batchErr error // a failure while summing the current batch

	hourKey  int64 // YYYYMMDDHH of hour, to reuse the string
	hour     string
	hourBuf  []byte
	blobs    [2][]byte
	interned map[string]string
}

// openRollup creates the rollup tables and indexes if missing, brings the
// rollup up to date with records (building it whole for a file that had
// none, or one of another version) and prepares its statements.
func openRollup(conn *sqlite3.Conn) (ru *rollup, err error) {
	if err := conn.CreateFunction("llm_hist_merge", 2, sqlite3.DETERMINISTIC|sqlite3.DIRECTONLY, histMergeFunc); err != nil {
		return nil, err
	}
	if err := conn.Exec(`BEGIN IMMEDIATE`); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && !conn.GetAutocommit() {
			err = errors.Join(err, conn.Exec(`ROLLBACK`))
		}
	}()
	version, covered, err := readRollupMeta(conn)
	if err != nil {
		return nil, err
	}
	if version != RollupVersion {
		if err := conn.Exec(dropRollup); err != nil {
			return nil, err
		}
	}
	if err := conn.Exec(createRollup); err != nil {
		return nil, err
	}
	if version != RollupVersion {
		covered = 0
		if err := conn.Exec(`INSERT INTO rollup_meta (id, version, covered) VALUES (1, ` + strconv.Itoa(RollupVersion) + `, 0)`); err != nil {
			return nil, err
		}
	}
	ru = &rollup{conn: conn, covered: covered, interval: DefaultRollupInterval, lastWrite: time.Now()}
	ru.pending.index = make(map[RollupKey]int)
	ru.days.index = make(map[RollupKey]int)
	// Never nil: a nil BLOB binds as NULL, and an empty histogram is an
	// empty BLOB.
	ru.blobs = [2][]byte{make([]byte, 0, 64), make([]byte, 0, 64)}
	defer func() {
		if err != nil {
			ru.close()
		}
	}()
	if ru.upsert, _, err = conn.Prepare(upsertRollup); err != nil {
		return nil, err
	}
	if ru.daily, _, err = conn.Prepare(upsertDaily); err != nil {
		return nil, err
	}
	if ru.setCovered, _, err = conn.Prepare(`UPDATE rollup_meta SET covered = ?1 WHERE id = 1`); err != nil {
		return nil, err
	}
	if ru.rows, _, err = conn.Prepare(rollupRowsSQL); err != nil {
		return nil, err
	}
	if err := ru.catchUp(math.MaxInt64); err != nil {
		return nil, fmt.Errorf("summing existing rows: %w", err)
	}
	if err := ru.flush(); err != nil {
		return nil, err
	}
	if err := conn.Exec(`COMMIT`); err != nil {
		return nil, err
	}
	ru.committed()
	return ru, nil
}

// ReadRollupMeta returns the rollup's version and covered rowid, or zeros
// when the file has no rollup.
func ReadRollupMeta(conn *sqlite3.Conn) (version int, covered int64, err error) {
	return readRollupMeta(conn)
}

func readRollupMeta(conn *sqlite3.Conn) (version int, covered int64, err error) {
	stmt, _, err := conn.Prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('rollup_meta', 'rollup_hourly', 'rollup_daily')`)
	if err != nil {
		return 0, 0, err
	}
	n := 0
	for stmt.Step() {
		n++
	}
	if err := errors.Join(stmt.Err(), stmt.Close()); err != nil || n < 3 {
		return 0, 0, err
	}
	stmt, _, err = conn.Prepare(`SELECT version, covered FROM rollup_meta WHERE id = 1`)
	if err != nil {
		return 0, 0, err
	}
	defer stmt.Close()
	if stmt.Step() {
		version, covered = stmt.ColumnInt(0), stmt.ColumnInt64(1)
	}
	return version, covered, stmt.Err()
}

func (ru *rollup) close() {
	for _, s := range []*sqlite3.Stmt{ru.upsert, ru.daily, ru.setCovered, ru.rows} {
		if s != nil {
			_ = s.Close()
		}
	}
}

// beginBatch is called as a batch's transaction starts.
func (ru *rollup) beginBatch() {
	ru.inBatch, ru.writing, ru.batchErr = false, 0, nil
}

// record counts one row the writer inserted with the given rowid.
func (ru *rollup) record(r *Record, rowid int64) {
	if ru.batchErr != nil {
		return
	}
	if !ru.inBatch {
		ru.inBatch = true
		if next := ru.next(); rowid != next {
			if ru.batchErr = ru.catchUp(rowid - 1); ru.batchErr != nil {
				return
			}
		}
	}
	// max: a table without AUTOINCREMENT may reuse the rowids of rows
	// deleted by hand, and covered must never move back.
	ru.last = max(ru.last, rowid)
	k := RollupKey{Hour: ru.hourOf(r.Time), Model: r.Model, Key: r.Key, Backend: r.Backend, Class: int64(r.Status) / 100}
	s := ru.pending.group(k)
	s.addRowid(rowid)
	s.Requests++
	s.PromptTokens += ClampTokens(float64(r.PromptTokens))
	s.CompletionTokens += ClampTokens(float64(r.CompletionTokens))
	s.TotalTokens += ClampTokens(float64(r.TotalTokens))
	if r.CostUSD != nil {
		s.CostNanos += CostNanos(*r.CostUSD)
		s.Costed++
	}
	s.Latency.Add(r.LatencyMs)
	if r.Stream && r.TTFTMs >= 0 { // as bindTTFT stores it
		s.TTFT.Add(r.TTFTMs)
	}
}

// next is the rowid the next row summed must have.
func (ru *rollup) next() int64 {
	if ru.last != 0 {
		return ru.last + 1
	}
	return ru.covered + 1
}

// endBatch is called before the batch's COMMIT: it writes the sums when
// they are due, or returns the error met while summing.
func (ru *rollup) endBatch() error {
	if ru.batchErr != nil {
		return ru.batchErr
	}
	if ru.last == 0 || ru.interval > 0 && len(ru.pending.keys) < rollupFlushGroups && time.Since(ru.lastWrite) < ru.interval {
		return nil
	}
	return ru.flush()
}

// flush writes the pending sums and the new covered in the open
// transaction; committed makes it count once the transaction commits.
func (ru *rollup) flush() error {
	if ru.last == 0 {
		return nil
	}
	if err := ru.write(); err != nil {
		return err
	}
	s := ru.setCovered
	if err := s.BindInt64(1, ru.last); err != nil {
		return err
	}
	if err := s.Exec(); err != nil {
		return err
	}
	ru.writing = ru.last
	return nil
}

// committed is called after the transaction committed.
func (ru *rollup) committed() {
	if ru.writing != 0 {
		ru.covered, ru.last, ru.writing = ru.writing, 0, 0
		ru.lastWrite = time.Now()
	}
}

// abort forgets the pending sums after a transaction did not commit. The
// rows of earlier batches among them are read back from the file when the
// next batch starts (see record).
func (ru *rollup) abort() {
	ru.pending.clear()
	ru.last, ru.writing, ru.batchErr = 0, 0, nil
}

// flushIdle writes pending sums due, in a transaction of its own, when no
// batch came to do it (called on the writer's periodic check and on close).
func (ru *rollup) flushIdle(force bool) (err error) {
	if ru.last == 0 || !force && time.Since(ru.lastWrite) < ru.interval {
		return nil
	}
	if err := ru.conn.Exec(`BEGIN IMMEDIATE`); err != nil {
		return err
	}
	ru.beginBatch()
	if err := ru.flush(); err != nil {
		ru.abort()
		return errors.Join(err, ru.conn.Exec(`ROLLBACK`))
	}
	if err := ru.conn.Exec(`COMMIT`); err != nil {
		ru.abort()
		if !ru.conn.GetAutocommit() {
			err = errors.Join(err, ru.conn.Exec(`ROLLBACK`))
		}
		return err
	}
	ru.committed()
	return nil
}

// hourOf formats t's local hour as HourOf reads it back, reusing the last
// string while the hour does not change.
func (ru *rollup) hourOf(t time.Time) string {
	t = t.Local()
	y, m, d := t.Date()
	k := ((int64(y)*100+int64(m))*100+int64(d))*100 + int64(t.Hour())
	if k != ru.hourKey || ru.hour == "" {
		ru.hourBuf = t.AppendFormat(ru.hourBuf[:0], "2006-01-02 15")
		ru.hour = string(ru.hourBuf)
		ru.hourKey = k
	}
	return ru.hour
}

// catchUp sums the rows of records with rowid in (next-1, upto], writing
// the groups out whenever they reach rollupFlushGroups.
func (ru *rollup) catchUp(upto int64) error {
	stmt := ru.rows
	defer stmt.Reset()
	if err := errors.Join(stmt.BindInt64(1, ru.next()-1), stmt.BindInt64(2, upto)); err != nil {
		return err
	}
	if ru.interned == nil {
		ru.interned = make(map[string]string)
	}
	defer clear(ru.interned)
	intern := func(b []byte) string {
		if s, ok := ru.interned[string(b)]; ok {
			return s
		}
		s := string(b)
		if len(ru.interned) < 1<<16 {
			ru.interned[s] = s
		}
		return s
	}
	var row RollupRow
	for stmt.Step() {
		ru.last = stmt.ColumnInt64(0)
		row.Scan(stmt, 1, intern)
		ru.add(&row, ru.last)
		if len(ru.pending.keys) >= rollupFlushGroups {
			if err := ru.write(); err != nil {
				return err
			}
		}
	}
	if err := stmt.Err(); err != nil {
		return err
	}
	if upto != math.MaxInt64 {
		// Rowids skipped (deleted rows) are covered too.
		ru.last = max(ru.last, upto, ru.covered)
	}
	return nil
}

// add counts a row read back from records.
func (ru *rollup) add(r *RollupRow, rowid int64) {
	k := RollupKey{Hour: HourOf(r.Time), Model: r.Model, Key: r.Key, Backend: r.Backend, Class: StatusClass(r.Status, r.StatusNull)}
	s := ru.pending.group(k)
	s.addRowid(rowid)
	s.Requests++
	s.PromptTokens += ClampTokens(r.PromptTokens)
	s.CompletionTokens += ClampTokens(r.CompletionTokens)
	s.TotalTokens += ClampTokens(r.TotalTokens)
	if r.HasCost {
		s.CostNanos += CostNanos(r.Cost)
		s.Costed++
	}
	if r.HasLatency {
		s.Latency.Add(r.LatencyMs)
	}
	if r.HasTTFT {
		s.TTFT.Add(r.TTFTMs)
	}
}

// write upserts the pending groups into rollup_hourly, and their sums by
// day into rollup_daily, and forgets them (last stays: covered moves there
// only with flush).
func (ru *rollup) write() error {
	for i, k := range ru.pending.keys {
		sum := &ru.pending.sums[i]
		if err := ru.upsertGroup(ru.upsert, k, sum, true); err != nil {
			return err
		}
		dk := k
		dk.Hour = DayOf(k.Hour)
		ru.days.group(dk).add(sum)
	}
	for i, k := range ru.days.keys {
		if err := ru.upsertGroup(ru.daily, k, &ru.days.sums[i], false); err != nil {
			return err
		}
	}
	ru.days.clear()
	ru.pending.clear()
	return nil
}

// upsertGroup binds one group to an upsert statement and runs it.
func (ru *rollup) upsertGroup(s *sqlite3.Stmt, k RollupKey, sum *RollupSums, rowids bool) error {
	ru.blobs[0] = sum.Latency.AppendEncoded(ru.blobs[0][:0])
	ru.blobs[1] = sum.TTFT.AppendEncoded(ru.blobs[1][:0])
	err := errors.Join(
		s.BindText(1, k.Hour), s.BindText(2, k.Model), s.BindText(3, k.Key), s.BindText(4, k.Backend),
		s.BindInt64(5, k.Class), s.BindInt64(6, sum.Requests),
		s.BindInt64(7, sum.PromptTokens), s.BindInt64(8, sum.CompletionTokens), s.BindInt64(9, sum.TotalTokens),
		s.BindInt64(10, sum.CostNanos), s.BindInt64(11, sum.Costed),
		s.BindBlob(12, ru.blobs[0]), s.BindBlob(13, ru.blobs[1]))
	if err == nil && rowids {
		err = errors.Join(s.BindInt64(14, sum.MinRowid), s.BindInt64(15, sum.MaxRowid))
	}
	if err == nil {
		err = s.Exec()
	}
	if err != nil {
		return fmt.Errorf("updating the rollup: %w", err)
	}
	return nil
}

// rollupSet is a set of groups with their sums, reused across writes.
type rollupSet struct {
	index map[RollupKey]int
	keys  []RollupKey
	sums  []RollupSums
}

func (rs *rollupSet) group(k RollupKey) *RollupSums {
	if i, ok := rs.index[k]; ok {
		return &rs.sums[i]
	}
	i := len(rs.keys)
	rs.index[k] = i
	rs.keys = append(rs.keys, k)
	if i < cap(rs.sums) {
		rs.sums = rs.sums[:i+1]
		s := &rs.sums[i]
		*s = RollupSums{Latency: s.Latency[:0], TTFT: s.TTFT[:0]}
		return s
	}
	rs.sums = append(rs.sums, RollupSums{})
	return &rs.sums[i]
}

func (rs *rollupSet) clear() {
	clear(rs.index)
	clear(rs.keys)
	rs.keys = rs.keys[:0]
	rs.sums = rs.sums[:0]
}

// add adds o's sums to s.
func (s *RollupSums) add(o *RollupSums) {
	if o.Requests > 0 {
		if s.Requests == 0 || o.MinRowid < s.MinRowid {
			s.MinRowid = o.MinRowid
		}
		s.MaxRowid = max(s.MaxRowid, o.MaxRowid)
	}
	s.Requests += o.Requests
	s.PromptTokens += o.PromptTokens
	s.CompletionTokens += o.CompletionTokens
	s.TotalTokens += o.TotalTokens
	s.CostNanos += o.CostNanos
	s.Costed += o.Costed
	s.Latency.Merge(o.Latency)
	s.TTFT.Merge(o.TTFT)
}

// DayOf returns the rollup day of a stored Time or rollup hour: its first
// 10 characters, "YYYY-MM-DD".
func DayOf(t string) string {
	if len(t) > 10 {
		return t[:10]
	}
	return t
}

// histMergeFunc is the SQL function llm_hist_merge(a, b): the histogram
// counting both encoded histograms.
func histMergeFunc(ctx sqlite3.Context, arg ...sqlite3.Value) {
	// Copy the first argument: reading the second may move SQLite's memory.
	a := arg[0].Blob(nil)
	out, err := mergeHists(make([]byte, 0, 64), a, arg[1].RawBlob())
	if err != nil {
		ctx.ResultError(err)
		return
	}
	ctx.ResultBlob(out)
}
