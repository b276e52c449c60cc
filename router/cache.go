package router

import (
	"hash/maphash"
	"strings"
	"sync/atomic"
)

// Bounds of a table's candidate cache. Together they bound its memory whatever model names
// callers send: at most cacheSlots entries, each for a name of at most cacheMaxModel bytes, and
// about cacheMaxBytes of names and candidate lists in all.
const (
	cacheSlots    = 4096 // entries, in sets of two
	cacheMaxModel = 256  // longer names are looked up each time, never cached
	cacheMaxBytes = 4 << 20
	// cacheEntryOverhead approximates an entry's own memory beyond its name and list.
	cacheEntryOverhead = 64
)

// candCache holds the candidates of recently routed models, for one table: a config generation
// has its own and drops it with the table, so it never holds an answer of another config.
//
// It is a set-associative cache of fixed size: a model's hash picks a set of two slots, and a
// lookup is a hash, two atomic loads and a string compare, without a lock or a write to memory
// other requests read (the reference bit is set only when it was clear). A miss computes the
// answer as the uncached lookup does and offers it to the set, evicting as CLOCK does: an empty
// slot first, then an entry not used since it was stored or last spared; when both were used,
// both are spared once (their bits cleared) and the new answer is not stored. A name asked for
// once, as a caller inventing names does, thus never displaces a model in use.
//
// An answer is stored only when its model is asked for the second time in a row of misses of
// its set: each set remembers the hash of its last miss. A caller inventing a new name for every
// call thus costs the uncached lookup and one atomic store, never an allocation.
type candCache struct {
	seed  maphash.Seed
	bytes atomic.Int64 // accounted size of the stored entries
	slots [cacheSlots]atomic.Pointer[cacheEntry]
	last  [cacheSlots / 2]atomic.Uint64 // per set, the hash of the last model it missed
}

// cacheEntry is one model's answer; everything but used is immutable once stored.
type cacheEntry struct {
	model string
	cands []int
	size  int64
	used  atomic.Bool // CLOCK reference bit
}

func newCandCache() *candCache { return &candCache{seed: maphash.MakeSeed()} }

// get returns the entry of model, or nil, and the hash that put takes.
func (c *candCache) get(model string) (*cacheEntry, uint64) {
	h := maphash.String(c.seed, model)
	set := h % (cacheSlots / 2) * 2
	for i := set; i < set+2; i++ {
		if e := c.slots[i].Load(); e != nil && e.model == model {
			if !e.used.Load() {
				e.used.Store(true)
			}
			return e, h
		}
	}
	return nil, h
}

// put offers model's candidates, hashed to h by get, to the cache; cands is copied.
func (c *candCache) put(h uint64, model string, cands []int) {
	if len(model) > cacheMaxModel {
		return
	}
	set := h % (cacheSlots / 2) * 2
	if c.last[set/2].Swap(h) != h {
		return // first sighting
	}
	a, b := c.slots[set].Load(), c.slots[set+1].Load()
	slot, victim := set, a
	switch {
	case a == nil:
	case b == nil:
		slot, victim = set+1, nil
	case !a.used.Load():
	case !b.used.Load():
		slot, victim = set+1, b
	default:
		a.used.Store(false)
		b.used.Store(false)
		return
	}
	size := cacheEntryOverhead + int64(len(model)) + 8*int64(len(cands))
	var freed int64
	if victim != nil {
		freed = victim.size
	}
	for {
		cur := c.bytes.Load()
		if cur+size-freed > cacheMaxBytes {
			return
		}
		if c.bytes.CompareAndSwap(cur, cur+size) {
			break
		}
	}
	// The name may point into a request's body: a copy keeps the body from being pinned.
	e := &cacheEntry{model: strings.Clone(model), size: size}
	if len(cands) > 0 {
		e.cands = append([]int(nil), cands...)
	}
	if !c.slots[slot].CompareAndSwap(victim, e) {
		c.bytes.Add(-size) // another request filled the slot meanwhile: keep its entry
		return
	}
	c.bytes.Add(-freed)
}
