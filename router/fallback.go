package router

import (
	"errors"
	"slices"
)

// ResolveFallback resolves a client's fallback value. A value that some client matches as a model
// is that model: it returns the value as the new model and its candidates appended to dst, in
// config order (to be ordered again). Otherwise a value naming a client falls back to that client
// alone, and the model stays currentModel: what the client is sent is the current model, or its
// upstream_model if it has one, exactly as for any other attempt. Model names win over client
// names so that an origin config, where fallback is always a model, keeps its meaning. ok is false
// when the value is empty or neither a served model nor a client name.
func (t *Table) ResolveFallback(value, currentModel string, dst []int) (model string, cands []int, ok bool) {
	if value == "" {
		return "", dst, false
	}
	n := len(dst)
	if dst = t.Candidates(value, dst); len(dst) > n {
		return value, dst, true
	}
	if i, found := t.Index(value); found {
		return currentModel, append(dst, i), true
	}
	return "", dst, false
}

// FallbackOf returns the fallback value of the first client in order (the attempt order of the
// hop that just failed) that has one, or "" if none has.
func (t *Table) FallbackOf(order []int) string {
	for _, i := range order {
		if f := t.Clients[i].Fallback; f != "" {
			return f
		}
	}
	return ""
}

// Reasons FallbackChain.Next gives for not taking another hop.
var (
	ErrNoFallback      = errors.New("no candidate has a fallback")
	ErrFallbackHops    = errors.New("fallback hop limit reached")
	ErrFallbackCycle   = errors.New("fallback leads back to a model or client already tried")
	ErrFallbackUnknown = errors.New("fallback is neither a served model nor a client name")
)

// FallbackChain follows the model fallbacks of one request. It bounds the number of hops and
// refuses a value already visited (the request's model counts as visited), so A→B→A ends
// instead of looping as it did in the origin. It allocates only when a hop is taken.
type FallbackChain struct {
	t       *Table
	maxHops int
	model   string   // the request's model
	seen    []string // fallback values taken so far
}

// NewFallbackChain starts the chain of a request for model allowing at most maxHops hops; zero
// disables model fallback.
func (t *Table) NewFallbackChain(model string, maxHops int) FallbackChain {
	return FallbackChain{t: t, maxHops: maxHops, model: model}
}

// Hops returns the number of hops taken.
func (c *FallbackChain) Hops() int { return len(c.seen) }

// Next is called when every attempt of the current hop failed. order is that hop's attempt order
// and currentModel its model. It takes the fallback of the first client in order that has one
// and resolves it with ResolveFallback, appending the new candidates to dst. value is the
// fallback value found (for logs) even when err says why the chain ends there.
func (c *FallbackChain) Next(order []int, currentModel string, dst []int) (value, model string, cands []int, err error) {
	value = c.t.FallbackOf(order)
	switch {
	case value == "":
		return "", "", dst, ErrNoFallback
	case len(c.seen) >= c.maxHops:
		return value, "", dst, ErrFallbackHops
	case value == c.model || slices.Contains(c.seen, value):
		return value, "", dst, ErrFallbackCycle
	}
	model, cands, ok := c.t.ResolveFallback(value, currentModel, dst)
	if !ok {
		return value, "", dst, ErrFallbackUnknown
	}
	c.seen = append(c.seen, value)
	return value, model, cands, nil
}
