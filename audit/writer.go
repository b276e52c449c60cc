package audit

import (
	"context"
	"errors"
	"fmt"
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
	month, err := st.newestMonth()
	if err != nil {
		st.close()
		return nil, fmt.Errorf("reading newest row of %s: %w", cfg.path, err)
	}
	w := &Writer{
		cfg:     cfg,
		queue:   make(chan item, cfg.queueSize),
		stop:    make(chan struct{}),
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
	w.mu.RLock()
	if !w.closed {
		select {
		case w.queue <- item{rec: r, pol: pol}:
			w.mu.RUnlock()
			return true
		default:
		}
	}
	w.mu.RUnlock()
	w.drop()
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
	var tick <-chan time.Time
	if w.cfg.rotate {
		t := time.NewTicker(w.cfg.checkInterval)
		defer t.Stop()
		tick = t.C
	}
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
		case <-tick:
			w.checkRotation()
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
// flushInterval for more so that a trickle of rows still shares commits. A
// Sync request cuts the wait short and is returned for the caller to answer
// once the batch is written; a stop does too (run sees it next).
func (w *Writer) fill(linger *time.Timer) (reply chan struct{}) {
	w.take()
	if len(w.batch) >= w.cfg.batchSize || w.cfg.flushInterval <= 0 {
		return nil
	}
	linger.Reset(w.cfg.flushInterval)
	defer linger.Stop()
	for len(w.batch) < w.cfg.batchSize {
		select {
		case it := <-w.queue:
			w.batch = append(w.batch, it)
		case <-linger.C:
			return nil
		case reply = <-w.syncReq:
			return reply
		case <-w.stop:
			return nil
		}
	}
	return nil
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
	clear(w.batch) // let the records and their bodies be collected
}

// insert writes rows in one BEGIN IMMEDIATE … COMMIT transaction. A row
// that fails on its own is logged and skipped; a failed commit loses the batch.
func (w *Writer) insert(rows []item) {
	if !w.ensureOpen() {
		w.failed.Add(uint64(len(rows)))
		return
	}
	conn := w.st.conn
	if err := conn.Exec(`BEGIN IMMEDIATE`); err != nil {
		w.failed.Add(uint64(len(rows)))
		w.cfg.logger.Error("audit batch not written", zap.String("path", w.cfg.path), zap.Int("rows", len(rows)), zap.Error(err))
		return
	}
	var ok, bad uint64
	for _, it := range rows {
		if err := w.insertRow(it); err != nil {
			bad++
			w.cfg.logger.Error("audit row not written", zap.String("path", w.cfg.path), zap.String("request_id", it.rec.RequestID), zap.Error(err))
			if conn.GetAutocommit() {
				// SQLite rolled the whole transaction back (e.g. disk full).
				w.failed.Add(uint64(len(rows)) - ok)
				return
			}
			continue
		}
		ok++
	}
	if err := conn.Exec(`COMMIT`); err != nil {
		if !conn.GetAutocommit() {
			err = errors.Join(err, conn.Exec(`ROLLBACK`))
		}
		w.failed.Add(uint64(len(rows)))
		w.cfg.logger.Error("audit batch not committed", zap.String("path", w.cfg.path), zap.Int("rows", len(rows)), zap.Error(err))
		return
	}
	w.written.Add(ok)
	w.failed.Add(bad)
}

// insertRow binds one record to the prepared INSERT and runs it.
func (w *Writer) insertRow(it item) error {
	r, pol, s := it.rec, it.pol, w.st.insert
	w.buf = r.Time.Local().AppendFormat(w.buf[:0], TimeLayout)
	errs := [...]error{
		s.BindRawText(1, w.buf),
		s.BindText(2, r.IP),
		s.BindText(3, r.Model),
		s.BindText(4, r.Type),
		s.BindInt64(5, r.CompletionTokens),
		s.BindInt64(6, r.PromptTokens),
		s.BindInt64(7, r.TotalTokens),
		s.BindBool(8, r.Tool),
		s.BindBool(9, r.Multimodal),
		w.bindHeaders(10, r, pol),
		s.BindBlob(11, pol.bodies.apply(r.Request)),
		s.BindBlob(12, pol.bodies.apply(r.Response)),
		s.BindText(13, r.Backend),
		s.BindInt(14, r.Status),
		s.BindInt64(15, r.LatencyMs),
		w.bindTTFT(16, r),
		s.BindBool(17, r.Stream),
		s.BindText(18, r.Endpoint),
		s.BindText(19, r.RequestID),
		s.BindText(20, r.Tried),
		s.BindText(21, r.Error),
	}
	if err := errors.Join(errs[:]...); err != nil {
		return fmt.Errorf("binding: %w", err)
	}
	return s.Exec()
}

func (w *Writer) bindHeaders(param int, r *Record, pol *policy) error {
	if r.Headers == nil {
		return w.st.insert.BindNull(param)
	}
	w.buf, w.keys = appendHeadersJSON(w.buf[:0], r.Headers, pol.redact, w.keys, &w.hbuf)
	return w.st.insert.BindBlob(param, w.buf)
}

func (w *Writer) bindTTFT(param int, r *Record) error {
	if !r.Stream || r.TTFTMs < 0 {
		return w.st.insert.BindNull(param)
	}
	return w.st.insert.BindInt64(param, r.TTFTMs)
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
	w.st = st
	return true
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
	return removeSideFiles(w.cfg.path)
}
