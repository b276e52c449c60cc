package llmgateway

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/keys"
)

// Error types and codes of gateway keys (SPEC §12), as OpenAI sends them.
const (
	errTypePermission        = "permission_error"
	errTypeInsufficientQuota = "insufficient_quota"
	errCodeInvalidAPIKey     = "invalid_api_key"
	errCodeModelNotAllowed   = "model_not_allowed"
	errCodeRateLimitExceeded = "rate_limit_exceeded"
	// errCodeKeyStoreUnavailable: the shared counters (SPEC §14) are unreachable and the
	// store's failure mode is closed.
	errCodeKeyStoreUnavailable = "key_store_unavailable"
)

// keyCountersID names the process-wide counters of gateway keys in keyCountersPool.
const keyCountersID = "llm_gateway.keys"

// keyCountersPool holds the counters of gateway keys so that windows, open calls and month
// totals survive reloads and keys-file edits (SPEC §12): counters belong to a key's name, not to
// a config. Every handler with keys holds a reference.
var keyCountersPool = caddy.NewUsagePool()

// keyCounters is the counter store of gateway keys and the clock admission reads.
type keyCounters struct {
	store keys.Store
	now   func() time.Time

	// seeded is done once the month-to-date totals were read from the audit database, which
	// happens once per process (the counters outlive reloads).
	seeded sync.Once

	closer io.Closer // the Redis client of a shared store; nil for in-process counters
}

// Destruct implements caddy.Destructor: the last config using a shared store closes its
// connection pool.
func (kc *keyCounters) Destruct() error {
	if kc.closer != nil {
		return kc.closer.Close()
	}
	return nil
}

func newKeyCounters() (caddy.Destructor, error) {
	return &keyCounters{store: keys.NewMemory(), now: time.Now}, nil
}

// storeFailureLogEvery is how often an unreachable key store is logged (each failure is
// counted in the key_store_failures_total metric).
const storeFailureLogEvery = time.Minute

// newRedisCounters returns the constructor of the counters kept in the Redis store at url. Its
// connection pool lives as long as some config uses the same store (URL and failure mode), so
// a reload keeps the pool, its connections and the fallback counters.
func newRedisCounters(url string, failClosed bool) func() (caddy.Destructor, error) {
	return func() (caddy.Destructor, error) {
		client, err := keys.NewRedisClient(url, keys.DefaultStoreTimeout)
		if err != nil {
			return nil, fmt.Errorf("llm_gateway: keys: %w", err)
		}
		logger := caddy.Log().Named("llm_gateway.keys")
		mode := "served and counted on this node"
		if failClosed {
			mode = "refused (store_failure closed)"
		}
		var lastLog atomic.Int64
		store := keys.NewRedis(client, keys.RedisOptions{
			FailClosed: failClosed,
			OnFailure: func(err error) {
				keyStoreFailures.Inc()
				now := time.Now().UnixNano()
				if last := lastLog.Load(); now-last >= int64(storeFailureLogEvery) && lastLog.CompareAndSwap(last, now) {
					logger.Error("key store unreachable; calls are "+mode+" until it answers again (logged once a minute)", zap.String("store", client.Options().Addr), zap.Error(err))
				}
			},
		})
		if err := store.Load(); err != nil {
			// Not fatal: the gateway starts and serves by its failure mode until the store answers.
			logger.Warn("key store not reachable at start; using it once it answers", zap.String("store", client.Options().Addr), zap.Error(err))
		}
		return &keyCounters{store: store, now: time.Now, closer: client}, nil
	}
}

// grant is what admission hands forward: the caller's key and what the store decided of the
// call. The zero grant is a call on a gateway without keys.
type grant struct {
	key      *keys.Entry // nil without keys, or when the caller's key was refused
	admitted bool        // the store counted the call: it must be settled
	dec      keys.Decision
}

// provisionKeys sets up gateway keys: the key set (inline keys and the keys file), the shared
// counters and the keys file's watcher.
func (h *Handler) provisionKeys() error {
	kc := h.Config.Keys
	var data []byte
	if kc.File != "" {
		var err error
		if data, err = os.ReadFile(kc.File); err != nil {
			return fmt.Errorf("llm_gateway: reading keys file: %w", err)
		}
	}
	set, err := h.buildKeys(data)
	if err != nil {
		return err
	}
	id, ctor := keyCountersID, newKeyCounters
	if kc.Store != "" {
		url := caddy.NewReplacer().ReplaceKnown(kc.Store, "")
		if _, err := keys.ParseRedisURL(url); err != nil {
			return fmt.Errorf("llm_gateway: keys: %w", err)
		}
		closed := kc.StoreFailure == keys.StoreFailureClosed
		id = keyCountersID + "|" + kc.StoreFailure + "|" + url
		ctor = newRedisCounters(url, closed)
	}
	v, _, err := keyCountersPool.LoadOrNew(id, ctor)
	if err != nil {
		return err
	}
	h.counters, h.countersHeld, h.countersID = v.(*keyCounters), true, id
	h.keySet.Store(set)
	h.counters.seeded.Do(h.seedMonthTotals)
	if kc.File != "" {
		h.keysWatcher = h.watchFile(kc.File, data, h.applyKeys)
	}
	return nil
}

// releaseKeys drops the handler's reference to the shared counters. The pointer stays: on a
// reload, calls of this handler still running settle into them (the next config holds them by
// then, so they are the same counters).
func (h *Handler) releaseKeys() {
	if h.keysWatcher != nil {
		h.keysWatcher.close()
	}
	if h.countersHeld {
		h.countersHeld = false
		_, _ = keyCountersPool.Delete(h.countersID)
	}
}

// buildKeys compiles the inline keys and those of the keys file's content data.
func (h *Handler) buildKeys(data []byte) (*keys.Set, error) {
	kc := h.Config.Keys
	all := kc.Keys
	if kc.File != "" {
		fileKeys, err := keys.ParseFile(data, kc.File)
		if err != nil {
			return nil, fmt.Errorf("llm_gateway: %w", err)
		}
		all = append(append([]*keys.Key(nil), kc.Keys...), fileKeys...)
	}
	repl := caddy.NewReplacer()
	set, err := keys.Compile(all, h.Config.Prices, func(s string) string { return repl.ReplaceKnown(s, "") })
	if err != nil {
		return nil, fmt.Errorf("llm_gateway: %w", err)
	}
	return set, nil
}

// applyKeys swaps in the keys of an edited keys file; on error the running keys stay.
func (h *Handler) applyKeys(path string, data []byte) bool {
	set, err := h.buildKeys(data)
	if err != nil {
		h.logger.Error("keys file rejected; keeping the running keys", zap.String("file", path), zap.Error(err))
		return false
	}
	h.keySet.Store(set)
	h.logger.Info("keys file applied", zap.String("file", path), zap.Int("keys", set.Len()))
	return true
}

// seedMonthTotals adds the month-to-date usage of every key recorded in the audit database, so
// budgets survive a restart. Without llm_audit the totals start at zero with each process.
func (h *Handler) seedMonthTotals() {
	if h.audit == nil {
		h.logger.Warn("gateway keys without llm_audit: month-to-date budget totals start at zero whenever the process starts")
		return
	}
	now := h.counters.now()
	y, m, _ := now.Local().Date()
	files, err := audit.DatabaseFiles(h.audit.Path)
	if err == nil && len(files) == 0 {
		return // a first start: nothing recorded yet
	}
	var sum *audit.Summary
	if err == nil {
		sum, err = audit.Summarize(files, audit.SummaryOptions{By: audit.ByKey, Since: time.Date(y, m, 1, 0, 0, 0, 0, time.Local)})
	}
	if err != nil {
		h.logger.Error("reading month-to-date key usage from the audit database; budgets count from zero",
			zap.String("path", h.audit.Path), zap.Error(err))
		return
	}
	for _, u := range sum.Groups {
		if u.Key != "" {
			h.counters.store.AddMonth(u.Key, keys.Totals{Tokens: u.TotalTokens, USD: u.CostUSD}, now)
		}
	}
}

// presentedKey is the gateway key the caller sent: a bearer token, else x-api-key (Anthropic
// SDKs), else api-key (Azure SDKs).
func presentedKey(h http.Header) string {
	if auth := h.Get("Authorization"); len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		return strings.TrimSpace(auth[7:])
	}
	if k := h.Get("X-Api-Key"); k != "" {
		return strings.TrimSpace(k)
	}
	return strings.TrimSpace(h.Get("Api-Key"))
}

// authenticate finds the caller's key in set: a missing, unknown or expired key is the 401 of
// SPEC §12. The messages never echo what the caller sent.
func authenticate(set *keys.Set, h http.Header, now time.Time) (*keys.Entry, *apiError) {
	secret := presentedKey(h)
	if secret == "" {
		return nil, errInvalidKey("missing gateway key: send it as `Authorization: Bearer <key>`, `x-api-key` or `api-key`")
	}
	e := set.Lookup(secret)
	if e == nil {
		return nil, errInvalidKey("invalid gateway key")
	}
	if e.Expired(now) {
		return nil, errInvalidKey("gateway key `" + e.Name + "` expired on " + e.Expires.Format(time.RFC3339))
	}
	return e, nil
}

func errInvalidKey(msg string) *apiError {
	return &apiError{status: http.StatusUnauthorized, typ: errTypeInvalidRequest, code: errCodeInvalidAPIKey, message: msg}
}

// admit is the admission stage (SPEC §12): with keys, the caller's key must be valid, allow the
// model asked for, and be within its budget and limits; the store then counts the call. The
// planner holds the model fallbacks to the key's models too (planner.next).
// Without keys (a nil set) every sniffed request is admitted.
func (h *Handler) admit(set *keys.Set, req *apiRequest) (grant, *apiError) {
	if set == nil {
		return grant{}, nil
	}
	now := h.counters.now()
	e, err := authenticate(set, req.r.Header, now)
	if err != nil {
		return grant{}, err
	}
	model := req.info.Model
	if !e.Allows(model) {
		return grant{key: e}, &apiError{status: http.StatusForbidden, typ: errTypePermission, code: errCodeModelNotAllowed,
			message: "gateway key `" + e.Name + "` may not use model `" + model + "`"}
	}
	g := grant{key: e, dec: h.counters.store.Admit(e.Name, e.Limits, now)}
	switch g.dec.Verdict {
	case keys.Admitted:
		g.admitted = true
		return g, nil
	case keys.Unavailable:
		return g, &apiError{status: http.StatusServiceUnavailable, typ: errTypeUpstream, code: errCodeKeyStoreUnavailable,
			message: "the gateway's key store is unreachable and store_failure is closed; try again shortly"}
	case keys.OverBudget:
		return g, &apiError{status: http.StatusTooManyRequests, typ: errTypeInsufficientQuota, code: errTypeInsufficientQuota,
			message: "gateway key `" + e.Name + "` has spent its " + g.dec.Dimension.String() + "; it is refused until the next month"}
	}
	typ := "requests"
	if g.dec.Dimension == keys.DimTokens {
		typ = "tokens"
	}
	return g, &apiError{status: http.StatusTooManyRequests, typ: typ, code: errCodeRateLimitExceeded,
		message: "gateway key `" + e.Name + "` is over its limit of " + g.dec.Dimension.String() +
			"; try again in " + strconv.FormatInt(int64(g.dec.RetryAfter/time.Second), 10) + "s"}
}

// refusalHeaders adds what a refused call's answer carries besides its error body: Retry-After
// for a rate limit, and for a spent budget the x-should-retry: false the OpenAI SDKs honour, as
// retrying cannot help before the next month.
func (g *grant) refusalHeaders(h http.Header) {
	switch {
	case g.key == nil:
	case g.dec.Verdict == keys.RateLimited:
		h.Set("Retry-After", strconv.FormatInt(int64(g.dec.RetryAfter/time.Second), 10))
	case g.dec.Verdict == keys.OverBudget:
		h.Set("X-Should-Retry", "false")
	}
}

// setQuotaHeaders sets OpenAI's x-ratelimit-* headers of each dimension the key limits,
// replacing the upstream's; dimensions it does not limit keep the upstream's (SPEC §12).
func setQuotaHeaders(h http.Header, d *keys.Decision) {
	if d == nil {
		return
	}
	if q := d.Requests; q.Limit > 0 {
		h["X-Ratelimit-Limit-Requests"] = []string{strconv.FormatInt(q.Limit, 10)}
		h["X-Ratelimit-Remaining-Requests"] = []string{strconv.FormatInt(q.Remaining, 10)}
		h["X-Ratelimit-Reset-Requests"] = []string{formatReset(q.Reset)}
	}
	if q := d.Tokens; q.Limit > 0 {
		h["X-Ratelimit-Limit-Tokens"] = []string{strconv.FormatInt(q.Limit, 10)}
		h["X-Ratelimit-Remaining-Tokens"] = []string{strconv.FormatInt(q.Remaining, 10)}
		h["X-Ratelimit-Reset-Tokens"] = []string{formatReset(q.Reset)}
	}
}

// formatReset formats a reset time as OpenAI does ("1s", "6m0s", "20ms").
func formatReset(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return d.Round(time.Millisecond).String()
}

// quota returns the decision whose quotas a keyed answer shows, nil for an unkeyed one.
func (g *grant) quota() *keys.Decision {
	if g.key == nil || g.dec.Requests.Limit == 0 && g.dec.Tokens.Limit == 0 {
		return nil
	}
	return &g.dec
}

// settle settles an admitted call with the usage the audit row records and releases its
// concurrency slot; it runs once the answer's last byte went out, before the handler returns.
func (c *call) settle() {
	if !c.grant.admitted {
		return
	}
	c.grant.admitted = false
	u := c.res.Usage
	tokens := u.TotalTokens
	if tokens == 0 {
		tokens = u.PromptTokens + u.CompletionTokens
	}
	var usd float64
	if c.res.CostUSD != nil {
		usd = *c.res.CostUSD
	}
	c.h.counters.store.Settle(c.grant.key.Name, c.grant.dec.Ticket, tokens, usd, c.h.counters.now())
}

// price sets the call's cost from the handler's prices (nil when no price names the model).
func (c *call) price() {
	if len(c.h.Config.Prices) == 0 || c.res.Model == "" {
		return
	}
	if usd, ok := keys.PriceCost(c.h.Config.Prices, c.res.Model, c.res.Usage.PromptTokens, c.res.Usage.CompletionTokens); ok {
		c.res.CostUSD = &usd
	}
}
