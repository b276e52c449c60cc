package router

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
)

// Key is one deterministic-affinity routing key: the first 64 characters of a user message (or
// of a completion prompt) and its vote weight, the full text's byte length. The handler extracts
// keys; Order only votes with them.
type Key struct {
	Text   string
	Weight int
}

// Order sorts cands (indices into t.Clients) in place into the order the request tries them.
//
//   - StrategyRandom (and the empty strategy): Efraimidis–Spirakis weighted sampling without
//     replacement, weight = Priority. The chance of going first is proportional to the priority.
//     Clients with priority 0 go last in config order, so a config without priorities is tried
//     strictly in config order.
//   - StrategyDeterministic: every key votes, with its Weight, for the client with the highest
//     rendezvous score n^(1/priority), where n in (0,1) comes from a hash of (key text, client
//     name) that is stable across processes and builds; ties go to the earlier client and
//     priority 0 scores 0. Clients are then ordered by votes, descending, ties by name ascending.
//     The same prompt thus reaches the same client (upstream KV-cache affinity) while many
//     prompts spread in proportion to priority. Without keys it is StrategyRandom.
//   - StrategyLeastConnections: inflight(i) / max(priority, 1), lowest first, ties in config
//     order. A nil inflight counts zero everywhere, which gives config order.
//
// rnd returns uniform floats in [0,1); production passes math/rand/v2.Float64 (also used when rnd
// is nil) and tests a seeded source. inflight is only read by least_connections.
//
// Order does not allocate for up to stackRanks candidates.
func Order(s Strategy, t *Table, cands []int, keys []Key, inflight func(i int) int64, rnd func() float64) {
	if len(cands) < 2 {
		return
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	var buf [stackRanks]rank
	r := buf[:0]
	if len(cands) > len(buf) {
		r = make([]rank, 0, len(cands))
	}
	for _, i := range cands {
		r = append(r, rank{idx: i})
	}
	switch s {
	case StrategyDeterministic:
		if len(keys) > 0 {
			orderDeterministic(t, r, keys)
			break
		}
		orderRandom(t, r, rnd)
	case StrategyLeastConnections:
		orderLeastConnections(t, r, inflight)
	default:
		orderRandom(t, r, rnd)
	}
	for j := range r {
		cands[j] = r[j].idx
	}
}

// stackRanks is how many candidates Order sorts without a heap allocation; a model is rarely
// served by more clients than this.
const stackRanks = 16

// rank is one candidate being sorted.
type rank struct {
	idx      int     // index into Table.Clients
	weighted bool    // random: priority > 0
	key      float64 // random: sampling key; least_connections: load
	votes    int     // deterministic: summed key weights
}

// orderRandom is Efraimidis–Spirakis: key U^(1/w), largest first. It compares ln(U)/w instead,
// which orders identically (ln is increasing) and avoids math.Pow. Zero-weight clients get no key
// and sort behind every weighted one, even one that drew U = 0.
func orderRandom(t *Table, r []rank, rnd func() float64) {
	for j := range r {
		if w := t.Clients[r[j].idx].Priority; w > 0 {
			r[j].weighted = true
			r[j].key = math.Log(rnd()) / float64(w)
		}
	}
	slices.SortStableFunc(r, func(a, b rank) int {
		if a.weighted != b.weighted {
			if a.weighted {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.key, a.key)
	})
}

// orderDeterministic is weighted rendezvous hashing with one vote per key. Scores are compared
// as ln(n)/priority, which orders like n^(1/priority); priority 0 scores -Inf, the image of 0.
func orderDeterministic(t *Table, r []rank, keys []Key) {
	for _, k := range keys {
		seed := hashKey(k.Text)
		best, bestScore := -1, 0.0
		for j := range r {
			c := t.Clients[r[j].idx]
			score := math.Inf(-1)
			if c.Priority > 0 {
				score = math.Log(unitInterval(hashName(seed, c.Name))) / float64(c.Priority)
			}
			if best < 0 || score > bestScore { // strictly higher: ties stay with the earlier client
				best, bestScore = j, score
			}
		}
		r[best].votes += k.Weight
	}
	slices.SortFunc(r, func(a, b rank) int {
		if c := cmp.Compare(b.votes, a.votes); c != 0 {
			return c
		}
		return cmp.Compare(t.Clients[a.idx].Name, t.Clients[b.idx].Name)
	})
}

// orderLeastConnections sorts by in-flight requests per unit of priority, lowest first.
func orderLeastConnections(t *Table, r []rank, inflight func(i int) int64) {
	if inflight == nil {
		return // every load is zero: config order
	}
	for j := range r {
		if n := inflight(r[j].idx); n > 0 {
			r[j].key = float64(n) / float64(max(t.Clients[r[j].idx].Priority, 1))
		}
	}
	slices.SortStableFunc(r, func(a, b rank) int { return cmp.Compare(a.key, b.key) })
}

// FNV-1a 64 parameters.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// hashKey starts the rendezvous hash of a key: FNV-1a over its bytes and a 0xFF separator (which
// no UTF-8 text contains, so ("ab","c") and ("a","bc") differ). hashName continues it per client,
// so the key's bytes are hashed once per request rather than once per client.
func hashKey(text string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(text); i++ {
		h ^= uint64(text[i])
		h *= fnvPrime64
	}
	h ^= 0xFF
	h *= fnvPrime64
	return h
}

// hashName finishes the hash of (key, name). FNV-1a alone mixes poorly into its high bits, which
// the score depends on most, so the murmur3 finaliser spreads every input bit over the output.
// Both are fixed algorithms: the hash is the same in every process, on every platform.
func hashName(seed uint64, name string) uint64 {
	h := seed
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= fnvPrime64
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// unitInterval maps h to (h+1)/(2^64+1), strictly inside (0,1) so its logarithm is finite.
func unitInterval(h uint64) float64 {
	n := (float64(h) + 1) / (math.MaxUint64 + 2.0)
	if n >= 1 { // float64 rounds the largest hashes up to 1
		n = math.Nextafter(1, 0)
	}
	return n
}
