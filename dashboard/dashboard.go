// Package dashboard implements the llm_dashboard HTTP handler (SPEC §13): a
// usage dashboard page and its JSON API over the llm_audit SQLite database,
// its monthly archives and optionally other nodes' files, read through
// read-only connections that never block the audit writer.
//
// Mount it where operators want it, behind Caddy's own authentication:
//
//	redir /usage /usage/
//	handle_path /usage/* {
//		basic_auth {
//			admin $2a$14$…
//		}
//		llm_dashboard
//	}
//
// Every URL the page uses is relative to the mount, so any prefix works.
package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

func init() {
	caddy.RegisterModule(new(Handler))
	httpcaddyfile.RegisterHandlerDirective("llm_dashboard", parseCaddyfile)
	// After authentication (basic_auth, forward_auth come earlier in
	// Caddy's order), before the handlers that answer everything.
	httpcaddyfile.RegisterDirectiveOrder("llm_dashboard", httpcaddyfile.Before, "respond")
}

// Defaults and bounds.
const (
	// DefaultQueryTimeout bounds one API call's database work.
	DefaultQueryTimeout = 30 * time.Second
	// maxConcurrentQueries bounds the API calls reading the database at
	// once; more wait their turn (until their request ends). Each holds a
	// connection per file read, and a SQLite connection in wasm reserves
	// its own memory.
	maxConcurrentQueries = 4
	// busyTimeout bounds how long a read waits for a lock (the writer
	// leaving WAL mode at rotation or shutdown).
	busyTimeout = 5 * time.Second
)

// Handler is the llm_dashboard handler. It answers every request under its
// mount: the page at the root, its assets under static/, and the JSON API
// under api/ (docs/dashboard.md).
type Handler struct {
	// Databases are glob patterns of database files to report as one, e.g.
	// the audit files of several nodes on shared storage (archives too, if
	// the patterns match them). Default: the llm_audit app's database and
	// its monthly archives.
	Databases []string `json:"databases,omitempty"`

	// QueryTimeout bounds the database work of one API call. Default: 30s.
	QueryTimeout caddy.Duration `json:"query_timeout,omitempty"`

	auditPath string // the llm_audit app's live file; "" with Databases
	sem       chan struct{}
	logger    *zap.Logger
	now       func() time.Time
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.llm_dashboard",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the database to read.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.now = time.Now
	if h.QueryTimeout == 0 {
		h.QueryTimeout = caddy.Duration(DefaultQueryTimeout)
	}
	if err := h.Validate(); err != nil {
		return err
	}
	h.sem = make(chan struct{}, maxConcurrentQueries)
	if len(h.Databases) > 0 {
		return nil
	}
	app, err := ctx.AppIfConfigured("llm_audit")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return errors.New("llm_dashboard: no database: configure the llm_audit global option or list databases")
	}
	if err != nil {
		return fmt.Errorf("llm_dashboard: loading llm_audit: %w", err)
	}
	h.auditPath = app.(*audit.App).DatabasePath()
	return nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	var errs []error
	for _, p := range h.Databases {
		if p == "" {
			errs = append(errs, errors.New("databases: empty pattern"))
		} else if _, err := filepath.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("databases %q: %w", p, err))
		}
	}
	if h.QueryTimeout < 0 {
		errs = append(errs, fmt.Errorf("query_timeout %s: must be positive", time.Duration(h.QueryTimeout)))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("llm_dashboard: %w", err)
	}
	return nil
}

// ServeHTTP answers the page, its assets and the API; it never calls next:
// everything under the mount is the dashboard's.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		if strings.HasPrefix(r.URL.Path, "/api/") {
			writeError(w, &apiError{status: http.StatusMethodNotAllowed, typ: errTypeInvalidRequest, message: "method " + r.Method + " not allowed: use GET"})
			return nil
		}
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return nil
	}
	p := r.URL.Path
	switch {
	case p == "" || p == "/":
		if to, ok := needsSlash(r); ok {
			http.Redirect(w, r, to, http.StatusPermanentRedirect)
			return nil
		}
		serveIndex(w, r)
	case strings.HasPrefix(p, "/static/"):
		serveStatic(w, r, p[len("/static/"):])
	case strings.HasPrefix(p, "/api/"):
		h.serveAPI(w, r, p[len("/api/"):])
	default:
		http.NotFound(w, r)
	}
	return nil
}

// needsSlash returns where to redirect a request for the mount point
// without its trailing slash ("/usage" with handle_path /usage*): the page's
// relative URLs resolve against the directory, so it must end in "/".
func needsSlash(r *http.Request) (string, bool) {
	orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
	if !ok || orig.URL == nil || strings.HasSuffix(orig.URL.Path, "/") {
		return "", false
	}
	u := *orig.URL
	u.Path += "/"
	u.RawPath = ""
	return u.RequestURI(), true
}

// acquire takes one of the concurrent query slots until release, or fails
// when ctx ends first.
func (h *Handler) acquire(ctx context.Context) (release func(), err error) {
	select {
	case h.sem <- struct{}{}:
		return func() { <-h.sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// parseCaddyfile sets up the handler from Caddyfile tokens:
//
//	llm_dashboard {
//		databases <glob>...
//		query_timeout <duration>
//	}
//
// Both are optional; without databases the llm_audit app's database and its
// archives are read.
func parseCaddyfile(hh httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h := new(Handler)
	if err := h.UnmarshalCaddyfile(hh.Dispenser); err != nil {
		return nil, err
	}
	return h, nil
}

// UnmarshalCaddyfile implements caddyfile.Unmarshaler.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "databases":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.Databases = append(h.Databases, args...)
		case "query_timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("query_timeout %q: %v", d.Val(), err)
			}
			if dur <= 0 {
				return d.Errf("query_timeout %q: must be positive", d.Val())
			}
			h.QueryTimeout = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown llm_dashboard option %q", d.Val())
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
