package router

import (
	"errors"
	"slices"
	"testing"
)

func fallbackTable(t *testing.T) *Table {
	withFallback := func(c *Client, fb string) *Client { c.Fallback = fb; return c }
	return mustTable(t,
		withFallback(client("big-a", 1, keyword("big")), ""),                // 0
		withFallback(client("big-b", 1, keyword("big")), "small"),           // 1
		withFallback(client("small-a", 1, exact("small")), "backup"),        // 2
		withFallback(client("small-b", 1, exact("small")), "big-model"),     // 3
		withFallback(client("backup", 1, exact("backup-model")), "small"),   // 4
		withFallback(client("loop", 1, exact("loop-model")), "loop"),        // 5
		withFallback(client("dangling", 1, exact("dangle")), "no-such"),     // 6
		withFallback(client("shadow", 1, exact("big-a")), "big-a-as-model"), // 7: "big-a" is also a model
	)
}

func TestResolveFallback(t *testing.T) {
	tb := fallbackTable(t)
	tests := []struct {
		name      string
		value     string
		wantModel string
		want      []string
		wantOK    bool
	}{
		{"model name re-matched", "small", "small", []string{"small-a", "small-b"}, true},
		{"client name keeps the current model", "backup", "current", []string{"backup"}, true},
		{"model match wins over client name", "big-a", "big-a", []string{"big-a", "big-b", "shadow"}, true},
		{"unknown value", "nothing", "", nil, false},
		{"empty value", "", "", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []int{42}
			model, cands, ok := tb.ResolveFallback(tt.value, "current", dst)
			if ok != tt.wantOK || model != tt.wantModel {
				t.Fatalf("ResolveFallback(%q) = %q, %v; want %q, %v", tt.value, model, ok, tt.wantModel, tt.wantOK)
			}
			if cands[0] != 42 {
				t.Fatalf("dst prefix overwritten: %v", cands)
			}
			if got := names(tb, cands[1:]); !slices.Equal(got, tt.want) {
				t.Errorf("candidates = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFallbackOf(t *testing.T) {
	tb := fallbackTable(t)
	tests := []struct {
		order []int
		want  string
	}{
		{[]int{0, 1}, "small"}, // big-a has none: the next in attempt order counts
		{[]int{1, 0}, "small"},
		{[]int{3, 2}, "big-model"},
		{[]int{0}, ""},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := tb.FallbackOf(tt.order); got != tt.want {
			t.Errorf("FallbackOf(%v) = %q, want %q", names(tb, tt.order), got, tt.want)
		}
	}
}

func TestFallbackChain(t *testing.T) {
	tb := fallbackTable(t)
	// hop is one failed hop: its attempt order and the expected outcome of Next.
	type hop struct {
		order []string
		value string
		model string
		cands []string
		err   error
	}
	tests := []struct {
		name    string
		model   string
		maxHops int
		hops    []hop
	}{
		{"model then client then cycle back", "big-model", 3, []hop{
			{order: []string{"big-b", "big-a"}, value: "small", model: "small", cands: []string{"small-a", "small-b"}},
			{order: []string{"small-a", "small-b"}, value: "backup", model: "small", cands: []string{"backup"}},
			{order: []string{"backup"}, value: "small", err: ErrFallbackCycle},
		}},
		{"back to the request model is a cycle", "big-model", 3, []hop{
			{order: []string{"big-b"}, value: "small", model: "small", cands: []string{"small-a", "small-b"}},
			{order: []string{"small-b", "small-a"}, value: "big-model", err: ErrFallbackCycle},
		}},
		{"client falling back to itself", "loop-model", 3, []hop{
			{order: []string{"loop"}, value: "loop", model: "loop-model", cands: []string{"loop"}},
			{order: []string{"loop"}, value: "loop", err: ErrFallbackCycle},
		}},
		{"hop limit", "big-model", 1, []hop{
			{order: []string{"big-b"}, value: "small", model: "small", cands: []string{"small-a", "small-b"}},
			{order: []string{"small-a"}, value: "backup", err: ErrFallbackHops},
		}},
		{"zero hops disables fallback", "big-model", 0, []hop{
			{order: []string{"big-b"}, value: "small", err: ErrFallbackHops},
		}},
		{"no fallback configured", "big-model", 3, []hop{
			{order: []string{"big-a"}, err: ErrNoFallback},
		}},
		{"dangling value", "dangle", 3, []hop{
			{order: []string{"dangling"}, value: "no-such", err: ErrFallbackUnknown},
		}},
	}
	idx := func(names []string) []int {
		var out []int
		for _, n := range names {
			i, ok := tb.Index(n)
			if !ok {
				t.Fatalf("no client %q", n)
			}
			out = append(out, i)
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain := tb.NewFallbackChain(tt.model, tt.maxHops)
			current := tt.model
			for n, h := range tt.hops {
				value, model, cands, err := chain.Next(idx(h.order), current, nil)
				if value != h.value || !errors.Is(err, h.err) {
					t.Fatalf("hop %d: Next = %q, %v; want %q, %v", n, value, err, h.value, h.err)
				}
				if err != nil {
					break
				}
				if model != h.model || !slices.Equal(names(tb, cands), h.cands) {
					t.Fatalf("hop %d: Next = model %q cands %v; want %q %v", n, model, names(tb, cands), h.model, h.cands)
				}
				if chain.Hops() != n+1 {
					t.Fatalf("hop %d: Hops() = %d", n, chain.Hops())
				}
				current = model
			}
		})
	}
}
