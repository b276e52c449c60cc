package llmgateway

import (
	"crypto/sha256"
	"os"
	"time"

	"go.uber.org/zap"
)

// watchInterval is how often the YAML file is checked. A change is applied once the file has
// stayed the same for one more interval, so a file caught half-written is not applied: the
// worst case from save to serving is about three intervals, well inside SPEC §2.3's 2 s.
const watchInterval = 250 * time.Millisecond

// yamlWatcher re-applies the handler's YAML file when it changes, without a caddy reload.
// It polls the file's metadata rather than relying on inotify, which misses the atomic renames
// and symlink swaps editors and Kubernetes ConfigMaps use, and a read happens only when the
// metadata changed.
type yamlWatcher struct {
	stop chan struct{}
	done chan struct{}
}

// fileStamp identifies a version of a file cheaply.
type fileStamp struct {
	size    int64
	modTime time.Time
	sys     any
}

func stampOf(fi os.FileInfo) fileStamp {
	return fileStamp{size: fi.Size(), modTime: fi.ModTime(), sys: inode(fi)}
}

// watchYAML starts watching path, whose content applied is current.
func (h *Handler) watchYAML(path string, current []byte) *yamlWatcher {
	return h.watchFile(path, current, h.applyYAML)
}

// watchFile starts watching path, whose content applied is current, handing each new content to
// apply, which reports whether it was applied (a rejected content is retried only once the file
// changes again).
func (h *Handler) watchFile(path string, current []byte, apply func(path string, data []byte) bool) *yamlWatcher {
	w := &yamlWatcher{stop: make(chan struct{}), done: make(chan struct{})}
	applied := sha256.Sum256(current)
	var seen fileStamp
	if fi, err := os.Stat(path); err == nil {
		seen = stampOf(fi)
	}
	go func() {
		defer close(w.done)
		ticker := time.NewTicker(watchInterval)
		defer ticker.Stop()
		pending := false
		for {
			select {
			case <-w.stop:
				return
			case <-ticker.C:
			}
			fi, err := os.Stat(path)
			if err != nil {
				continue // being replaced, or gone: keep serving what we have
			}
			st := stampOf(fi)
			if st != seen {
				seen, pending = st, true
				continue // wait one interval for the writer to finish
			}
			if !pending {
				continue
			}
			pending = false
			data, err := os.ReadFile(path)
			if err != nil {
				h.logger.Error("reading config file; keeping the running config", zap.String("file", path), zap.Error(err))
				continue
			}
			sum := sha256.Sum256(data)
			if sum == applied {
				continue
			}
			if apply(path, data) {
				applied = sum
			}
		}
	}()
	return w
}

// applyYAML builds a new generation from the YAML content and swaps it in. Calls in flight keep
// the generation they started with. On error the running config stays.
func (h *Handler) applyYAML(path string, data []byte) bool {
	prev := h.gen.Load()
	gen, err := h.build(data, prev)
	if err != nil {
		h.logger.Error("config file rejected; keeping the running config",
			zap.String("file", path), zap.Error(err))
		return false
	}
	if old := h.gen.Swap(gen); old != nil {
		old.release()
	}
	h.logger.Info("config file applied", zap.String("file", path), zap.Int("clients", len(gen.clients)))
	return true
}

// close stops the watcher and waits for it.
func (w *yamlWatcher) close() {
	close(w.stop)
	<-w.done
}
