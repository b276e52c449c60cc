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
	ctx    caddy.Context
	audit  *audit.App // nil when the llm_audit app is not configured

	// stopCtx is cancelled when the process exits, cutting in-flight upstream calls so each
	// writes its (partial) audit row before the writer closes; inflight counts those calls.
	stopCtx  context.Context
	stop     context.CancelFunc
	inflight sync.WaitGroup

	watcher *yamlWatcher // nil without a config file
	cleaned atomic.Bool  // Cleanup ran

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
	h.ctx = ctx
	h.logger = ctx.Logger()
	h.stopCtx, h.stop = context.WithCancel(context.Background())
	if app, err := ctx.AppIfConfigured("llm_audit"); err == nil {
		h.audit = app.(*audit.App)
	} else if !errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("llm_gateway: loading llm_audit app: %w", err)
	}
	if err := registerMetrics(ctx, h); err != nil {
		return err
	}
	var data []byte
	if h.Config.Config != "" {
		var err error
		if data, err = os.ReadFile(h.Config.Config); err != nil {
			return fmt.Errorf("llm_gateway: reading config: %w", err)
		}
	}
	gen, err := h.build(ctx, data, nil)
	if err != nil {
		return err
	}
	h.gen.Store(gen)
	if h.Config.Config != "" {
		h.watcher = h.watchYAML(h.Config.Config, data)
	}
	return nil
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

// Cleanup releases the per-client state references of this config generation. On a reload,
// calls still running on this generation finish undisturbed (Caddy runs Cleanup while they
// flow). When the process exits, it cancels them and waits, boundedly, until each has handed
// its audit row to the writer.
func (h *Handler) Cleanup() error {
	// Stop the watcher first so it cannot install a generation after this one is released.
	if h.watcher != nil {
		h.watcher.close()
	}
	// The generation stays installed: during a reload the old server can still hand this
	// handler a request it accepted just before shutting down, and that request must be served
	// on the config it arrived under, not fall through to an empty answer.
	if g := h.gen.Load(); g != nil && h.cleaned.CompareAndSwap(false, true) {
		g.release()
	}
	if h.stop != nil && caddy.Exiting() {
		h.stop()
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
	cfg      router.Config // effective config: handler options merged with the YAML file
	table    *router.Table
	clients  []*upstreamClient
	policy   router.Policy
	strategy router.Strategy

	maxBody         int64
	maxHops         int
	firstByteTimout time.Duration
	thinking        router.ThinkingFormat

	models *modelsCache

	// wantKeys is set when the strategy needs prompt-affinity keys from the body.
	wantKeys bool
}

// upstreamClient is a client with its runtime parts.
type upstreamClient struct {
	*router.Client
	base      string   // base_url without a trailing slash
	baseURL   *url.URL // base, parsed
	transport http.RoundTripper
	// transportJSON is the transport config the transport was loaded from.
	transportJSON json.RawMessage
	state         *router.ClientState
	stateKey      string
	apiKey        string
	headers       []headerValue // configured extra request headers
	// authValue and keyValue are the Authorization and X-Api-Key values of apiKey.
	authValue, keyValue []string
	extraBody           []byte
	format              sse.Format // effective thinking_format
}

// build makes the routing state from the handler's config merged with yamlData, the content of
// the YAML file (nil when there is none). Transports of clients unchanged since prev are reused,
// so a YAML edit does not drop their connection pools.
func (h *Handler) build(ctx caddy.Context, yamlData []byte, prev *generation) (*generation, error) {
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

	g := &generation{
		cfg:             cfg,
		table:           table,
		policy:          cfg.HealthCheck.Policy(),
		strategy:        cfg.Strategy,
		maxBody:         cfg.MaxRequestBody,
		maxHops:         router.DefaultMaxFallbackHops,
		firstByteTimout: time.Duration(cfg.StreamFirstByteTimeout),
		thinking:        cfg.ThinkingFormat,
	}
	if g.strategy == "" {
		g.strategy = router.StrategyRandom
	}
	g.wantKeys = g.strategy == router.StrategyDeterministic
	if g.maxBody == 0 {
		g.maxBody = router.DefaultMaxRequestBody
	}
	if cfg.MaxFallbackHops != nil {
		g.maxHops = *cfg.MaxFallbackHops
	}
	if g.firstByteTimout == 0 {
		g.firstByteTimout = router.DefaultStreamFirstByteTimeout
	}
	if g.thinking == "" {
		g.thinking = router.ThinkingPassthrough
	}
	ttl := router.DefaultModelsCacheTTL
	if cfg.ModelsCacheTTL != nil {
		ttl = time.Duration(*cfg.ModelsCacheTTL)
	}
	g.models = newModelsCache(ttl)

	repl := caddy.NewReplacer()
	for _, c := range table.Clients {
		uc, err := newUpstreamClient(ctx, repl, c, g.thinking, prev)
		if err != nil {
			g.release()
			return nil, fmt.Errorf("llm_gateway: client %s: %w", c.Name, err)
		}
		g.clients = append(g.clients, uc)
	}
	return g, nil
}

func newUpstreamClient(ctx caddy.Context, repl *caddy.Replacer, c *router.Client, thinking router.ThinkingFormat, prev *generation) (*upstreamClient, error) {
	base := strings.TrimRight(repl.ReplaceKnown(c.BaseURL, ""), "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid base_url %q", base)
	}
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
		return nil, fmt.Errorf("api_key %q expands to an empty key; set the variable, or remove api_key to pass the caller's key through", c.APIKey)
	}
	tf := c.ThinkingFormat
	if tf == "" {
		tf = thinking
	}
	if uc.format, err = sse.ParseFormat(string(tf)); err != nil {
		return nil, err
	}
	for name, value := range c.Headers {
		uc.headers = append(uc.headers, newHeaderValue(repl, name, value))
	}

	raw := c.TransportRaw
	if len(raw) == 0 {
		raw = json.RawMessage(`{"protocol":"http"}`)
	}
	if u.Scheme == "https" {
		// An https base_url needs TLS on Caddy's transport, as reverse_proxy enables it for
		// https upstreams; keep any TLS settings the operator gave.
		raw, err = enableTLS(raw)
		if err != nil {
			return nil, err
		}
	}
	uc.transportJSON = raw
	if p := prev.client(c.Name); p != nil && p.base == base && bytes.Equal(p.transportJSON, raw) {
		uc.transport = p.transport
	} else {
		// LoadModule reads the raw JSON from the struct field; use a copy so the config as
		// written (and shown by adapt) stays untouched.
		holder := struct {
			TransportRaw json.RawMessage `json:"transport,omitempty" caddy:"namespace=http.reverse_proxy.transport inline_key=protocol"`
		}{TransportRaw: raw}
		mod, err := ctx.LoadModule(&holder, "TransportRaw")
		if err != nil {
			return nil, fmt.Errorf("loading transport: %w", err)
		}
		rt, ok := mod.(http.RoundTripper)
		if !ok {
			return nil, fmt.Errorf("transport module %T is not an http.RoundTripper", mod)
		}
		uc.transport = rt
	}

	uc.stateKey = c.Name + "\x00" + base
	st, _, err := clientStates.LoadOrNew(uc.stateKey, func() (caddy.Destructor, error) {
		return new(clientState), nil
	})
	if err != nil {
		return nil, err
	}
	uc.state = &st.(*clientState).ClientState
	return uc, nil
}

// enableTLS adds an empty "tls" object to a transport config that has none.
func enableTLS(raw json.RawMessage) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	if _, ok := m["tls"]; ok {
		return raw, nil
	}
	m["tls"] = json.RawMessage(`{}`)
	return json.Marshal(m)
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

// release drops this generation's references to the shared client state.
func (g *generation) release() {
	for _, c := range g.clients {
		_, _ = clientStates.Delete(c.stateKey)
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
