package llmgateway

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmgw/caddy-llm-gateway/audit"
	"github.com/llmgw/caddy-llm-gateway/router"
)

// Prometheus metrics (SPEC §10), all named caddy_llm_gateway_*, beside Caddy's own caddy_*
// metrics on the same /metrics endpoint.
//
// Caddy gives every config generation a fresh registry (ctx.GetMetricsRegistry), so the
// collectors below are created once for the process and registered again in each generation's
// registry: counters keep counting across reloads, as Prometheus expects. Scrape-time state
// (breakers, audit queue) is read by a stateCollector that belongs to one registry and so dies
// with its config.
//
// Label cardinality is bounded by the configuration, never by callers: backend and client are
// configured client names, endpoint and code are small fixed sets, and model is the routed
// model only when a configured client matches it, capped at maxModelLabels distinct values;
// every other model (unknown, missing, or past the cap) is reported as "other". Label values
// are also bounded in size: a value that is not valid UTF-8 (which Prometheus refuses with a
// panic) or longer than maxLabelLen bytes is reported as "other" too, so that no caller can grow
// /metrics with long names.
const metricsNamespace = "caddy_llm_gateway"

// Label values used when the real value is absent or would be unbounded.
const (
	labelOther = "other" // a model no client matches, one past maxModelLabels, or a value no label can be
	labelNone  = "none"  // no client was attempted
)

// maxModelLabels caps the distinct values of the model label. Keyword and regex matches accept
// arbitrary names, so without a cap a caller could create a series per request.
const maxModelLabels = 200

// maxKeyLabels caps the distinct values of the key label. Key names come from the config, but a
// gateway may have 10,000 keys: past the cap, keys are counted as "other" (the audit log and
// caddy llm-audit --by key have them all).
const maxKeyLabels = 500

// maxLabelLen caps the length of a label value in bytes (SPEC §10). Model names of real models
// fit easily; the cap keeps 200 distinct values from making /metrics megabytes long.
const maxLabelLen = 128

// labelValue returns v when it can be a label value: valid UTF-8 and at most maxLabelLen bytes;
// else "other".
func labelValue(v string) string {
	if len(v) > maxLabelLen || !utf8.ValidString(v) {
		return labelOther
	}
	return v
}

var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "requests_total",
		Help:      "API calls answered by the gateway, by routed model, answering backend, endpoint, HTTP status (499: the caller went away) and gateway key (none without one).",
	}, []string{"model", "backend", "endpoint", "code", "key"})

	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace,
		Name:      "request_duration_seconds",
		Help:      "Time from a call's arrival to the end of its answer (the whole stream for SSE).",
		Buckets:   []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	}, []string{"model", "backend", "endpoint"})

	ttftSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace,
		Name:      "ttft_seconds",
		Help:      "Time from a streamed call's arrival to its first content event.",
		Buckets:   []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60},
	}, []string{"model", "backend"})

	tokensTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "tokens_total",
		Help:      "Tokens reported by upstreams, by type (prompt or completion) and gateway key (none without one).",
	}, []string{"model", "backend", "type", "key"})

	failoversTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "failovers_total",
		Help:      "Attempts made after a failed one: to the next client of the model, or to a fallback model's client. Labelled with the requested model.",
	}, []string{"model"})

	inFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "in_flight",
		Help:      "API calls being served, by endpoint.",
	}, []string{"endpoint"})

	keyStoreFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "key_store_failures_total",
		Help:      "Calls to the shared key store (Redis) that failed or were skipped while it was unreachable; store_failure decides what the API call got.",
	})

	breakerStateDesc = prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", "breaker_state"),
		"Circuit breaker state of each client: 0 closed, 1 half_open, 2 open.", []string{"client"}, nil)
	auditQueueDepthDesc = prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", "audit_queue_depth"),
		"Audit records waiting for the SQLite writer.", nil, nil)
	auditDroppedDesc = prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", "audit_dropped_total"),
		"Audit records not written (the goal is zero), by reason: queue_full, or write_failed (a database error: disk full, file unusable).",
		[]string{"reason"}, nil)

	// inFlightByEndpoint holds the in_flight child of each endpoint, resolved once so that a
	// request does not hash its labels.
	inFlightByEndpoint [epAudio + 1]prometheus.Gauge

	// modelLabels is the set of model label values handed out so far (see maxModelLabels).
	modelLabels = labelSet{max: maxModelLabels}

	// keyLabels is the set of key label values handed out so far (see maxKeyLabels).
	keyLabels = labelSet{max: maxKeyLabels}

	// statusLabels holds the code label of every valid HTTP status, formatted once.
	statusLabels [600]string
)

func init() {
	for ep := range inFlightByEndpoint {
		inFlightByEndpoint[ep] = inFlight.WithLabelValues(endpoint(ep).recordType())
	}
	for code := 100; code < len(statusLabels); code++ {
		statusLabels[code] = strconv.Itoa(code)
	}
}

// registerMetrics registers the gateway's collectors with this config generation's registry and
// adds h to the generation's scrape-time state collector. Several handlers (one per site) share
// one registry; the first registers, the others find the collector already there.
func registerMetrics(ctx caddy.Context, h *Handler) error {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{requestsTotal, requestDuration, ttftSeconds, tokensTotal, failoversTotal, inFlight, keyStoreFailures} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	sc := new(stateCollector)
	if err := reg.Register(sc); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return err
		}
		sc = are.ExistingCollector.(*stateCollector)
	}
	sc.add(h)
	return nil
}

// observe records a finished call in the metrics.
func (c *call) observe() {
	res := &c.res
	model := c.modelLabel(res.Model)
	backend := res.Backend
	if backend == "" {
		// As in the audit row: a call that failed everywhere is charged to its last attempt.
		backend = labelNone
		if n := len(res.Tried); n > 0 {
			backend = res.Tried[n-1]
		}
	}
	backend = labelValue(backend) // a configured name, but Prometheus panics on invalid UTF-8
	key := labelNone
	if res.Key != "" {
		key = keyLabels.get(res.Key)
	}
	m := callSeries.get(seriesKey{model: model, backend: backend, ep: c.req.ep, status: res.Status, key: key})
	m.requests.Inc()
	m.duration.Observe(res.Latency.Seconds())
	if res.Stream && res.TTFT > 0 {
		ttftSeconds.WithLabelValues(model, backend).Observe(res.TTFT.Seconds())
	}
	if n := res.Usage.PromptTokens; n > 0 {
		m.tokens(tokensPrompt).Add(float64(n))
	}
	if n := res.Usage.CompletionTokens; n > 0 {
		m.tokens(tokensCompletion).Add(float64(n))
	}
}

// seriesKey holds the label values of a finished call's series.
type seriesKey struct {
	model, backend, key string
	ep                  endpoint
	status              int
}

// Token types, the type label of tokens_total.
const (
	tokensPrompt = iota
	tokensCompletion
)

var tokenTypes = [...]string{tokensPrompt: "prompt", tokensCompletion: "completion"}

// series are the children of the metric vectors that a finished call with one seriesKey updates.
// Resolving them through the vectors hashes and checks every label value on each update, a
// microsecond per call; the vectors never drop a child, so one resolved child stays valid.
type series struct {
	k        seriesKey
	requests prometheus.Counter
	duration prometheus.Observer
	// token counters, resolved on first use: a series of tokens_total appears only once it has
	// counted a token, as before.
	tokenCounters [len(tokenTypes)]atomic.Pointer[prometheus.Counter]
}

// tokens returns the tokens_total child of type typ.
func (s *series) tokens(typ int) prometheus.Counter {
	if c := s.tokenCounters[typ].Load(); c != nil {
		return *c
	}
	c := tokensTotal.WithLabelValues(s.k.model, s.k.backend, tokenTypes[typ], s.k.key)
	s.tokenCounters[typ].Store(&c)
	return c
}

// maxCachedSeries bounds seriesCache: the label values are bounded (maxModelLabels,
// maxKeyLabels, configured client names, endpoints and statuses), but their product need not be
// small. Calls past the bound resolve their series through the vectors, as before.
const maxCachedSeries = 4096

// seriesCache holds the series of finished calls by label values, up to max of them.
type seriesCache struct {
	max int
	mu  sync.RWMutex
	m   map[seriesKey]*series
}

// callSeries is the process's cache; the metric vectors are process-wide too.
var callSeries = seriesCache{max: maxCachedSeries}

// get returns the series of k, resolved once.
func (sc *seriesCache) get(k seriesKey) *series {
	sc.mu.RLock()
	s := sc.m[k]
	sc.mu.RUnlock()
	if s != nil {
		return s
	}
	// The cache keeps its own copies of the label values it may hold for long.
	k.model, k.backend, k.key = strings.Clone(k.model), strings.Clone(k.backend), strings.Clone(k.key)
	s = &series{
		k:        k,
		requests: requestsTotal.WithLabelValues(k.model, k.backend, k.ep.recordType(), statusLabel(k.status), k.key),
		duration: requestDuration.WithLabelValues(k.model, k.backend, k.ep.recordType()),
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if cached := sc.m[k]; cached != nil {
		return cached
	}
	if len(sc.m) < sc.max {
		if sc.m == nil {
			sc.m = make(map[seriesKey]*series)
		}
		sc.m[k] = s
	}
	return s
}

// countFailover counts a failover when the attempt about to be made follows a failed one. It
// is called before each attempt, so it runs as the failover happens, not when the call ends.
func (c *call) countFailover() {
	if len(c.res.Tried) > 0 {
		failoversTotal.WithLabelValues(c.modelLabel(c.req.info.Model)).Inc()
	}
}

// modelLabel returns the model label of a call for model: model itself when a configured client
// matches it (and the label cap allows), "other" otherwise.
func (c *call) modelLabel(model string) string {
	if model == "" || labelValue(model) == labelOther {
		return labelOther
	}
	if len(c.res.Tried) == 0 {
		// Nothing was attempted: either no client matches (404), or all matching clients were
		// cooling down (503). Only the latter names a configured model. This is an error path,
		// so matching again is affordable.
		var buf [16]int
		if len(c.g.table.Candidates(model, buf[:0])) == 0 {
			return labelOther
		}
	}
	return modelLabels.get(model)
}

// statusLabel returns the code label of status.
func statusLabel(status int) string {
	if status >= 100 && status < len(statusLabels) {
		return statusLabels[status]
	}
	return strconv.Itoa(status)
}

// inFlightGauge returns the in_flight gauge of ep.
func inFlightGauge(ep endpoint) prometheus.Gauge { return inFlightByEndpoint[ep] }

// labelSet hands out label values up to a maximum number of distinct ones.
type labelSet struct {
	max  int
	mu   sync.RWMutex
	seen map[string]struct{}
}

// get returns v if it was handed out before or there is room for it, and "other" otherwise.
func (s *labelSet) get(v string) string {
	s.mu.RLock()
	_, ok := s.seen[v]
	full := len(s.seen) >= s.max
	s.mu.RUnlock()
	if ok {
		return v
	}
	if full {
		return labelOther
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[v]; ok {
		return v
	}
	if len(s.seen) >= s.max {
		return labelOther
	}
	if s.seen == nil {
		s.seen = make(map[string]struct{})
	}
	v = strings.Clone(v) // the caller's string may share a request buffer
	s.seen[v] = struct{}{}
	return v
}

// stateCollector reports state read at scrape time: the breaker of every client of the
// handlers of one config generation, and the audit writer's queue. It is registered in that
// generation's registry only, so it is dropped with the config; it keeps no other state.
type stateCollector struct {
	mu       sync.Mutex
	handlers []*Handler
}

func (sc *stateCollector) add(h *Handler) {
	sc.mu.Lock()
	sc.handlers = append(sc.handlers, h)
	sc.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (*stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- breakerStateDesc
	ch <- auditQueueDepthDesc
	ch <- auditDroppedDesc
}

// Collect implements prometheus.Collector. A client configured in several sites (same name and
// base_url) shares one breaker and is reported once; the registry rejects duplicate series.
func (sc *stateCollector) Collect(ch chan<- prometheus.Metric) {
	sc.mu.Lock()
	handlers := sc.handlers
	sc.mu.Unlock()

	now := time.Now()
	seen := make(map[string]struct{})
	var w *audit.Writer
	for _, h := range handlers {
		if w == nil && h.audit != nil {
			w = h.audit.Writer()
		}
		g := h.gen.Load()
		if g == nil {
			continue
		}
		for _, uc := range g.clients {
			// Names that are no valid label share "other"; the first of them is reported.
			name := labelValue(uc.Name)
			if _, dup := seen[name]; dup {
				continue
			}
			seen[name] = struct{}{}
			ch <- prometheus.MustNewConstMetric(breakerStateDesc, prometheus.GaugeValue,
				breakerValue(uc.state.Breaker.State(g.policy, now)), name)
		}
	}
	if w != nil {
		ch <- prometheus.MustNewConstMetric(auditQueueDepthDesc, prometheus.GaugeValue, float64(w.QueueDepth()))
		ch <- prometheus.MustNewConstMetric(auditDroppedDesc, prometheus.CounterValue, float64(w.Dropped()), "queue_full")
		ch <- prometheus.MustNewConstMetric(auditDroppedDesc, prometheus.CounterValue, float64(w.Failed()), "write_failed")
	}
}

// breakerValue maps a breaker state to the breaker_state gauge value, ordered by severity.
func breakerValue(s router.State) float64 {
	switch s {
	case router.HalfOpen:
		return 1
	case router.Open:
		return 2
	}
	return 0
}
