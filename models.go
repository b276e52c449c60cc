package llmgateway

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"slices"
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

// modelsCache caches the model list of each fetch group (clients that send the same /models
// request to the same upstream, see modelGroups) per credential its /models call sends: one entry
// for a group with its own api_key, one per caller credential for a group that passes the
// caller's key through. So callers with distinct (even junk) keys share what was fetched with the
// operator's key instead of each costing an upstream call with it, and no caller is served a list
// fetched with another caller's key. A cache belongs to one config generation, so a reload
// invalidates it.
type modelsCache struct {
	ttl time.Duration

	mu      sync.Mutex
	own     map[int]*modelsEntry       // by group: groups with their own key
	callers map[modelsKey]*modelsEntry // groups passing the caller's key through
}

// modelsKey names a pass-through group's list fetched with one caller credential.
type modelsKey struct {
	group int
	cred  [sha256.Size]byte
}

// modelGroups are a generation's clients grouped by the /models request they send: the same
// transport, base_url, api_key and configured headers get the same answer, so a config of
// thousands of clients of one upstream fetches its list once, not once per client.
type modelGroups struct {
	members [][]int // per group, its clients in config order
	of      []int   // per client, its group
	// exact is every name of an exact rule, once, in config order, with the object listing it
	// (owned_by its first client): built once, not on each call.
	exact []modelObject
}

// newModelGroups groups the clients of g and lists their exact names.
func newModelGroups(clients []*upstreamClient) modelGroups {
	mg := modelGroups{of: make([]int, len(clients))}
	byKey := make(map[string]int)
	seen := make(map[string]bool)
	for i, uc := range clients {
		// fmt prints a map's keys sorted: equal header configs give equal keys.
		key := fmt.Sprintf("%p\x00%s\x00%s\x00%q", uc.transport, uc.base, uc.apiKey, uc.Headers)
		gi, ok := byKey[key]
		if !ok {
			gi = len(mg.members)
			byKey[key] = gi
			mg.members = append(mg.members, nil)
		}
		mg.members[gi] = append(mg.members[gi], i)
		mg.of[i] = gi
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
				mg.exact = append(mg.exact, modelObject{id: id, raw: raw})
			}
		}
	}
	return mg
}

// modelsEntry is one cached list; ready is closed once list and expires are set, so concurrent
// requests for the same entry share one fetch.
type modelsEntry struct {
	ready   chan struct{}
	list    []modelObject
	expires time.Time
}

func newModelsCache(ttl time.Duration) *modelsCache {
	return &modelsCache{ttl: ttl, own: make(map[int]*modelsEntry), callers: make(map[modelsKey]*modelsEntry)}
}

// serveModels answers GET /v1/models with the union of every client's models.
func (h *Handler) serveModels(w http.ResponseWriter, r *http.Request, g *generation) {
	cred := callerCredential(r.Header)
	var allows func(string) bool
	if set := h.keySet.Load(); set != nil {
		// With gateway keys, the caller's credential is its gateway key: it is never sent
		// upstream, and the list holds only the key's models (SPEC §12).
		e, err := authenticate(set, r.Header, h.counters.now())
		if err != nil {
			writeJSON(w, err.status, marshalError(err.typ, err.code, err.message))
			return
		}
		cred, allows = "", e.Allows
	}
	body, ok := g.aggregateModels(r.Context(), cred, allows)
	if !ok {
		return // the caller went away while waiting for another request's fetch
	}
	writeJSON(w, http.StatusOK, body)
}

// list returns the model list of group i, whose first client is uc, for a caller whose credential
// is cred (credSum its hash), from the cache when it holds a fresh one. ok is false when ctx
// ended while waiting for another request's fetch.
func (mc *modelsCache) list(ctx context.Context, i int, uc *upstreamClient, cred string, credSum *[sha256.Size]byte) (list []modelObject, ok bool) {
	if mc.ttl <= 0 {
		list, _ = fetchModels(ctx, uc, cred)
		return list, true
	}
	now := time.Now()
	own := uc.apiKey != ""
	key := modelsKey{group: i, cred: *credSum}

	mc.mu.Lock()
	var e *modelsEntry
	if own {
		e = mc.own[i]
	} else {
		e = mc.callers[key]
	}
	if e != nil {
		select {
		case <-e.ready:
			if now.After(e.expires) {
				e = nil // expired: refresh below
			}
		default: // a fetch is running: wait for it
		}
	}
	leader := e == nil
	if leader {
		e = &modelsEntry{ready: make(chan struct{})}
		if own {
			mc.own[i] = e
		} else {
			if len(mc.callers) >= modelsCacheEntries {
				for k := range mc.callers { // evict an arbitrary entry
					delete(mc.callers, k)
					break
				}
			}
			mc.callers[key] = e
		}
	}
	mc.mu.Unlock()

	if !leader {
		select {
		case <-e.ready:
			return e.list, true
		case <-ctx.Done():
			return nil, false
		}
	}
	// The fetch outlives a leader that disconnects: others wait for it.
	list, failed := fetchModels(context.WithoutCancel(ctx), uc, cred)
	ttl := mc.ttl
	if failed {
		// Serve what the others listed, but do not let a blip hide this client's models for a
		// whole TTL.
		ttl = min(ttl, modelsRetryAfterFailure)
	}
	e.list, e.expires = list, time.Now().Add(ttl)
	close(e.ready)
	return list, true
}

// modelObject is an upstream model entry: its id, and the object as the upstream sent it.
type modelObject struct {
	id  string
	raw json.RawMessage
}

// aggregateModels gets every fetch group's model list concurrently (from the cache when fresh)
// and merges them: de-duplicated by id in config order (each model where the first client
// listing it lists it), each client's share filtered by its match rules, followed by the
// configured exact model names missing from the upstream lists. ok is false when ctx ended
// first. Its cost grows with the lists and the exact names it returns, not with the number of
// clients sharing a list: a model is matched through the table's index, not client by client.
func (g *generation) aggregateModels(ctx context.Context, cred string, allows func(model string) bool) (body []byte, ok bool) {
	credSum := sha256.Sum256([]byte(cred))
	groups := g.modelGroups.members
	lists := make([][]modelObject, len(groups))
	done := make([]bool, len(groups))
	var wg sync.WaitGroup
	for i, members := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lists[i], done[i] = g.models.list(ctx, i, g.clients[members[0]], cred, &credSum)
		}()
	}
	wg.Wait()
	for _, d := range done {
		if !d {
			return nil, false
		}
	}

	// Each listed model goes where the first client of its group whose rules match it lists
	// it: ordered by that client, then by its place in the list.
	type placed struct {
		client, pos int
		m           *modelObject
	}
	var items []placed
	var cands []int
	for gi, list := range lists {
		for pos := range list {
			m := &list[pos]
			cands = g.table.Candidates(m.id, cands[:0])
			for _, c := range cands {
				if g.modelGroups.of[c] == gi {
					items = append(items, placed{c, pos, m})
					break
				}
			}
		}
	}
	slices.SortFunc(items, func(a, b placed) int {
		if c := cmp.Compare(a.client, b.client); c != 0 {
			return c
		}
		return cmp.Compare(a.pos, b.pos)
	})

	seen := make(map[string]bool)
	if allows != nil {
		// A model the key may not use is marked seen, so neither an upstream list nor the
		// configured exact names add it.
		for _, it := range items {
			if !allows(it.m.id) {
				seen[it.m.id] = true
			}
		}
		for _, m := range g.modelGroups.exact {
			if !allows(m.id) {
				seen[m.id] = true
			}
		}
	}
	data := make([]json.RawMessage, 0, 16)
	for _, it := range items {
		if !seen[it.m.id] {
			seen[it.m.id] = true
			data = append(data, it.m.raw)
		}
	}
	for _, m := range g.modelGroups.exact {
		if !seen[m.id] {
			seen[m.id] = true
			data = append(data, m.raw)
		}
	}
	out, _ := json.Marshal(struct {
		Object string            `json:"object"`
		Data   []json.RawMessage `json:"data"`
	}{"list", data})
	return out, true
}

// fetchModels gets one client's model list, as the upstream sent it: aggregateModels keeps of
// it what each client of the fetch group matches. Any failure gives an empty list and failed:
// one broken upstream must not hide the others.
func fetchModels(ctx context.Context, uc *upstreamClient, cred string) (list []modelObject, failed bool) {
	ctx, cancel := context.WithTimeout(ctx, modelsFetchTimeout)
	defer cancel()
	u := uc.url("/models", "")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "", nil)
	if err != nil {
		return nil, true
	}
	req.URL, req.Host = &u, u.Host
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
		if json.Unmarshal(raw, &m) != nil || m.ID == "" {
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
