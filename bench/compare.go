//go:build linux

package main

import (
	"fmt"
	"strings"
)

// mdTable is one Markdown table of an earlier report.
type mdTable struct {
	header []string
	rows   [][]string
}

// cell returns row's cell under the column named col, or "—".
func (t mdTable) cell(row []string, col string) string {
	for i, h := range t.header {
		if h == col && i < len(row) {
			return row[i]
		}
	}
	return "—"
}

// find returns the first row whose leading cells are key.
func (t mdTable) find(key ...string) []string {
	for _, r := range t.rows {
		if len(r) >= len(key) && equalCells(r[:len(key)], key) {
			return r
		}
	}
	return nil
}

func equalCells(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// parseTables returns the tables of a Markdown document keyed by their
// first header cell ("Phase", "Check"), outside code blocks. It reads only
// what render writes: one table per key, pipes at both ends, no escaped
// pipes.
func parseTables(doc string) map[string]mdTable {
	tables := make(map[string]mdTable)
	var cur *mdTable
	var key string
	fenced := false
	for line := range strings.Lines(doc) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(line, "|") {
			if cur != nil {
				tables[key] = *cur
				cur = nil
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case cur == nil:
			key, cur = cells[0], &mdTable{header: cells}
		case strings.HasPrefix(cells[0], "---") || strings.HasPrefix(cells[0], ":-"):
		default:
			cur.rows = append(cur.rows, cells)
		}
	}
	if cur != nil {
		tables[key] = *cur
	}
	return tables
}

// compare writes this run's checks and main figures next to an earlier
// report's: rows matched by check name, or by phase and target; a row that
// only one run has shows "—" for the other.
func compare(w *strings.Builder, before map[string]mdTable, rep report) {
	bc := before["Check"]
	fmt.Fprintf(w, "### Acceptance checks\n\n| Check | Limit | Before | After |\n|---|--:|--:|--:|\n")
	seen := make(map[string]bool)
	for _, c := range rep.checks {
		seen[c[0]] = true
		b := "—"
		if r := bc.find(c[0]); r != nil {
			b = bc.cell(r, "Measured") + " " + bc.cell(r, "Pass")
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", c[0], c[2], b, c[1]+" "+c[3])
	}
	for _, r := range bc.rows {
		if !seen[r[0]] {
			fmt.Fprintf(w, "| %s | %s | %s | — |\n", r[0], bc.cell(r, "Limit"), bc.cell(r, "Measured")+" "+bc.cell(r, "Pass"))
		}
	}

	br := before["Phase"]
	after := mdTable{header: resultHeader, rows: rep.results}
	cols := []string{"CPU µs/req", "req/s", "added p50", "TTFT p50", "RSS KiB/stream", "errors"}
	fmt.Fprintf(w, "\n### Results, before → after\n\nThe columns of the results tables below, for the rows both runs have.\n\n")
	fmt.Fprintf(w, "| Phase | Target | %s |\n|---|---|%s\n", strings.Join(cols, " | "), strings.Repeat("--:|", len(cols)))
	row := func(b, a []string) {
		phase, target := a, a
		if a == nil {
			phase, target = b, b
		}
		fmt.Fprintf(w, "| %s | %s |", phase[0], target[1])
		for _, col := range cols {
			bv, av := "—", "—"
			if b != nil {
				bv = br.cell(b, col)
			}
			if a != nil {
				av = after.cell(a, col)
			}
			fmt.Fprintf(w, " %s → %s |", bv, av)
		}
		w.WriteString("\n")
	}
	for _, a := range rep.results {
		row(br.find(a[0], a[1]), a)
	}
	for _, b := range br.rows {
		if after.find(b[0], b[1]) == nil {
			row(b, nil)
		}
	}
}

// demote returns an earlier report for embedding under a level-2 heading:
// its title dropped and every other heading one level down, code blocks
// and everything else verbatim.
func demote(doc string) string {
	var w strings.Builder
	fenced, titled := false, false
	for line := range strings.Lines(doc) {
		switch {
		case strings.HasPrefix(line, "```"):
			fenced = !fenced
		case fenced:
		case !titled && strings.HasPrefix(line, "# "):
			titled = true
			continue
		case strings.HasPrefix(line, "#"):
			line = "#" + line
		}
		w.WriteString(line)
	}
	return w.String()
}
