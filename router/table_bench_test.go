package router

import (
	"fmt"
	"strconv"
	"testing"
)

// benchClients builds n clients of one kind, client i serving "model-i":
//
//   - exact: `match exact model-i`
//   - regex: `match regex ^model-i$`
//   - mixed: in turn, counting back from the last client, regex ^model-i(-[a-z]+)?$,
//     keyword "kw-i/", regex ^model-i$ and exact model-i (the first two need a scan: neither
//     is a literal)
func benchClients(kind string, n int) []*Client {
	out := make([]*Client, n)
	for i := range out {
		name := "c" + strconv.Itoa(i)
		m := "model-" + strconv.Itoa(i)
		var rule MatchRule
		switch kind {
		case "exact":
			rule = exact(m)
		case "regex":
			rule = regex("^" + m + "$")
		case "mixed":
			switch (n - 1 - i) % 4 {
			case 0:
				rule = regex("^" + m + "(-[a-z]+)?$")
			case 1:
				rule = keyword("kw-" + strconv.Itoa(i) + "/")
			case 2:
				rule = regex("^" + m + "$")
			case 3:
				rule = exact(m)
			}
		}
		out[i] = client(name, 1, rule)
	}
	return out
}

// benchHit is a model served by the last client of kind, so a linear scan pays for all.
func benchHit(kind string, n int) string {
	if kind == "mixed" {
		return "model-" + strconv.Itoa(n-1) + "-mini" // served only by the last one's scanned rule
	}
	return "model-" + strconv.Itoa(n-1)
}

// BenchmarkCandidates measures routing one model at 1, 1,000 and 10,000 clients: a hit (a served
// model asked for again and again), a miss (an unknown model asked for again and again) and
// unique misses (a new unknown name every call: what a hostile caller makes the cache do).
func BenchmarkCandidates(b *testing.B) {
	unique := make([]string, 1<<16)
	for i := range unique {
		unique[i] = "unknown-" + strconv.Itoa(i)
	}
	for _, kind := range []string{"exact", "regex", "mixed"} {
		for _, n := range []int{1, 1000, 10000} {
			tb := mustTable(b, benchClients(kind, n)...)
			hit := benchHit(kind, n)
			if got := tb.Candidates(hit, nil); len(got) != 1 {
				b.Fatalf("%s/%d: %q has candidates %v", kind, n, hit, got)
			}
			for _, mode := range []string{"hit", "miss", "miss-unique"} {
				b.Run(fmt.Sprintf("%s/%d/%s", kind, n, mode), func(b *testing.B) {
					dst := make([]int, 0, 16)
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						model := hit
						switch mode {
						case "miss":
							model = "unknown-model"
						case "miss-unique":
							model = unique[i&(len(unique)-1)]
							i++
						}
						dst = tb.Candidates(model, dst[:0])
					}
				})
			}
		}
	}
}

// BenchmarkCandidatesParallel routes one served model from every P at once: the hot path must
// not contend.
func BenchmarkCandidatesParallel(b *testing.B) {
	for _, kind := range []string{"regex", "mixed"} {
		tb := mustTable(b, benchClients(kind, 10000)...)
		hit := benchHit(kind, 10000)
		if got := tb.Candidates(hit, nil); len(got) != 1 {
			b.Fatalf("%s: %q has candidates %v", kind, hit, got)
		}
		b.Run(kind+"/10000/hit", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				dst := make([]int, 0, 16)
				for pb.Next() {
					dst = tb.Candidates(hit, dst[:0])
				}
			})
		})
	}
}
