package router

import (
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"unicode/utf8"
)

// modelIndex answers Table.Candidates without evaluating every rule of every client. Rules
// that compare a model with fixed strings are indexed by those strings:
//
//   - exact names, and regexes whose matches are a few whole strings (^model-7$,
//     ^gpt-4o(-mini)?$), in a map by name;
//   - regexes anchored only at the start (^claude-, ^gpt-4.*), in a map by prefix, looked up
//     once per distinct prefix length;
//   - regexes anchored only at the end (-instruct$), likewise by suffix.
//
// What remains is scanned in config order: keywords, unanchored literal regexes (both a
// substring test) and every other regex. Only that scan grows with the number of such rules, and
// when it is more than a few substring tests, its results are cached per model (candCache).
type modelIndex struct {
	exact  map[string][]int
	prefix postings
	suffix postings
	scan   []scanRule // in client order
	cache  *candCache // nil when the scan is cheaper than a cache lookup
}

// postings maps fixed strings of one kind (prefixes or suffixes) to the clients whose rules hold
// them, with the distinct lengths of those strings, ascending, so that a lookup tries each
// length once.
type postings struct {
	by   map[string][]int
	lens []int
}

func (p *postings) add(s string, client int) {
	if p.by == nil {
		p.by = make(map[string][]int)
	}
	p.by[s] = addClient(p.by[s], client)
	if i, found := slices.BinarySearch(p.lens, len(s)); !found {
		p.lens = slices.Insert(p.lens, i, len(s))
	}
}

// addClient appends client to a posting list unless it is already its last entry: clients are
// indexed in config order, so lists stay sorted and free of duplicates.
func addClient(list []int, client int) []int {
	if n := len(list); n > 0 && list[n-1] == client {
		return list
	}
	return append(list, client)
}

// scanRule is one rule value that has to be tested against each model: a substring (a keyword
// or an unanchored literal regex) when re is nil, a regex otherwise.
type scanRule struct {
	client int
	substr string
	re     *regexp.Regexp
}

// Scan costs, in units of one substring test, that decide whether a table caches its results.
const (
	scanCostSubstr = 1
	scanCostRegex  = 8 // a small RE2 match costs several substring tests
	// cacheAboveCost: a cache lookup (hash, two atomic loads and a compare) costs about as much
	// as this many substring tests.
	cacheAboveCost = 4
)

// newModelIndex indexes the (compiled) rules of clients.
func newModelIndex(clients []*Client) modelIndex {
	ix := modelIndex{exact: make(map[string][]int)}
	cost := 0
	for i, c := range clients {
		for j := range c.Match {
			rule := &c.Match[j]
			for k, v := range rule.Values {
				switch rule.Type {
				case MatchExact:
					ix.exact[v] = addClient(ix.exact[v], i)
				case MatchKeyword:
					ix.scan = append(ix.scan, scanRule{client: i, substr: v})
					cost += scanCostSubstr
				case MatchRegex:
					kind, lits := rule.literals[k].kind, rule.literals[k].strs
					for _, s := range lits {
						switch kind {
						case litExact:
							ix.exact[s] = addClient(ix.exact[s], i)
						case litPrefix:
							ix.prefix.add(s, i)
						case litSuffix:
							ix.suffix.add(s, i)
						case litSubstr:
							ix.scan = append(ix.scan, scanRule{client: i, substr: s})
							cost += scanCostSubstr
						}
					}
					if kind == litNone {
						ix.scan = append(ix.scan, scanRule{client: i, re: rule.regexps[k]})
						cost += scanCostRegex
					}
				}
			}
		}
	}
	// The scan is in rule order within a client; candidates are found per client, so keep it in
	// client order (it already is: clients are walked in order).
	cost += len(ix.prefix.lens) + len(ix.suffix.lens)
	if cost > cacheAboveCost {
		ix.cache = newCandCache()
	}
	return ix
}

// lookup appends to dst the clients serving model, in config order, without the cache.
func (ix *modelIndex) lookup(model string, dst []int) []int {
	n := len(dst)
	sources := 0
	if list, ok := ix.exact[model]; ok {
		dst = append(dst, list...)
		sources++
	}
	for _, l := range ix.prefix.lens {
		if l > len(model) {
			break
		}
		if list, ok := ix.prefix.by[model[:l]]; ok {
			dst = append(dst, list...)
			sources++
		}
	}
	for _, l := range ix.suffix.lens {
		if l > len(model) {
			break
		}
		if list, ok := ix.suffix.by[model[len(model)-l:]]; ok {
			dst = append(dst, list...)
			sources++
		}
	}
	last := -1 // the client the scan last found: its other rules need no test
	for i := range ix.scan {
		r := &ix.scan[i]
		if r.client == last {
			continue
		}
		var ok bool
		if r.re == nil {
			ok = strings.Contains(model, r.substr)
		} else {
			ok = r.re.MatchString(model)
		}
		if ok {
			if last < 0 {
				sources++
			}
			dst = append(dst, r.client)
			last = r.client
		}
	}
	if sources > 1 {
		// Each source is in config order; merge them and drop clients found twice.
		slices.Sort(dst[n:])
		dst = dst[:n+len(slices.Compact(dst[n:]))]
	}
	return dst
}

// litKind says how the strings a regex matches whole relate to the model names it matches.
type litKind uint8

const (
	litNone   litKind = iota // not a few fixed strings: the regex has to run
	litExact                 // ^L$: the model is one of the strings
	litPrefix                // ^L: the model starts with one
	litSuffix                // L$: the model ends with one
	litSubstr                // L: the model contains one
)

// maxLiterals bounds how many strings a regex may expand to and still be indexed.
const maxLiterals = 64

// analyzeRegex reports whether expr, compiled as regexp.Compile does, matches exactly the models
// that equal, start with, end with or contain one of a few fixed strings, and which. Anything it
// is not sure of is litNone, which is always correct: the regex then runs.
func analyzeRegex(expr string) (litKind, []string) {
	re, err := syntax.Parse(expr, syntax.Perl) // regexp.Compile's flags
	if err != nil {
		return litNone, nil
	}
	re = re.Simplify()
	subs := []*syntax.Regexp{re}
	if re.Op == syntax.OpConcat {
		subs = re.Sub
	}
	// Without the m flag, ^ and $ are OpBeginText and OpEndText: the ends of the model.
	start := len(subs) > 0 && subs[0].Op == syntax.OpBeginText
	if start {
		subs = subs[1:]
	}
	end := len(subs) > 0 && subs[len(subs)-1].Op == syntax.OpEndText
	if end {
		subs = subs[:len(subs)-1]
	}
	// At an unanchored end, x* or x? may match nothing, so it decides nothing (^claude-.* is
	// ^claude-, .*mini is mini), and x+ is x (^gpt-4+ is ^gpt-4).
	if !start {
		for len(subs) > 0 && optional(subs[0]) {
			subs = subs[1:]
		}
		if len(subs) > 0 && subs[0].Op == syntax.OpPlus {
			subs = append([]*syntax.Regexp{subs[0].Sub[0]}, subs[1:]...)
		}
	}
	if !end {
		for len(subs) > 0 && optional(subs[len(subs)-1]) {
			subs = subs[:len(subs)-1]
		}
		if n := len(subs); n > 0 && subs[n-1].Op == syntax.OpPlus {
			subs = append(subs[:n-1:n-1], subs[n-1].Sub[0])
		}
	}
	lits, ok := concatLiterals(subs)
	if !ok {
		return litNone, nil
	}
	switch {
	case start && end:
		return litExact, lits
	case start:
		return litPrefix, lits
	case end:
		return litSuffix, lits
	}
	return litSubstr, lits
}

// optional reports whether re is x* or x?, which can match the empty string.
func optional(re *syntax.Regexp) bool {
	return re.Op == syntax.OpStar || re.Op == syntax.OpQuest
}

// literals returns the strings re matches whole when they are at most maxLiterals, all of them
// valid UTF-8 without U+FFFD: the regexp engine reads an invalid byte of a model as U+FFFD, so a
// regex holding that rune matches models that no fixed string does.
func literals(re *syntax.Regexp) ([]string, bool) {
	switch re.Op {
	case syntax.OpEmptyMatch:
		return []string{""}, true
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 || !plainRunes(re.Rune) {
			return nil, false
		}
		return []string{string(re.Rune)}, true
	case syntax.OpCharClass:
		n := 0
		for i := 0; i < len(re.Rune); i += 2 {
			n += int(re.Rune[i+1]-re.Rune[i]) + 1
			if n > maxLiterals {
				return nil, false
			}
		}
		out := make([]string, 0, n)
		for i := 0; i < len(re.Rune); i += 2 {
			for r := re.Rune[i]; r <= re.Rune[i+1]; r++ {
				if !plainRunes([]rune{r}) {
					return nil, false
				}
				out = append(out, string(r))
			}
		}
		return out, true
	case syntax.OpCapture:
		return literals(re.Sub[0])
	case syntax.OpConcat:
		return concatLiterals(re.Sub)
	case syntax.OpQuest:
		sub, ok := literals(re.Sub[0])
		if !ok || len(sub)+1 > maxLiterals {
			return nil, false
		}
		return append([]string{""}, sub...), true
	case syntax.OpAlternate:
		var out []string
		for _, s := range re.Sub {
			sub, ok := literals(s)
			if !ok || len(out)+len(sub) > maxLiterals {
				return nil, false
			}
			out = append(out, sub...)
		}
		return out, true
	}
	return nil, false
}

// concatLiterals returns the strings a concatenation of subs matches whole: every combination
// of what each matches, when they are few.
func concatLiterals(subs []*syntax.Regexp) ([]string, bool) {
	out := []string{""}
	for _, s := range subs {
		sub, ok := literals(s)
		if !ok || len(out)*len(sub) > maxLiterals {
			return nil, false
		}
		next := make([]string, 0, len(out)*len(sub))
		for _, a := range out {
			for _, b := range sub {
				next = append(next, a+b)
			}
		}
		out = next
	}
	slices.Sort(out)
	return slices.Compact(out), true
}

// plainRunes reports whether every rune of rs is valid and not U+FFFD.
func plainRunes(rs []rune) bool {
	for _, r := range rs {
		if r == utf8.RuneError || !utf8.ValidRune(r) {
			return false
		}
	}
	return true
}
