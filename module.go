// Package llmgateway is an OpenAI-compatible LLM gateway for Caddy: the http.handlers.llm_gateway
// handler routes requests by model to upstream clients over Caddy's reverse_proxy transport, and
// the llm_audit app records every call in SQLite.
package llmgateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/goccy/go-json"
	"go.uber.org/zap"

	"github.com/llmgw/caddy-llm-gateway/audit"
	gwcaddyfile "github.com/llmgw/caddy-llm-gateway/caddyfile"
	"github.com/llmgw/caddy-llm-gateway/keys"
	_ "github.com/llmgw/caddy-llm-gateway/keys/keyscmd" // registers caddy llm-keys
	"github.com/llmgw/caddy-llm-gateway/router"
	"github.com/llmgw/caddy-llm-gateway/sse"
)

func init() {
	caddy.RegisterModule(new(Handler))
	httpcaddyfile.RegisterHandlerDirective("llm_gateway", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("llm_gateway", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterGlobalOption("llm_audit", gwcaddyfile.ParseAuditOption)
}

// Handler is the llm_gateway HTTP handler. It answers the OpenAI-compatible API paths (SPEC §3)
// and passes every other request to the next handler, so it composes with the rest of a site.
type Handler struct {
	router.Config

	logger *zap.Logger
	audit  *audit.App // nil when the llm_audit app is not configured

	// loadCtx is the parent of every client transport's own context (see sharedTransport). It
	// is made from the config's context in Provision, so building a generation later (the YAML
	// watcher) touches only this handler's state, never the config's Context, whose module
	// list Caddy appends to without a lock. Being fresh, it has no OnCancel functions for a
	// child's cancel to run (Caddy's child cancel runs its parent's). It is never cancelled
	// itself: it loads no module, and the config's cancellation reaches it as a context.
	loadCtx caddy.Context

	// stops is stopped when the process exits, cutting in-flight upstream calls so each writes
	// its (partial) audit row before the writer closes; inflight counts those calls.
	stops    *stopper
	inflight sync.WaitGroup

	watcher *yamlWatcher // nil without a config file
	cleaned atomic.Bool  // Cleanup ran

	// Gateway keys (SPEC §12), all unset without a keys block: the key set of the inline keys
	// and the keys file (replaced as a whole when the file changes; a request loads it once), the
	// process-wide counters, and the keys file's watcher.
	keySet       atomic.Pointer[keys.Set]
	counters     *keyCounters // kept after Cleanup: calls still in flight settle into it
	countersHeld bool         // the handler holds a reference to counters
	countersID   string       // the counters' name in keyCountersPool
	keysWatcher  *yamlWatcher

	// gen is the routing state built from Config (and the YAML file). It is replaced as a whole
	// when the YAML changes; a request loads it once and keeps it to the end.
	gen atomic.Pointer[generation]
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.llm_gateway",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision loads the YAML file if one is named, applies defaults, expands placeholders, loads
// each client's transport and attaches the per-client state that outlives reloads.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.loadCtx, _ = caddy.NewContext(ctx)
	h.stops = newStopper()
	if app, err := ctx.AppIfConfigured("llm_audit"); err == nil {
		h.audit = app.(*audit.App)
	} else if !errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("llm_gateway: loading llm_audit app: %w", err)
	}
	if err := registerMetrics(ctx, h); err != nil {
		return err
	}
	h.warnAccessLogCredentials(ctx)
	var data []byte
	if h.Config.Config != "" {
		var err error
		if data, err = os.ReadFile(h.Config.Config); err != nil {
			return fmt.Errorf("llm_gateway: reading config: %w", err)
		}
	}
	gen, err := h.build(data, nil)
	if err != nil {
		return err
	}
	h.gen.Store(gen)
	if h.Config.Config != "" {
		h.watcher = h.watchYAML(h.Config.Config, data)
	}
	if h.Config.Keys != nil {
		if err := h.provisionKeys(); err != nil {
			return err
		}
	}
	return nil
}

// AccessLogFilter is the `format` line of a site's `log` block that keeps caller API keys out of
// Caddy's access log; the provision warning and the docs give it verbatim.
const AccessLogFilter = `format filter {
	wrap json
	request>headers>Authorization delete
	request>headers>X-Api-Key delete
	request>headers>Api-Key delete
}`

// warnAccessLogCredentials logs one warning when the server this handler runs in writes an
// access log. Caddy logs each request's headers as received, from a copy taken before any handler
// runs, and masks only Authorization, Proxy-Authorization and Cookie: the X-Api-Key and Api-Key
// keys that Anthropic and Azure SDKs send land there in clear, and no handler can mask them
// afterwards. Only the log's encoder can (AccessLogFilter), and a handler can neither see nor set
// it: the warning shows whenever access logging is on, unless the operator said with
// access_log_filtered that the site's log filters them.
func (h *Handler) warnAccessLogCredentials(ctx caddy.Context) {
	srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if !ok || srv == nil || srv.Logs == nil {
		return
	}
	if h.AccessLogFiltered && !srv.Logs.ShouldLogCredentials {
		return
	}
	headers := []string{"X-Api-Key", "Api-Key"}
	if srv.Logs.ShouldLogCredentials {
		headers = append(headers, "Authorization")
	}
	h.logger.Warn("access logging is on: Caddy logs callers' API keys sent in these request headers in clear; "+
		"unless the site's log block already filters them, replace its format line with the filter given here",
		zap.Strings("headers", headers),
		zap.String("filter", AccessLogFilter))
}

// Validate checks the configuration as given (after the YAML is merged in Provision).
func (h *Handler) Validate() error {
	if g := h.gen.Load(); g == nil {
		return fmt.Errorf("llm_gateway: not provisioned")
	}
	return nil
}

// exitWait bounds how long a process exit waits for cut calls to write their audit rows.
const exitWait = 5 * time.Second

// Cleanup releases the per-client state references and transports of this config generation.
// On a reload, calls still running on this generation finish undisturbed (Caddy runs Cleanup
// while they flow; a transport's cleanup closes only its idle connections). When the process
// exits, it cancels them and waits, boundedly, until each has handed its audit row to the
// writer.
func (h *Handler) Cleanup() error {
	// Stop the watcher first so it cannot install a generation after this one is released.
	if h.watcher != nil {
		h.watcher.close()
	}
	h.releaseKeys()
	// The generation stays installed: during a reload the old server can still hand this
	// handler a request it accepted just before shutting down, and that request must be served
	// on the config it arrived under, not fall through to an empty answer.
	if g := h.gen.Load(); g != nil && h.cleaned.CompareAndSwap(false, true) {
		g.release()
	}
	if h.stops != nil && caddy.Exiting() {
		h.stops.stop()
		done := make(chan struct{})
		go func() {
			h.inflight.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(exitWait):
			h.logger.Warn("calls still running at exit", zap.Duration("waited", exitWait))
		}
	}
	return nil
}

// generation is the immutable routing state of one configuration.
type generation struct {
	table    *router.Table
	clients  []*upstreamClient
	policy   router.Policy
	strategy router.Strategy

	maxBody         int64
	headerTimeout   time.Duration // non-stream: response headers, and any pause in the body
	maxBuffered     int64         // largest non-stream answer held in memory
	maxHops         int
	firstByteTimout time.Duration
	idleTimeout     time.Duration // stream_idle_timeout
	thinking        router.ThinkingFormat

	models      *modelsCache
	modelGroups modelGroups

	// wantKeys is set when the strategy needs prompt-affinity keys from the body.
	wantKeys bool
}

// upstreamClient is a client with its runtime parts.
type upstreamClient struct {
	*router.Client
	base      string   // base_url without a trailing slash
	baseURL   *url.URL // base, parsed
	transport *sharedTransport
	state     *router.ClientState
	stateKey  string
	apiKey    string
	headers   []headerValue // configured extra request headers
	// authValue and keyValue are the Authorization and X-Api-Key values of apiKey.
	authValue, keyValue []string
	extraBody           []byte
	format              sse.Format // effective thinking_format
}

// build makes the routing state from the handler's config merged with yamlData, the content of
// the YAML file (nil when there is none). Transports of clients unchanged since prev are reused,
// so a YAML edit does not drop their connection pools. It runs on one goroutine at a time:
// Provision's, then the YAML watcher's.
func (h *Handler) build(yamlData []byte, prev *generation) (*generation, error) {
	cfg := h.Config
	cfg.Clients = append([]*router.Client(nil), h.Config.Clients...)
	if cfg.Config != "" {
		yc, warnings, err := gwcaddyfile.ParseYAML(yamlData, cfg.Config, os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("llm_gateway: %w", err)
		}
		for _, w := range warnings {
			h.logger.Warn("origin config", zap.String("file", cfg.Config), zap.String("warning", w))
		}
		mergeYAML(&cfg, yc)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("llm_gateway: %w", err)
	}
	table, err := router.NewTable(cfg.Clients)
	if err != nil {
		return nil, fmt.Errorf("llm_gateway: %w", err)
	}

	s := cfg.Settings()
	g := &generation{
		table:           table,
		policy:          s.HealthCheck,
		strategy:        s.Strategy,
		maxBody:         s.MaxRequestBody,
		maxHops:         s.MaxFallbackHops,
		firstByteTimout: s.StreamFirstByteTimeout,
		idleTimeout:     s.StreamIdleTimeout,
		headerTimeout:   s.ResponseHeaderTimeout,
		maxBuffered:     s.MaxBufferedResponse,
		thinking:        s.ThinkingFormat,
		models:          newModelsCache(s.ModelsCacheTTL),
		wantKeys:        s.Strategy == router.StrategyDeterministic,
	}

	repl := caddy.NewReplacer()
	raws := make([]json.RawMessage, len(table.Clients))
	for i, c := range table.Clients {
		uc, raw, err := newUpstreamClient(repl, c, g.thinking)
		if err != nil {
			g.release()
			return nil, fmt.Errorf("llm_gateway: client %s: %w", c.Name, err)
		}
		g.clients = append(g.clients, uc)
		raws[i] = raw
	}
	if err := g.attachTransports(h.loadCtx, raws, prev); err != nil {
		g.release()
		return nil, err
	}
	for _, uc := range g.clients {
		uc.stateKey = uc.Name + "\x00" + uc.base
		st, _, err := clientStates.LoadOrNew(uc.stateKey, func() (caddy.Destructor, error) {
			return new(clientState), nil
		})
		if err != nil {
			g.release()
			return nil, fmt.Errorf("llm_gateway: client %s: %w", uc.Name, err)
		}
		uc.state = &st.(*clientState).ClientState
	}
	g.modelGroups = newModelGroups(g.clients)
	return g, nil
}

// attachTransports gives every client of g its transport; raws are their transport configs.
// A client unchanged since prev (same name, base_url and transport) keeps prev's, connection
// pool included. Clients of one generation with the same base_url and transport config share
// one transport, so a config of thousands of clients of one upstream loads one transport, not
// thousands, each with its own pool. The rest are loaded, each in a context of its own under
// loadCtx. Each client holds a reference to its transport.
func (g *generation) attachTransports(loadCtx caddy.Context, raws []json.RawMessage, prev *generation) error {
	shared := make(map[string]*sharedTransport)
	key := func(i int) string { return g.clients[i].base + "\x00" + string(raws[i]) }
	for i, uc := range g.clients {
		if p := prev.client(uc.Name); p != nil && p.base == uc.base && bytes.Equal(p.transport.raw, raws[i]) {
			uc.transport = p.transport.acquire()
			if k := key(i); shared[k] == nil {
				shared[k] = uc.transport
			}
		}
	}
	for i, uc := range g.clients {
		if uc.transport != nil {
			continue
		}
		k := key(i)
		if t := shared[k]; t != nil {
			uc.transport = t.acquire()
			continue
		}
		t, err := loadTransport(loadCtx, raws[i])
		if err != nil {
			return fmt.Errorf("llm_gateway: client %s: %w", uc.Name, err)
		}
		uc.transport, shared[k] = t, t
	}
	return nil
}

// newUpstreamClient prepares client c for a generation, and returns it with the configuration
// of its transport, which the caller loads or shares (attachTransports).
func newUpstreamClient(repl *caddy.Replacer, c *router.Client, thinking router.ThinkingFormat) (*upstreamClient, json.RawMessage, error) {
	base, u, err := router.ParseBaseURL(repl.ReplaceKnown(c.BaseURL, ""))
	if err != nil {
		return nil, nil, err
	}
	// A slash before a query ("/v1/?api-version=…") is trimmed too: paths are appended to it.
	u.Path, u.RawPath = strings.TrimRight(u.Path, "/"), ""
	uc := &upstreamClient{
		Client:    c,
		base:      base,
		baseURL:   u,
		apiKey:    repl.ReplaceKnown(c.APIKey, ""),
		extraBody: c.ExtraBody,
	}
	if uc.apiKey != "" {
		uc.authValue = []string{"Bearer " + uc.apiKey}
		uc.keyValue = []string{uc.apiKey}
	}
	if c.APIKey != "" && uc.apiKey == "" {
		// An unset {env.X}: falling back to the caller's key would send callers' credentials
		// to an upstream meant to get the operator's (SPEC §2.4).
		return nil, nil, fmt.Errorf("api_key %q expands to an empty key; set the variable, or remove api_key to pass the caller's key through", c.APIKey)
	}
	tf := c.ThinkingFormat
	if tf == "" {
		tf = thinking
	}
	if uc.format, err = sse.ParseFormat(string(tf)); err != nil {
		return nil, nil, err
	}
	for name, value := range c.Headers {
		uc.headers = append(uc.headers, newHeaderValue(repl, name, value))
	}

	raw, err := transportConfig(c.TransportRaw, u.Scheme == "https")
	if err != nil {
		return nil, nil, err
	}
	return uc, raw, nil
}

// defaultReadBufferSize is the read buffer of the gateway's HTTP transports where the client's
// transport block sets none (net/http's default is 4 KiB). Every upstream connection keeps it
// for its whole life, and an open stream holds a connection of its own, so at thousands of open
// streams it is a large part of the gateway's memory. 2 KiB still takes a usual answer's
// headers, or several stream events, in one read. The write buffer keeps net/http's 4 KiB: a
// request that does not fit in it leaves in two writes instead of one (docs/benchmarks.md).
const defaultReadBufferSize = 2 << 10

// transportConfig is the transport config a client loads: raw (the client's transport block,
// {"protocol":"http"} when it has none) with the gateway's defaults. An http transport gets
// defaultReadBufferSize where raw sets no read_buffer_size, and, for an https base_url, an empty
// "tls" object (as reverse_proxy enables TLS for https upstreams) where raw has no TLS settings.
func transportConfig(raw json.RawMessage, https bool) (json.RawMessage, error) {
	if len(raw) == 0 {
		// The usual case, once per client: thousands of clients need no JSON round trip.
		if https {
			return json.RawMessage(`{"protocol":"http","read_buffer_size":` + strconv.Itoa(defaultReadBufferSize) + `,"tls":{}}`), nil
		}
		return json.RawMessage(`{"protocol":"http","read_buffer_size":` + strconv.Itoa(defaultReadBufferSize) + `}`), nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	changed := false
	setDefault := func(name, value string) {
		if _, ok := m[name]; !ok {
			m[name] = json.RawMessage(value)
			changed = true
		}
	}
	if https {
		setDefault("tls", `{}`)
	}
	if string(m["protocol"]) == `"http"` {
		setDefault("read_buffer_size", strconv.Itoa(defaultReadBufferSize))
	}
	if !changed {
		return raw, nil
	}
	return json.Marshal(m)
}

// sharedTransport is a client's loaded reverse_proxy transport module, in a Caddy context of
// its own. Every generation whose client uses it holds a reference, as a YAML edit that leaves a
// client unchanged hands its transport (and its connection pool) to the next generation. When
// the last reference goes, cancelling the context runs the module's Cleanup, which for Caddy's
// HTTP transport closes the idle connections and leaves those of calls in flight alone: a
// client a YAML edit replaces frees its connections at once, not when the whole Caddy config
// unloads.
type sharedTransport struct {
	http.RoundTripper
	raw    json.RawMessage // the transport config it was loaded from
	cancel context.CancelFunc
	refs   atomic.Int32
}

// loadTransport loads the transport configured by raw in a new child context of parent, with
// one reference held by the caller.
func loadTransport(parent caddy.Context, raw json.RawMessage) (*sharedTransport, error) {
	ctx, cancel := caddy.NewContext(parent)
	// LoadModule reads the raw JSON from the struct field and then clears it; use a copy so
	// the config as written (and shown by adapt) stays untouched.
	holder := struct {
		TransportRaw json.RawMessage `json:"transport,omitempty" caddy:"namespace=http.reverse_proxy.transport inline_key=protocol"`
	}{TransportRaw: raw}
	mod, err := ctx.LoadModule(&holder, "TransportRaw")
	if err != nil {
		cancel()
		return nil, fmt.Errorf("loading transport: %w", err)
	}
	rt, ok := mod.(http.RoundTripper)
	if !ok {
		cancel() // cleans the module up
		return nil, fmt.Errorf("transport module %T is not an http.RoundTripper", mod)
	}
	t := &sharedTransport{RoundTripper: rt, raw: raw, cancel: cancel}
	t.refs.Store(1)
	return t, nil
}

// acquire adds a reference for one more generation.
func (t *sharedTransport) acquire() *sharedTransport {
	t.refs.Add(1)
	return t
}

// release drops a generation's reference; the last one cleans the transport up.
func (t *sharedTransport) release() {
	if t.refs.Add(-1) == 0 {
		t.cancel()
	}
}

// headerValue is one configured upstream request header, in the form http.Header stores
// (see newHeaderValue).
type headerValue struct {
	name     string
	values   []string // the value, when it needs no request to expand
	template string   // the value as configured, when it holds request placeholders
}

// client returns the generation's client named name, or nil; g may be nil.
func (g *generation) client(name string) *upstreamClient {
	if g == nil {
		return nil
	}
	if i, ok := g.table.Index(name); ok {
		return g.clients[i]
	}
	return nil
}

// release drops this generation's references to the shared client state and transports. It is
// called once per generation: when the YAML watcher replaces it, when its handler is cleaned up,
// or when building it failed.
func (g *generation) release() {
	for _, c := range g.clients {
		if c.state != nil {
			_, _ = clientStates.Delete(c.stateKey)
		}
		if c.transport != nil {
			c.transport.release()
		}
	}
}

// clientStates holds breaker state and in-flight counts per client name and base_url, so they
// survive config reloads (SPEC §2.3).
var clientStates = caddy.NewUsagePool()

type clientState struct{ router.ClientState }

// Destruct implements caddy.Destructor.
func (*clientState) Destruct() error { return nil }

// mergeYAML folds an origin YAML config into cfg: its clients follow cfg's, and its global
// settings apply where cfg leaves the option unset.
func mergeYAML(cfg *router.Config, y *router.Config) {
	cfg.Clients = append(cfg.Clients, y.Clients...)
	if cfg.Strategy == "" {
		cfg.Strategy = y.Strategy
	}
	if cfg.ThinkingFormat == "" {
		cfg.ThinkingFormat = y.ThinkingFormat
	}
	if cfg.ModelsCacheTTL == nil {
		cfg.ModelsCacheTTL = y.ModelsCacheTTL
	}
	if cfg.HealthCheck == nil {
		cfg.HealthCheck = y.HealthCheck
	}
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens; the syntax is documented on
// caddyfile.UnmarshalGateway.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return gwcaddyfile.UnmarshalGateway(d, &h.Config)
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
