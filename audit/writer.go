package audit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// errClosed is returned by Sync once the writer has shut down.
var errClosed = errors.New("audit writer closed")

// dropLogEvery rate-limits the queue-full warning: under overload a line per
// drop would make logging the bottleneck.
const dropLogEvery = 5 * time.Second

// writerConfig holds the settings a Writer fixes for its whole life. Settings
// that may differ per config generation (bodies, redaction) travel with each
// record as a *policy instead.
type writerConfig struct {
	path          string        // absolute database path
	rotate        bool          // monthly rotation on
	checkInterval time.Duration // rotation check period
	queueSize     int
	batchSize     int
	flushInterval time.Duration // linger for a fuller batch; <= 0: none
	policy        *policy       // used by Writer.Enqueue
	now           func() time.Time
	logger        *zap.Logger
	rotated       func(archive string) // test hook, called after each rotation
	reopened      func()               // test hook, called after checkFile reopened the path
	closedConn    func()               // test hook, called between closing the connection and removing side files

	// rollupInterval is how often the hourly rollup is written:
	// 0 means DefaultRollupInterval, < 0 every batch.
	rollupInterval time.Duration
}

// writerSettings are the tunables of writerConfig, comparable so that a
// config reusing an open writer with other values can be warned about.
type writerSettings struct {
	rotate        bool
	checkInterval time.Duration
	queueSize     int
	batchSize     int
	flushInterval time.Duration
}

func (c writerConfig) settings() writerSettings {
	return writerSettings{c.rotate, c.checkInterval, c.queueSize, c.batchSize, c.flushInterval}
}

// policy is what a config generation decides about each row's content.
type policy struct {
	bodies bodyPolicy
	redact redactor
}

// item is one queued row with the policy of the generation that produced it.
type item struct {
	rec *Record
	pol *policy
}

// Writer appends Records to one SQLite database through a bounded queue and a
// single goroutine that owns the connection and commits in batches.
//
// Writers are shared by every config generation auditing the same file and
// are reference-counted (see App.Acquire); its methods are safe for
// concurrent use.
type Writer struct {
	cfg   writerConfig
	key   any // its key in the writers pool
	queue chan item

	// mu orders Enqueue against close: once closed is set no record can
	// slip into the queue after the final drain.
	mu     sync.RWMutex
	closed bool

	stop     chan struct{}      // closed by close: drain and exit
	done     chan struct{}      // closed when run returned
	syncReq  chan chan struct{} // Sync barrier requests
	closeErr error              // set by run before done is closed
	full     chan struct{}      // Enqueue's signal that fullAt rows are queued (capacity 1)
	// fullAt is a batch's worth of rows, or half the queue if that is less: a
	// queue smaller than a batch must not fill up while the writer lingers.
	fullAt int

	dropped     atomic.Uint64
	written     atomic.Uint64
	failed      atomic.Uint64
	lastDropLog atomic.Int64 // unix nanoseconds of the last drop warning

	// Owned by the run goroutine.
	st    *store
	month int // YYYYMM of the rows in the current file; 0 if unknown (empty)
	// rotateAfter postpones rotation after a failed attempt.
	rotateAfter time.Time
	batch       []item
	buf         []byte   // scratch for Time and Headers
	hbuf        []byte   // scratch for header values
	keys        []string // scratch for header names
	// timeHead is the time last formatted up to its seconds (appendTime), of timeSec (Unix
	// seconds) in timeLoc.
	timeHead []byte
	timeSec  int64
	timeLoc  *time.Location
}

// newWriter opens the database, rotates it right away if it holds an older
// month than now (a restart in a new month) and starts the writer goroutine.
func newWriter(cfg writerConfig) (*Writer, error) {
	w, err := openWriter(cfg)
	if err != nil {
		return nil, err
	}
	go w.run()
	return w, nil
}

// openWriter is newWriter without starting the goroutine.
func openWriter(cfg writerConfig) (*Writer, error) {
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.logger == nil {
		cfg.logger = zap.NewNop()
	}
	st, err := openStore(cfg.path)
	if err != nil {
		return nil, err
	}
	prepareRollup(cfg, st)
	month, err := st.newestMonth()
	if err != nil {
		st.close()
		return nil, fmt.Errorf("reading newest row of %s: %w", cfg.path, err)
	}
	w := &Writer{
		cfg:     cfg,
		queue:   make(chan item, cfg.queueSize),
		stop:    make(chan struct{}),
		full:    make(chan struct{}, 1),
		fullAt:  max(1, min(cfg.batchSize, cfg.queueSize/2)),
		done:    make(chan struct{}),
		syncReq: make(chan chan struct{}),
		st:      st,
		month:   month,
		batch:   make([]item, 0, cfg.batchSize),
	}
	w.checkRotation()
	return w, nil
}

// Path returns the absolute path of the live database file.
func (w *Writer) Path() string { return w.cfg.path }

// Enqueue queues r for writing with the settings of the config that created
// the writer, and reports whether it was accepted. It never blocks: when the
// queue is full the record is dropped, counted (Dropped) and a rate-limited
// warning is logged. The writer owns r afterwards. Prefer Handle.Enqueue,
// which applies the caller's own generation's settings.
func (w *Writer) Enqueue(r *Record) bool {
	return w.enqueue(r, w.cfg.policy)
}

func (w *Writer) enqueue(r *Record, pol *policy) bool {
	if r.Time.IsZero() {
		r.Time = w.cfg.now()
	}
	if pol.bodies.mode == BodiesNone {
		r.Request, r.Response = nil, nil
	} else {
		r.Request = capBody(r.Request, pol.bodies.max)
		r.Response = capBody(r.Response, pol.bodies.max)
	}
	w.mu.RLock()
	if !w.closed {
		select {
		case w.queue <- item{rec: r, pol: pol}:
			w.mu.RUnlock()
			if len(w.queue) >= w.fullAt {
				// The writer may be lingering for a fuller batch: it is full.
				select {
				case w.full <- struct{}{}:
				default:
				}
			}
			return true
		default:
		}
	}
	w.mu.RUnlock()
	w.drop()
	if r.Release != nil {
		r.Release()
	}
	return false
}

func (w *Writer) drop() {
	n := w.dropped.Add(1)
	now := time.Now().UnixNano()
	last := w.lastDropLog.Load()
	if now-last < int64(dropLogEvery) || !w.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	w.cfg.logger.Warn("audit record dropped: queue full or writer closed",
		zap.String("path", w.cfg.path),
		zap.Int("queue_size", cap(w.queue)),
		zap.Uint64("dropped_total", n))
}

// QueueDepth returns the number of records waiting to be written.
func (w *Writer) QueueDepth() int { return len(w.queue) }

// QueueCapacity returns the queue's size.
func (w *Writer) QueueCapacity() int { return cap(w.queue) }

// Dropped returns how many records Enqueue refused since the writer opened.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Written returns how many records were committed since the writer opened.
func (w *Writer) Written() uint64 { return w.written.Load() }

// Failed returns how many accepted records could not be written (a database
// error, logged). Together with Dropped it counts every row lost.
func (w *Writer) Failed() uint64 { return w.failed.Load() }

// Sync waits until every record enqueued before the call is committed (or
// failed). It is meant for tests and orderly hand-offs, not the request path.
func (w *Writer) Sync(ctx context.Context) error {
	reply := make(chan struct{})
	select {
	case w.syncReq <- reply:
	case <-w.done:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-reply:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops accepting records, writes everything queued, checkpoints and
// closes the database. It waits for that until ctx is done; the drain then
// goes on in the background.
func (w *Writer) close(ctx context.Context) error {
	w.mu.Lock()
	already := w.closed
	w.closed = true
	w.mu.Unlock()
	if !already {
		close(w.stop)
	}
	select {
	case <-w.done:
		return w.closeErr
	case <-ctx.Done():
		return fmt.Errorf("closing audit writer %s: %w", w.cfg.path, ctx.Err())
	}
}

// run is the writer goroutine: the only user of the connection.
func (w *Writer) run() {
	defer close(w.done)
	// The ticker runs with rotation off too: it also notices a deleted file.
	tick := time.NewTicker(w.cfg.checkInterval)
	defer tick.Stop()
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		select {
		case it := <-w.queue:
			w.batch = append(w.batch[:0], it)
			reply := w.fill(linger)
			w.write(w.batch)
			if reply != nil {
				w.drain()
				close(reply)
			}
		case reply := <-w.syncReq:
			w.drain()
			close(reply)
		case <-tick.C:
			w.check()
		case <-w.stop:
			w.drain()
			w.closeErr = w.closeStore()
			if errors.Is(w.closeErr, errShared) {
				// Not a failure: every row is committed; SQLite tidies
				// the side files when the other connection closes.
				w.cfg.logger.Info("audit database closed while open elsewhere", zap.String("path", w.cfg.path))
				w.closeErr = nil
			}
			return
		}
	}
}

// fill adds queued records to w.batch up to batchSize, waiting at most
// flushInterval for more so that a trickle of rows still shares commits. It
// does not wake for each row that arrives meanwhile: rows wait in the queue
// until the linger ends, or until Enqueue sees a batch's worth queued and
// says so (w.full). A Sync request cuts the wait short and is returned for
// the caller to answer once the batch is written; a stop does too (run sees
// it next).
func (w *Writer) fill(linger *time.Timer) (reply chan struct{}) {
	w.take()
	if len(w.batch) >= w.cfg.batchSize || w.cfg.flushInterval <= 0 {
		return nil
	}
	linger.Reset(w.cfg.flushInterval)
	defer linger.Stop()
	for {
		select {
		case <-w.full:
			// Possibly left over from an earlier batch: wait on if too few rows came.
			if w.take(); len(w.batch) >= w.fullAt {
				return nil
			}
		case <-linger.C:
			w.take()
			return nil
		case reply = <-w.syncReq:
			w.take()
			return reply
		case <-w.stop:
			return nil
		}
	}
}

// take moves already-queued records into w.batch, up to batchSize, without
// waiting.
func (w *Writer) take() {
	for len(w.batch) < w.cfg.batchSize {
		select {
		case it := <-w.queue:
			w.batch = append(w.batch, it)
		default:
			return
		}
	}
}

// drain writes everything queued right now.
func (w *Writer) drain() {
	for {
		w.batch = w.batch[:0]
		w.take()
		if len(w.batch) == 0 {
			return
		}
		w.write(w.batch)
	}
}

// write commits batch, starting a new file first wherever a row belongs to
// a later month than the current file holds.
func (w *Writer) write(batch []item) {
	defer func() {
		// insert accounts for its rows, panic or not; a panic elsewhere (a
		// rotation) loses the rows not yet inserted, counted here.
		if v := recover(); v != nil {
			w.failed.Add(uint64(len(batch)))
			w.cfg.logger.Error("audit rows not written: panic in the writer",
				zap.String("path", w.cfg.path), zap.Int("rows", len(batch)), zap.Any("panic", v), zap.Stack("stack"))
			w.discardStore()
			clear(w.batch)
		}
	}()
	canRotate := w.cfg.rotate && !w.cfg.now().Before(w.rotateAfter)
	for len(batch) > 0 {
		n := len(batch)
		if canRotate {
			for i, it := range batch {
				m := monthOf(it.rec.Time)
				if w.month == 0 {
					w.month = m
				} else if m > w.month {
					n = i
					break
				}
			}
			if n == 0 {
				w.rotate(monthOf(batch[0].rec.Time))
				canRotate = !w.cfg.now().Before(w.rotateAfter)
				continue
			}
		}
		w.insert(batch[:n])
		batch = batch[n:]
	}
	// Every row's transaction has ended: nothing reads the records any more.
	for _, it := range w.batch {
		if it.rec.Release != nil {
			it.rec.Release()
		}
	}
	clear(w.batch) // let the records and their bodies be collected
}

// insert writes rows in one BEGIN IMMEDIATE … COMMIT transaction and
// accounts for every row: Written, or Failed and logged. A row that fails on
// its own is skipped and the others are committed; a failure that ends the
// transaction (disk full, a failed commit) loses the batch. Nothing here may
// stop the writer goroutine: a panic of the database driver loses the batch
// and the connection, which the next batch opens anew.
func (w *Writer) insert(rows []item) {
	defer func() {
		if v := recover(); v != nil {
			w.failed.Add(uint64(len(rows)))
			w.cfg.logger.Error("audit batch not written: panic in the database driver",
				zap.String("path", w.cfg.path), zap.Int("rows", len(rows)), zap.Any("panic", v), zap.Stack("stack"))
			w.discardStore()
		}
	}()
	if !w.ensureOpen() {
		w.failed.Add(uint64(len(rows)))
		w.cfg.logger.Error("audit batch not written: database unavailable", zap.String("path", w.cfg.path), zap.Int("rows", len(rows)))
		return
	}
	written, failed := w.insertBatch(rows)
	w.written.Add(written)
	w.failed.Add(failed)
}

// insertBatch does insert's work and returns how many rows were committed
// and how many were lost; it logs each loss.
func (w *Writer) insertBatch(rows []item) (written, failed uint64) {
	n := uint64(len(rows))
	conn := w.st.conn
	if err := conn.Exec(`BEGIN IMMEDIATE`); err != nil {
		w.cfg.logger.Error("audit batch not written", zap.String("path", w.cfg.path), zap.Int("rows", len(rows)), zap.Error(err))
		return 0, n
	}
	w.rollupBegin()
	var ok, bad uint64
	for len(rows) > 0 {
		if k := sharedRows(rows, rowsPerInsert); k == rowsPerInsert && w.st.insertMany != nil {
			err := w.insertMany(rows[:k])
			if err == nil {
				ok += uint64(k)
				rows = rows[k:]
				continue
			}
			if conn.GetAutocommit() {
				w.cfg.logger.Error("audit batch rolled back", zap.String("path", w.cfg.path), zap.Int("rows", len(rows)), zap.Error(err))
				w.rollupAbort()
				return 0, n
			}
			// The statement failed alone and inserted nothing: its rows are tried one by one
			// below, so that a row the database refuses fails on its own.
			for _, it := range rows[:k] {
				if !w.insertOne(it, &ok, &bad) {
					w.rollupAbort()
					return 0, n
				}
			}
			rows = rows[k:]
			continue
		}
		if !w.insertOne(rows[0], &ok, &bad) {
			w.rollupAbort()
			return 0, n
		}
		rows = rows[1:]
	}
	if !w.rollupEnd() {
		w.rollupAbort()
		return 0, n
	}
	if err := conn.Exec(`COMMIT`); err != nil {
		if !conn.GetAutocommit() {
			err = errors.Join(err, conn.Exec(`ROLLBACK`))
		}
		w.cfg.logger.Error("audit batch not committed", zap.String("path", w.cfg.path), zap.Int("rows", int(n)), zap.Error(err))
		w.rollupAbort()
		return 0, n
	}
	w.rollupCommitted()
	return ok, bad
}

// sharedRows returns how many of the first max rows may share a multi-row INSERT: all of
// them unless one has large bodies.
func sharedRows(rows []item, max int) int {
	if len(rows) < max {
		return 0
	}
	for i, it := range rows[:max] {
		if rowBytes(it) > maxSharedRowBytes {
			return i
		}
	}
	return max
}

// insertOne inserts one row with the single-row INSERT, counting it in ok or bad, and
// reports false when the failure rolled the whole transaction back (e.g. disk full): the
// rows inserted before it are gone too, and the caller gives the batch up.
func (w *Writer) insertOne(it item, ok, bad *uint64) bool {
	if err := w.insertRow(it); err != nil {
		*bad++
		w.cfg.logger.Error("audit row not written", zap.String("path", w.cfg.path), zap.String("request_id", it.rec.RequestID), zap.Error(err))
		if w.st.conn.GetAutocommit() {
			// SQLite rolled the whole transaction back.
			w.cfg.logger.Error("audit batch rolled back", zap.String("path", w.cfg.path), zap.Error(err))
			return false
		}
		return true
	}
	*ok++
	w.rollupRecord(it.rec, w.st.conn.LastInsertRowID())
	return true
}

// insertRow binds one record to the single-row INSERT and runs it.
func (w *Writer) insertRow(it item) error {
	s := w.st.insert
	if err := w.bindRow(s, 0, it); err != nil {
		s.clear()
		return fmt.Errorf("binding: %w", err)
	}
	err := s.stmt.Exec()
	s.unbindBodies(0, it)
	return err
}

// insertMany inserts rows (rowsPerInsert of them) with the multi-row INSERT and counts them
// in the rollup. On an error nothing was inserted.
func (w *Writer) insertMany(rows []item) error {
	s := w.st.insertMany
	for i, it := range rows {
		if err := w.bindRow(s, i, it); err != nil {
			s.clear()
			return fmt.Errorf("binding: %w", err)
		}
	}
	if err := s.stmt.Exec(); err != nil {
		return err
	}
	// The rows of one statement get consecutive rowids: each is one above the largest in
	// the table, and nothing else inserts meanwhile.
	first := w.st.conn.LastInsertRowID() - int64(len(rows)) + 1
	for i, it := range rows {
		w.rollupRecord(it.rec, first+int64(i))
	}
	return nil
}

// ensureOpen reopens the database after a failed rotation left it closed.
func (w *Writer) ensureOpen() bool {
	if w.st != nil {
		return true
	}
	st, err := openStore(w.cfg.path)
	if err != nil {
		w.cfg.logger.Error("audit database unavailable", zap.String("path", w.cfg.path), zap.Error(err))
		return false
	}
	prepareRollup(w.cfg, st)
	w.st = st
	return true
}

// check runs the periodic checks. A panic in them (the driver, closing or
// opening a file) is logged and the connection dropped: the next insert
// opens it again, and the writer goroutine lives on.
func (w *Writer) check() {
	defer func() {
		if v := recover(); v != nil {
			w.cfg.logger.Error("audit database check failed: panic in the writer",
				zap.String("path", w.cfg.path), zap.Any("panic", v), zap.Stack("stack"))
			w.discardStore()
		}
	}()
	w.checkFile()
	w.rollupIdle()
	w.checkRotation()
}

// checkFile opens a new database when the path no longer leads to the open
// file: deleted (an operator's rm) or replaced. SQLite would go on writing
// to the unlinked file, and every later row would be lost unseen.
func (w *Writer) checkFile() {
	if w.st == nil {
		return // the next insert opens the path anew
	}
	fi, err := os.Stat(w.cfg.path)
	if err == nil && w.st.file != nil && os.SameFile(fi, w.st.file) {
		return
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Unreadable for now (permissions, a stale mount): no verdict.
		w.cfg.logger.Warn("audit database path unreadable", zap.String("path", w.cfg.path), zap.Error(err))
		return
	}
	w.cfg.logger.Warn("audit database file deleted or replaced under the writer; starting a new one",
		zap.String("path", w.cfg.path), zap.Bool("deleted", err != nil))
	if err := w.closeStore(); err != nil && !errors.Is(err, errShared) {
		w.cfg.logger.Warn("closing the lost audit database", zap.String("path", w.cfg.path), zap.Error(err))
	}
	w.month = 0
	if w.ensureOpen() {
		if m, err := w.st.newestMonth(); err == nil {
			w.month = m
		}
	}
	if w.cfg.reopened != nil {
		w.cfg.reopened()
	}
}

// discardStore drops a connection whose state a panic made doubtful,
// without the tidy close (which might fail the same way); the next insert
// opens a new one.
func (w *Writer) discardStore() {
	st := w.st
	w.st = nil
	if st == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			w.cfg.logger.Error("closing audit database after a driver panic", zap.String("path", w.cfg.path), zap.Any("panic", v))
		}
	}()
	_ = st.insert.close()
	_ = st.insertMany.close()
	if st.rollup != nil {
		st.rollup.close()
	}
	_ = st.conn.Close()
}

// checkRotation rotates when the clock has moved past the month the current
// file holds, so a month's file is archived on time even if no row comes.
func (w *Writer) checkRotation() {
	if !w.cfg.rotate || w.month == 0 || w.cfg.now().Before(w.rotateAfter) {
		return
	}
	if m := monthOf(w.cfg.now()); m > w.month {
		w.rotate(m)
	}
}

// rotate archives the current file as <stem>_YYYYMM.db (its month) and
// starts a fresh one for newMonth. If the file cannot be moved cleanly (open
// elsewhere, rename failed) it is reopened, keeps taking rows, and rotation
// is retried after check_interval: losing rows or separating a database
// from its WAL would be worse than a late archive.
func (w *Writer) rotate(newMonth int) {
	log := w.cfg.logger.With(zap.String("path", w.cfg.path), zap.Int("month", w.month))
	err := w.closeStore()
	var archive string
	if err == nil {
		archive = archivePath(w.cfg.path, w.month, w.cfg.now())
		err = os.Rename(w.cfg.path, archive)
	}
	if err != nil {
		w.rotateAfter = w.cfg.now().Add(w.cfg.checkInterval)
		log.Error("audit database rotation postponed", zap.Duration("retry_in", w.cfg.checkInterval), zap.Error(err))
		w.ensureOpen()
		return
	}
	log.Info("audit database rotated", zap.String("archive", archive))
	w.month = newMonth
	w.ensureOpen()
	if w.cfg.rotated != nil {
		w.cfg.rotated(archive)
	}
}

// closeStore closes the connection, leaving no side file beside the
// database unless another connection still uses them (errShared).
func (w *Writer) closeStore() error {
	if w.st == nil {
		return nil
	}
	err := w.st.close()
	w.st = nil
	if err != nil {
		return err
	}
	if w.cfg.closedConn != nil {
		w.cfg.closedConn()
	}
	return removeSideFiles(w.cfg.path)
}
