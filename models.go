package llmgateway

import (
	"context"
	"crypto/sha256"
	"net/http"
	"sync"
	"time"

	"github.com/goccy/go-json"

	"github.com/llmgw/caddy-llm-gateway/router"
)

// Limits of the /v1/models aggregation (SPEC §7).
const (
	modelsFetchTimeout = 5 * time.Second
	modelsCacheEntries = 1024
	maxModelsBody      = 8 << 20
	// modelsRetryAfterFailure is how long an answer missing a failed upstream's list is cached.
	modelsRetryAfterFailure = 5 * time.Second
)

// modelsCache caches aggregated /v1/models answers per caller credential. A cache belongs to one
// config generation, so a reload invalidates it.
type modelsCache struct {
	ttl time.Duration

	mu      sync.Mutex
	entries map[[sha256.Size]byte]*modelsEntry
}

// modelsEntry is one cached answer; ready is closed once body is set, so concurrent requests
// for the same credential share one refresh.
type modelsEntry struct {
	ready   chan struct{}
	body    []byte
	expires time.Time
}

func newModelsCache(ttl time.Duration) *modelsCache {
	return &modelsCache{ttl: ttl, entries: make(map[[sha256.Size]byte]*modelsEntry)}
}

// serveModels answers GET /v1/models with the union of every client's models.
func (h *Handler) serveModels(w http.ResponseWriter, r *http.Request, g *generation) {
	cred := callerCredential(r.Header)
	if g.models.ttl <= 0 {
		body, _ := g.aggregateModels(r.Context(), cred)
		writeJSON(w, http.StatusOK, body)
		return
	}
	key := sha256.Sum256([]byte(cred))
	now := time.Now()

	g.models.mu.Lock()
	e := g.models.entries[key]
	if e != nil {
		select {
		case <-e.ready:
			if now.After(e.expires) {
				e = nil // expired: refresh below
			}
		default: // a refresh is running: wait for it
		}
	}
	leader := false
	if e == nil {
		if len(g.models.entries) >= modelsCacheEntries {
			for k := range g.models.entries { // evict an arbitrary entry
				delete(g.models.entries, k)
				break
			}
		}
		e = &modelsEntry{ready: make(chan struct{})}
		g.models.entries[key] = e
		leader = true
	}
	g.models.mu.Unlock()

	if leader {
		// The refresh outlives a leader that disconnects: followers wait for it.
		var complete bool
		e.body, complete = g.aggregateModels(context.WithoutCancel(r.Context()), cred)
		e.expires = time.Now().Add(g.models.ttl)
		if !complete {
			// An upstream failed: serve what the others listed, but do not let a blip hide
			// that client's models for a whole TTL.
			e.expires = time.Now().Add(min(g.models.ttl, modelsRetryAfterFailure))
		}
		close(e.ready)
	} else {
		select {
		case <-e.ready:
		case <-r.Context().Done():
			return
		}
	}
	writeJSON(w, http.StatusOK, e.body)
}

// modelObject is an upstream model entry: its id, and the object as the upstream sent it.
type modelObject struct {
	id  string
	raw json.RawMessage
}

// aggregateModels fetches every client's /models concurrently and merges them: de-duplicated by
// id in config order, each filtered by its client's match rules, followed by the configured
// exact model names missing from the upstream lists. complete is false when an upstream's
// list could not be fetched.
func (g *generation) aggregateModels(ctx context.Context, cred string) (body []byte, complete bool) {
	lists := make([][]modelObject, len(g.clients))
	failed := make([]bool, len(g.clients))
	var wg sync.WaitGroup
	for i, uc := range g.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lists[i], failed[i] = fetchModels(ctx, uc, cred)
		}()
	}
	wg.Wait()
	complete = true
	for _, f := range failed {
		complete = complete && !f
	}

	seen := make(map[string]bool)
	data := make([]json.RawMessage, 0, 16)
	for _, list := range lists {
		for _, m := range list {
			if !seen[m.id] {
				seen[m.id] = true
				data = append(data, m.raw)
			}
		}
	}
	for _, uc := range g.clients {
		for _, rule := range uc.Match {
			if rule.Type != router.MatchExact {
				continue
			}
			for _, id := range rule.Values {
				if seen[id] {
					continue
				}
				seen[id] = true
				raw, _ := json.Marshal(map[string]any{"id": id, "object": "model", "created": 0, "owned_by": uc.Name})
				data = append(data, raw)
			}
		}
	}
	out, _ := json.Marshal(struct {
		Object string            `json:"object"`
		Data   []json.RawMessage `json:"data"`
	}{"list", data})
	return out, complete
}

// fetchModels gets one client's model list, keeping the models its match rules accept. Any
// failure gives an empty list and failed: one broken upstream must not hide the others.
func fetchModels(ctx context.Context, uc *upstreamClient, cred string) (list []modelObject, failed bool) {
	ctx, cancel := context.WithTimeout(ctx, modelsFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uc.base+"/models", nil)
	if err != nil {
		return nil, true
	}
	key := uc.apiKey
	if key == "" {
		key = cred
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := range uc.headers {
		if v := uc.headers[i].valuesFor(ctx); v != nil { // ctx is the caller's request's
			req.Header[uc.headers[i].name] = v
		}
	}
	resp, err := uc.transport.RoundTrip(req)
	if err != nil {
		return nil, true
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		// A 4xx is the upstream's answer (many servers have no /models); a 5xx or 429 is a
		// passing failure worth asking again soon.
		return nil, resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
	}
	body, err := readLimited(resp, maxModelsBody)
	if err != nil {
		return nil, true
	}
	var doc struct {
		Data []json.RawMessage `json:"data"`
		ID   string            `json:"id"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return nil, true
	}
	if doc.Data == nil && doc.ID != "" {
		doc.Data = []json.RawMessage{body}
	}
	out := make([]modelObject, 0, len(doc.Data))
	for _, raw := range doc.Data {
		var m struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(raw, &m) != nil || m.ID == "" || !uc.MatchesModel(m.ID) {
			continue
		}
		out = append(out, modelObject{id: m.ID, raw: raw})
	}
	return out, false
}

// serveHealth answers GET /health with each client's breaker state, in config order.
func (h *Handler) serveHealth(w http.ResponseWriter, g *generation) {
	now := time.Now()
	buf := make([]byte, 0, 64+48*len(g.clients))
	buf = append(buf, `{"status":"ok","clients":{`...)
	for i, uc := range g.clients {
		if i > 0 {
			buf = append(buf, ',')
		}
		name, _ := json.Marshal(uc.Name)
		buf = append(buf, name...)
		buf = append(buf, `:{"state":"`...)
		buf = append(buf, uc.state.Breaker.State(g.policy, now).String()...)
		buf = append(buf, `"}`...)
	}
	buf = append(buf, "}}"...)
	writeJSON(w, http.StatusOK, buf)
}
