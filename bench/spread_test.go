//go:build linux

package main

import (
	"math"
	"slices"
	"testing"
)

func TestSpreads(t *testing.T) {
	run := func(vs ...any) report {
		var r report
		for i := 0; i < len(vs); i += 2 {
			f := figure{}
			if v, ok := vs[i+1].(float64); ok {
				f = figure{v, true}
			}
			r.cpuRatios = append(r.cpuRatios, namedFigure{vs[i].(string), f})
		}
		return r
	}
	rows := spreads([]report{
		run("a", 1.00, "b", 0.80, "c", nil),
		run("a", 1.02, "b", 0.90, "c", 0.5),
		run("a", 0.99, "d", 2.0, "c", nil),
	})
	var names []string
	for _, r := range rows {
		names = append(names, r.name)
	}
	if want := []string{"a", "b", "c", "d"}; !slices.Equal(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
	for _, tc := range []struct {
		row int
		dev float64
		ok  bool
	}{
		{0, 0.02, true},        // median 1.00: 1.02 is the farthest
		{1, 0.05 / 0.85, true}, // two values: median 0.85
		{2, 0, false},          // one value: no spread
		{3, 0, false},          // likewise
	} {
		r := rows[tc.row]
		if r.dev.ok != tc.ok || math.Abs(r.dev.v-tc.dev) > 1e-9 {
			t.Errorf("%s: deviation %v (ok %v), want %v (ok %v)", r.name, r.dev.v, r.dev.ok, tc.dev, tc.ok)
		}
	}
	if !rows[1].values[0].ok || rows[1].values[2].ok {
		t.Errorf("b's values: %+v, want run 3 missing", rows[1].values)
	}

	cells := spreadCells(rows)
	if want := []string{"a", "1.000", "1.020", "0.990", "3.0%", "2.0%", "yes"}; !slices.Equal(cells[0], want) {
		t.Errorf("a's cells %q, want %q", cells[0], want)
	}
	if want := []string{"b", "0.800", "0.900", "—", "12.5%", "5.9%", "**no**"}; !slices.Equal(cells[1], want) {
		t.Errorf("b's cells %q, want %q", cells[1], want)
	}
	if got := cells[2][len(cells[2])-1]; got != "n/a" {
		t.Errorf("c's verdict %q, want n/a", got)
	}
	if got := len(spreadHeader(3)); got != len(cells[0]) {
		t.Errorf("header has %d columns, rows %d", got, len(cells[0]))
	}
}

// TestRoundRatio: CPU ratios are taken round by round, then the median: a round where the
// machine was busy for both targets moves neither, where a ratio of medians would mix rounds.
func TestRoundRatio(t *testing.T) {
	f := func(vs ...float64) figures {
		var x figures
		for _, v := range vs {
			x.cpuRounds = append(x.cpuRounds, figure{v, v > 0})
		}
		return x
	}
	for _, tc := range []struct {
		name string
		a, b figures
		want figure
	}{
		{"drift cancels", f(100, 200, 300), f(50, 100, 150), figure{2, true}},
		{"median of rounds", f(100, 100, 100), f(100, 50, 200), figure{1, true}},
		{"missing rounds skipped", f(100, 0, 90), f(100, 50, 100), figure{0.95, true}},
		{"uneven rounds", f(100, 200), f(100), figure{1, true}},
		{"nothing in common", f(0, 100), f(100, 0), figure{}},
	} {
		if got := roundRatio(tc.a, tc.b); got.ok != tc.want.ok || math.Abs(got.v-tc.want.v) > 1e-9 {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
