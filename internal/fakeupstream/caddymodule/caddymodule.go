// Package caddymodule registers the fake OpenAI upstream (package fakeupstream) as the Caddy
// HTTP handler http.handlers.fake_openai, with the Caddyfile directive fake_openai, so the
// example config can serve the gateway and its upstream from one process.
//
// Only the development binary (cmd/caddy) and tests import this package. The module package
// github.com/llmgw/caddy-llm-gateway never does, so a binary built with xcaddy contains no fake
// upstream: it is a test double, not something to deploy.
package caddymodule

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

func init() {
	caddy.RegisterModule(new(Handler))
	httpcaddyfile.RegisterHandlerDirective("fake_openai", parseCaddyfile)
	// A terminal handler, like file_server: after everything that could answer first.
	httpcaddyfile.RegisterDirectiveOrder("fake_openai", httpcaddyfile.Before, "file_server")
}

// Handler answers every request with the fake OpenAI-compatible upstream: the API under /v1
// and the control endpoints under /_fake/ (see package fakeupstream). It never calls the next
// handler.
type Handler struct {
	// Name names the fake in its answers ("hello from <name>") and its X-Fake-Upstream
	// header. Default: "fake".
	Name string `json:"name,omitempty"`
	// Settings are the initial settings, in the JSON form of fakeupstream.Settings (snake_case,
	// durations as Go duration strings). POST /_fake/settings changes them at run time.
	Settings *fakeupstream.Settings `json:"settings,omitempty"`

	srv *fakeupstream.Server
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.fake_openai",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision makes the fake. Each config load gets a fresh one: its settings and counters start
// over, as a restarted fake upstream's would.
func (h *Handler) Provision(caddy.Context) error {
	name := h.Name
	if name == "" {
		name = "fake"
	}
	h.srv = fakeupstream.New(name)
	if h.Settings != nil {
		h.srv.Set(*h.Settings)
	}
	return nil
}

// ServeHTTP answers the request with the fake.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.srv.ServeHTTP(w, r)
	return nil
}

// Cleanup cuts the fake's delayed answers when the process exits, so a fake configured to
// stall (delay, chunk_delay) does not hold up Ctrl-C. On a reload the old fake's answers in
// flight finish undisturbed, like the gateway's.
func (h *Handler) Cleanup() error {
	if h.srv != nil && caddy.Exiting() {
		return h.srv.Close()
	}
	return nil
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	fake_openai [<name>] {
//		content     <text>        # assistant text; default "hello from <name>"
//		chunks      <n>           # content chunks per stream; default 3
//		chunk_delay <duration>    # pause between stream chunks; default 0
//		delay       <duration>    # wait before the response headers; default 0
//		status      <code>        # answer every API call with this status; default 200
//		models      <id...>       # ids listed by GET /v1/models; default <name>-model
//	}
//
// Every other setting of fakeupstream.Settings is available in the JSON config.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		h.Name = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	var set fakeupstream.Settings
	changed := false
	for d.NextBlock(0) {
		opt := d.Val()
		args := d.RemainingArgs()
		if len(args) == 0 || (opt != "models" && len(args) != 1) {
			return d.ArgErr()
		}
		changed = true
		var err error
		switch opt {
		case "content":
			set.Content = args[0]
		case "chunks":
			set.Chunks, err = positiveInt(args[0])
		case "status":
			set.Status, err = strconv.Atoi(args[0])
			if err == nil && (set.Status < 100 || set.Status > 999) {
				err = fmt.Errorf("want an HTTP status code, got %d", set.Status)
			}
		case "chunk_delay":
			set.ChunkDelay, err = caddy.ParseDuration(args[0])
		case "delay":
			set.Delay, err = caddy.ParseDuration(args[0])
		case "models":
			set.Models = args
		default:
			return d.Errf("fake_openai: unknown subdirective %q", opt)
		}
		if err != nil {
			return d.Errf("fake_openai %s: %v", opt, err)
		}
	}
	if changed {
		h.Settings = &set
	}
	return nil
}

func positiveInt(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, err
	}
	if n < 1 {
		return 0, fmt.Errorf("want a number >= 1, got %d", n)
	}
	return n, nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
