// Package audit implements the llm_audit Caddy app: a SQLite audit log with
// one row per API call, written off the request path by a batching writer,
// rotated monthly, and summarised by the `caddy llm-audit` command.
//
// A handler uses it like this:
//
//	// Provision: nil when auditing is not configured.
//	if app, err := ctx.AppIfConfigured("llm_audit"); err == nil {
//		h.audit = app.(*audit.App)
//	} else if !errors.Is(err, caddy.ErrNotConfigured) {
//		return err
//	}
//
//	// ServeHTTP: hold a reference for the whole request, so the writer
//	// outlives a reload that drops the app while this request still streams.
//	ah, err := h.audit.Acquire() // a nil *App gives a no-op Handle
//	if err != nil {
//		// database unavailable: log and count; ah is the no-op Handle
//	}
//	defer ah.Release()
//	…
//	ah.Enqueue(rec) // after the response ended
package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(App))
}

// Environment variables the origin system read, honoured as defaults.
const (
	envPath          = "RECD_PATH"
	envCheckInterval = "DB_ROTATION_CHECK_INTERVAL_SEC"
)

// Defaults of the App's settings.
const (
	DefaultPath          = "./logs/record.db"
	DefaultCheckInterval = 60 * time.Second
	DefaultQueueSize     = 8192
	DefaultBatchSize     = 256
	// DefaultFlushInterval bounds how long a row waits for others to share
	// its commit. At 2,000 req/s it yields ~200-row batches (one commit per
	// tick instead of one per row), it is imperceptible to anyone querying
	// the log, and it only matters on a crash: reloads and shutdowns drain
	// the queue.
	DefaultFlushInterval = 100 * time.Millisecond
	// DefaultMaxBodySize is the most bytes stored of one body by default:
	// enough for any ordinary prompt or answer, small enough that rows stay
	// quick to insert and the queue stays small.
	DefaultMaxBodySize = 1 << 20
	// MaxBodySizeLimit bounds max_body_size. SQLite runs in wasm with
	// 256 MiB per connection, and a row is copied several times while it is
	// inserted (the bound values, their TEXT casts, the record): two bodies
	// of 16 MiB fit with room to spare, much larger ones may not.
	MaxBodySizeLimit = 16 << 20
	// closeTimeout bounds the final drain when the last reference goes.
	closeTimeout = 30 * time.Second
)

// Rotation modes, the values of App.Rotate.
const (
	RotateMonthly = "monthly"
	RotateOff     = "off"
)

// DefaultRedactHeaders are the request headers masked unless configured.
var DefaultRedactHeaders = []string{"Authorization", "X-Api-Key", "Api-Key", "Proxy-Authorization", "Cookie"}

// writers holds one Writer per absolute database path, shared by every
// config generation and in-flight request that uses it. It is the one piece
// of package state: it must outlive any single config.
var writers = caddy.NewUsagePool()

// App is the llm_audit app. It owns (a reference to) the SQLite writer for
// its path; handlers find it with ctx.AppIfConfigured("llm_audit") and write
// through App.Acquire. When the app is not configured nothing is audited.
type App struct {
	// Path of the live database file. Default: $RECD_PATH without a leading
	// "sqlite:" (the origin's variable), else ./logs/record.db. Relative
	// paths are resolved against the working directory; {env.*}
	// placeholders are expanded. Archives are written beside it.
	Path string `json:"path,omitempty"`

	// Rotate is "monthly" (default): when rows of a new month (local time)
	// arrive, or the clock passes into one, the file is archived as
	// <stem>_YYYYMM.db and a fresh one started. "off" never rotates.
	Rotate string `json:"rotate,omitempty"`

	// CheckInterval is how often the clock is checked for a month change
	// (rows of a new month trigger rotation at once regardless). Default:
	// $DB_ROTATION_CHECK_INTERVAL_SEC seconds, else 60s. Zero or negative,
	// configured or from the environment, is a configuration error. A
	// pointer so that an explicit 0 is told apart from unset.
	CheckInterval *caddy.Duration `json:"check_interval,omitempty"`

	// Bodies decides what is stored of request and response bodies: "full"
	// (default), "none" (NULL), or "truncate" (the first TruncateBytes
	// bytes, cut on a UTF-8 boundary).
	Bodies string `json:"bodies,omitempty"`

	// TruncateBytes is the number of bytes kept per body with bodies
	// "truncate"; required (> 0) then, not allowed otherwise.
	TruncateBytes int `json:"truncate_bytes,omitempty"`

	// MaxBodySize is the most bytes stored of each request and response
	// body (bodies full or truncate). A longer body keeps its first
	// MaxBodySize bytes, cut on a UTF-8 boundary, followed by the marker
	// "…[truncated: <size> bytes total]"; a stream stops collecting its
	// response object (or, on the generic passthrough, its transcript)
	// there and only counts the rest. Default: 1 MiB; at most
	// MaxBodySizeLimit (16 MiB).
	MaxBodySize int `json:"max_body_size,omitempty"`

	// RedactHeaders lists request headers (case-insensitive) whose values are
	// masked in the Headers column: "sk-ab…yz" for long values, "***" for
	// short ones; an auth scheme such as "Bearer" stays readable. Default:
	// Authorization, X-Api-Key, Api-Key, Proxy-Authorization, Cookie.
	RedactHeaders []string `json:"redact_headers,omitempty"`

	// QueueSize is how many records may wait for the writer before new ones
	// are dropped (and counted). Default: 8192.
	QueueSize int `json:"queue_size,omitempty"`

	// BatchSize is the most rows committed in one transaction. Default: 256.
	BatchSize int `json:"batch_size,omitempty"`

	// FlushInterval is how long the writer waits for a batch to fill before
	// committing what it has. Default: 100ms; negative commits at once.
	FlushInterval caddy.Duration `json:"flush_interval,omitempty"`

	key    any // absolute path, boxed once: the writers pool key
	pol    policy
	wcfg   writerConfig
	writer atomic.Pointer[Writer] // set while the app holds its reference
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "llm_audit",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision applies defaults, validates and opens (or joins) the writer for
// the path. The writer is opened here rather than in Start because apps
// start in random order and handlers may need it first.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if err := a.setDefaults(); err != nil {
		return err
	}
	if err := a.Validate(); err != nil {
		return err
	}
	abs, err := filepath.Abs(a.Path)
	if err != nil {
		return fmt.Errorf("resolving audit path %q: %w", a.Path, err)
	}
	a.key = abs // boxed here, not on every Acquire
	a.pol = policy{
		bodies: bodyPolicy{mode: a.Bodies, limit: a.TruncateBytes, max: a.MaxBodySize},
		redact: newRedactor(a.RedactHeaders),
	}
	a.wcfg = writerConfig{
		path:          abs,
		rotate:        a.Rotate == RotateMonthly,
		checkInterval: time.Duration(*a.CheckInterval),
		queueSize:     a.QueueSize,
		batchSize:     a.BatchSize,
		flushInterval: time.Duration(a.FlushInterval),
		policy:        &a.pol,
		logger:        a.logger,
	}
	w, loaded, err := a.acquire()
	if err != nil {
		return err
	}
	a.writer.Store(w)
	if loaded && w.cfg.settings() != a.wcfg.settings() {
		a.logger.Warn("audit writer already open for this path keeps its queue, batch and rotation settings until every config using it is unloaded",
			zap.String("path", abs))
	}
	return nil
}

// setDefaults fills unset fields, reading the origin's environment variables.
func (a *App) setDefaults() error {
	repl := caddy.NewReplacer()
	a.Path = repl.ReplaceKnown(a.Path, "")
	if a.Path == "" {
		a.Path = pathFromEnv(os.Getenv(envPath))
	}
	if a.Rotate == "" {
		a.Rotate = RotateMonthly
	}
	if a.CheckInterval == nil {
		d := caddy.Duration(DefaultCheckInterval)
		if v, ok := os.LookupEnv(envCheckInterval); ok && strings.TrimSpace(v) != "" {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n <= 0 {
				return fmt.Errorf("%s=%q: want a positive number of seconds", envCheckInterval, v)
			}
			d = caddy.Duration(time.Duration(n) * time.Second)
		}
		a.CheckInterval = &d
	}
	if a.Bodies == "" {
		a.Bodies = BodiesFull
	}
	if a.MaxBodySize == 0 {
		a.MaxBodySize = DefaultMaxBodySize
	}
	if a.RedactHeaders == nil {
		a.RedactHeaders = DefaultRedactHeaders
	}
	if a.QueueSize == 0 {
		a.QueueSize = DefaultQueueSize
	}
	if a.BatchSize == 0 {
		a.BatchSize = DefaultBatchSize
	}
	if a.FlushInterval == 0 {
		a.FlushInterval = caddy.Duration(DefaultFlushInterval)
	}
	return nil
}

// pathFromEnv turns the origin's RECD_PATH (a sqlx URL such as
// "sqlite:./logs/record.db" or "sqlite:///abs/record.db?mode=rwc") into a
// file path, or returns DefaultPath when it is empty.
func pathFromEnv(v string) string {
	v = strings.TrimSpace(v)
	if rest, ok := strings.CutPrefix(v, "sqlite:"); ok {
		v = rest
		if rest, ok := strings.CutPrefix(v, "//"); ok {
			v = rest
		}
		v, _, _ = strings.Cut(v, "?")
	}
	if v == "" {
		return DefaultPath
	}
	return v
}

// Validate checks the configuration. Provision calls it before opening the
// database so that a bad config never touches the file.
func (a *App) Validate() error {
	var errs []error
	switch a.Rotate {
	case "", RotateMonthly, RotateOff:
	default:
		errs = append(errs, fmt.Errorf("rotate %q: want %s or %s", a.Rotate, RotateMonthly, RotateOff))
	}
	if a.CheckInterval != nil && *a.CheckInterval <= 0 {
		errs = append(errs, fmt.Errorf("check_interval %s: must be positive", time.Duration(*a.CheckInterval)))
	}
	switch a.Bodies {
	case "", BodiesFull, BodiesNone:
		if a.TruncateBytes != 0 {
			errs = append(errs, errors.New("truncate_bytes is only valid with bodies truncate"))
		}
	case BodiesTruncate:
		if a.TruncateBytes <= 0 {
			errs = append(errs, fmt.Errorf("bodies truncate needs truncate_bytes > 0, got %d", a.TruncateBytes))
		}
	default:
		errs = append(errs, fmt.Errorf("bodies %q: want %s, %s or %s", a.Bodies, BodiesFull, BodiesNone, BodiesTruncate))
	}
	if a.MaxBodySize < 0 || a.MaxBodySize > MaxBodySizeLimit {
		errs = append(errs, fmt.Errorf("max_body_size %d: want 1 to %d bytes", a.MaxBodySize, MaxBodySizeLimit))
	}
	if a.QueueSize < 0 {
		errs = append(errs, fmt.Errorf("queue_size %d: must be positive", a.QueueSize))
	}
	if a.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("batch_size %d: must be positive", a.BatchSize))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("llm_audit: %w", err)
	}
	return nil
}

// Start is a no-op: the writer runs from Provision on.
func (*App) Start() error { return nil }

// Stop is a no-op: requests still running on this config keep writing
// through their Handles; Cleanup drops the app's own reference.
func (*App) Stop() error { return nil }

// Cleanup releases the app's reference to the writer. The writer drains and
// closes once no app or request holds it any more.
func (a *App) Cleanup() error {
	if a.writer.Swap(nil) == nil {
		return nil
	}
	_, err := writers.Delete(a.key)
	return err
}

// Writer returns the writer this app feeds, for metrics (QueueDepth,
// Dropped). It is nil before Provision and after Cleanup. To write, use
// Acquire: a Writer pointer alone does not keep the database open.
func (a *App) Writer() *Writer { return a.writer.Load() }

// Acquire returns a Handle holding a reference to the writer for the app's
// path, opening it again if every earlier reference is gone (a request that
// outlived its config's Cleanup still gets its row written). Each successful
// Acquire must be matched by one Handle.Release. A nil App yields a zero
// Handle, on which every method is a no-op, so callers need no branch.
func (a *App) Acquire() (Handle, error) {
	if a == nil {
		return Handle{}, nil
	}
	if a.key == nil {
		return Handle{}, errors.New("llm_audit app used before Provision")
	}
	w, _, err := a.acquire()
	if err != nil {
		return Handle{}, err
	}
	return Handle{w: w, pol: &a.pol}, nil
}

// acquire takes one reference on the pooled writer, creating it if needed.
func (a *App) acquire() (*Writer, bool, error) {
	v, loaded, err := writers.LoadOrNew(a.key, func() (caddy.Destructor, error) {
		pl := lockPath(a.key)
		pl.Lock()
		w, err := newWriter(a.wcfg)
		pl.Unlock()
		if err != nil {
			_, _ = pathLocks.Delete(a.key)
			return nil, fmt.Errorf("opening audit database: %w", err)
		}
		w.key = a.key
		return pooledWriter{w, pl}, nil
	})
	if err != nil {
		return nil, false, err
	}
	return v.(pooledWriter).Writer, loaded, nil
}

// pooledWriter lets the pool close a Writer without Writer exporting a
// Destruct method that handlers could call on a shared writer.
type pooledWriter struct {
	*Writer
	pl *pathLock // held while the writer opens and closes its file
}

// Destruct drains and closes the writer; the pool calls it when the last
// reference is released.
func (p pooledWriter) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	p.pl.Lock()
	err := p.close(ctx)
	p.pl.Unlock()
	_, _ = pathLocks.Delete(p.key)
	return err
}

// pathLocks serialises opening and closing the database at one path. The pool
// calls Destruct after it dropped the writer, so a config loaded at that moment
// creates a new writer for the same path while the old one still closes; the
// old close leaves WAL mode and removes the side files, which would pull the
// new connection's -wal and -shm from under it (SQLite: disk I/O error). With
// the lock, the new writer opens once the old one has closed.
var pathLocks = caddy.NewUsagePool()

type pathLock struct{ sync.Mutex }

func (*pathLock) Destruct() error { return nil }

// lockPath returns the lock of the database at key, taking one reference on
// it; pathLocks.Delete(key) drops it.
func lockPath(key any) *pathLock {
	v, _, _ := pathLocks.LoadOrNew(key, func() (caddy.Destructor, error) { return new(pathLock), nil })
	return v.(*pathLock)
}

// Handle is one counted reference to a Writer, taken per request with
// App.Acquire so that the database stays open until the request's row is
// queued, whatever happens to the config meanwhile. The zero Handle is valid
// and does nothing. A Handle is a small value: copy it freely, but Release
// exactly once.
type Handle struct {
	w   *Writer
	pol *policy
}

// Enqueue queues r with the bodies and redaction settings of the config that
// issued the handle. It never blocks and reports whether r was accepted (see
// Writer.Enqueue). The writer owns r afterwards.
func (h Handle) Enqueue(r *Record) bool {
	if h.w == nil {
		return false
	}
	return h.w.enqueue(r, h.pol)
}

// Writer returns the underlying writer, nil for the zero Handle.
func (h Handle) Writer() *Writer { return h.w }

// Release gives the reference back. When it was the last one the writer
// drains its queue and closes before Release returns.
func (h Handle) Release() error {
	if h.w == nil {
		return nil
	}
	_, err := writers.Delete(h.w.key)
	return err
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ caddy.Destructor   = pooledWriter{}
)
