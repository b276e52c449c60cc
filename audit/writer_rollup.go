package audit

import (
	"errors"

	"go.uber.org/zap"
)

// The writer's hooks into the hourly rollup (rollup.go): each inserted row
// is summed, and the sums are written in a batch's transaction when due.

// rollupBegin is called as a batch's transaction starts.
func (w *Writer) rollupBegin() {
	if ru := w.st.rollup; ru != nil {
		ru.beginBatch()
	}
}

// rollupRecord counts a row just inserted with the given rowid.
func (w *Writer) rollupRecord(r *Record, rowid int64) {
	if ru := w.st.rollup; ru != nil {
		ru.record(r, rowid)
	}
}

// rollupAbort forgets the sums of a batch that did not commit.
func (w *Writer) rollupAbort() {
	if w.st != nil && w.st.rollup != nil {
		w.st.rollup.abort()
	}
}

// rollupCommitted is called once the batch committed.
func (w *Writer) rollupCommitted() {
	if ru := w.st.rollup; ru != nil {
		ru.committed()
	}
}

// rollupEnd writes the sums when due, before the batch commits, and
// reports whether the batch may commit. When the rollup cannot be updated
// it is dropped in the same transaction, so that no reader trusts a rollup
// missing rows; the rows are kept and the next open of the file rebuilds
// it. Only if even that fails is the batch given up (false).
func (w *Writer) rollupEnd() bool {
	ru := w.st.rollup
	if ru == nil {
		return true
	}
	err := ru.endBatch()
	if err == nil {
		return true
	}
	conn := w.st.conn
	log := w.cfg.logger.With(zap.String("path", w.cfg.path))
	if conn.GetAutocommit() {
		log.Error("audit batch rolled back while updating the hourly rollup", zap.Error(err))
		return false
	}
	ru.abort()
	ru.close()
	w.st.rollup = nil
	if derr := conn.Exec(dropRollup); derr != nil {
		err = errors.Join(err, derr)
		if !conn.GetAutocommit() {
			err = errors.Join(err, conn.Exec(`ROLLBACK`))
		}
		log.Error("audit batch not written: the hourly rollup could be neither updated nor dropped", zap.Error(err))
		return false
	}
	log.Warn("hourly rollup dropped: it could not be updated; the rows are kept and it is rebuilt when the file is next opened", zap.Error(err))
	return true
}

// rollupIdle writes sums left pending by the last batches once they are
// due, so the rollup catches up when traffic stops.
func (w *Writer) rollupIdle() {
	if w.st == nil || w.st.rollup == nil {
		return
	}
	if err := w.st.rollup.flushIdle(false); err != nil {
		w.cfg.logger.Warn("writing the hourly rollup failed; retried with the next batch", zap.String("path", w.cfg.path), zap.Error(err))
	}
}

// prepareRollup applies the writer's settings to a freshly opened store's
// rollup, or reports why it has none: rows are written all the same, and
// readers read them directly.
func prepareRollup(cfg writerConfig, st *store) {
	if st.rollupErr != nil {
		cfg.logger.Warn("audit database without hourly rollup: the dashboard reads its rows directly",
			zap.String("path", cfg.path), zap.Error(st.rollupErr))
		return
	}
	if cfg.rollupInterval != 0 {
		st.rollup.interval = cfg.rollupInterval
	}
}
