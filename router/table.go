package router

import (
	"fmt"
	"slices"
)

// Table is the compiled, immutable client list of one config generation. It is built once at
// provision time and then only read, so requests share it without locking.
type Table struct {
	// Clients are the upstreams in config order. Indices into this slice are what Candidates,
	// Order and the fallback helpers deal in. Callers must not modify it.
	Clients []*Client

	byName ClientNames
	index  modelIndex
}

// NewTable compiles the match rules of clients and indexes them by name. It rejects nil clients,
// empty and duplicate names and invalid rules. The slice is copied; the clients are not (their
// rules are compiled in place, which is idempotent).
func NewTable(clients []*Client) (*Table, error) {
	t := &Table{
		Clients: slices.Clone(clients),
		byName:  make(ClientNames, len(clients)),
	}
	for i, c := range t.Clients {
		if c == nil {
			return nil, fmt.Errorf("client #%d is nil", i)
		}
		if c.Name == "" {
			return nil, fmt.Errorf("client #%d has no name", i)
		}
		if err := t.byName.Add(c.Name, i); err != nil {
			return nil, err
		}
		for j := range c.Match {
			if err := c.Match[j].Compile(); err != nil {
				return nil, fmt.Errorf("client %s: %w", c.Name, err)
			}
		}
	}
	t.index = newModelIndex(t.Clients)
	return t, nil
}

// Candidates appends to dst the indices of the clients serving model, in config order, and
// returns the extended slice. Every matching client is a candidate: there is no precedence
// between rules and no "first match wins". Pass a reused dst[:0] to avoid allocating.
//
// Its cost does not grow with the number of clients, only with the number of rules that no
// index holds (keywords and regexes that are not a few fixed strings), and their results are
// cached per model (see modelIndex and candCache).
func (t *Table) Candidates(model string, dst []int) []int {
	c := t.index.cache
	if c == nil {
		return t.index.lookup(model, dst)
	}
	e, h := c.get(model)
	if e != nil {
		return append(dst, e.cands...)
	}
	n := len(dst)
	dst = t.index.lookup(model, dst)
	c.put(h, model, dst[n:])
	return dst
}

// Index returns the index of the client called name.
func (t *Table) Index(name string) (int, bool) {
	i, ok := t.byName[name]
	return i, ok
}
