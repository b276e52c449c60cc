//go:build linux

package main

import (
	"fmt"
	"math"
	"slices"
)

// spreadRow is one CPU ratio over the runs of -repeat: its value in each run (not ok where a
// run lacks it) and the largest deviation of a value from their median, as a fraction.
type spreadRow struct {
	name   string
	values []figure
	dev    figure
}

// maxDeviation is the run-to-run agreement the CPU ratios are held to: ±3% around the median.
const maxDeviation = 0.03

// spreads lines up the CPU ratios of several runs by name, in the first run's order (names only
// later runs have follow), with the deviation of each from the median of its values.
func spreads(runs []report) []spreadRow {
	var rows []spreadRow
	at := make(map[string]int)
	for i, rep := range runs {
		for _, nf := range rep.cpuRatios {
			j, ok := at[nf.name]
			if !ok {
				j = len(rows)
				at[nf.name] = j
				rows = append(rows, spreadRow{name: nf.name, values: make([]figure, len(runs))})
			}
			rows[j].values[i] = nf.v
		}
	}
	for i := range rows {
		var vs []float64
		for _, v := range rows[i].values {
			if v.ok {
				vs = append(vs, v.v)
			}
		}
		// A spread needs two values, and a median of zero has none.
		if m := median(vs); len(vs) >= 2 && m.v != 0 {
			dev := 0.0
			for _, v := range vs {
				dev = max(dev, math.Abs(v/m.v-1))
			}
			rows[i].dev = figure{dev, true}
		}
	}
	return rows
}

func spreadHeader(runs int) []string {
	h := []string{"CPU ratio"}
	for i := range runs {
		h = append(h, fmt.Sprintf("run %d", i+1))
	}
	return append(h, "max/min − 1", "deviation from median", "within ±3%")
}

// spreadCells are the rows of the spread table.
func spreadCells(rows []spreadRow) [][]string {
	var out [][]string
	for _, r := range rows {
		c := []string{r.name}
		var vs []float64
		for _, v := range r.values {
			c = append(c, v.format(3))
			if v.ok {
				vs = append(vs, v.v)
			}
		}
		mm := figure{}
		if len(vs) >= 2 && slices.Min(vs) > 0 {
			mm = figure{(slices.Max(vs)/slices.Min(vs) - 1) * 100, true}
		}
		pass := "n/a"
		if r.dev.ok {
			pass = "yes"
			if r.dev.v > maxDeviation {
				pass = "**no**"
			}
		}
		c = append(c, pct(mm), pct(figure{r.dev.v * 100, r.dev.ok}), pass)
		out = append(out, c)
	}
	return out
}

func pct(f figure) string {
	if !f.ok {
		return "—"
	}
	return fmt.Sprintf("%.1f%%", f.v)
}
