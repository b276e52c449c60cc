package router

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// linearCandidates is Table.Candidates as it was before the index: every rule of every client,
// evaluated in config order, each regex run by package regexp. The index, the cache and the
// literal forms of regexes must give exactly its answers.
func linearCandidates(t *Table, model string, dst []int) []int {
	for i, c := range t.Clients {
		if refMatchesModel(c, model) {
			dst = append(dst, i)
		}
	}
	return dst
}

// refRegexps holds the reference's compiled regexes by expression.
var refRegexps sync.Map

// refMatchesModel is Client.MatchesModel as it was before regexes had literal forms.
func refMatchesModel(c *Client, model string) bool {
	for _, m := range c.Match {
		for _, v := range m.Values {
			switch m.Type {
			case MatchKeyword:
				if strings.Contains(model, v) {
					return true
				}
			case MatchExact:
				if model == v {
					return true
				}
			case MatchRegex:
				re, ok := refRegexps.Load(v)
				if !ok {
					re, _ = refRegexps.LoadOrStore(v, regexp.MustCompile(v))
				}
				if re.(*regexp.Regexp).MatchString(model) {
					return true
				}
			}
		}
	}
	return false
}

func TestAnalyzeRegex(t *testing.T) {
	tests := []struct {
		expr string
		kind litKind
		lits []string
	}{
		{`^model-7$`, litExact, []string{"model-7"}},
		{`\Amodel-7\z`, litExact, []string{"model-7"}},
		{`^(gpt-4o|gpt-4o-mini)$`, litExact, []string{"gpt-4o", "gpt-4o-mini"}},
		{`^gpt-4o(-mini)?$`, litExact, []string{"gpt-4o", "gpt-4o-mini"}},
		{`^model-[1-3]$`, litExact, []string{"model-1", "model-2", "model-3"}},
		{`^gpt\.4$`, litExact, []string{"gpt.4"}},
		{`^$`, litExact, []string{""}},
		{`^claude-`, litPrefix, []string{"claude-"}},
		{`^claude-.*`, litPrefix, []string{"claude-"}},
		{`^claude-.*?`, litPrefix, []string{"claude-"}},
		{`^`, litPrefix, []string{""}},
		{`-instruct$`, litSuffix, []string{"-instruct"}},
		{`.*-instruct$`, litSuffix, []string{"-instruct"}},
		{`gpt`, litSubstr, []string{"gpt"}},
		{`.*gpt.*`, litSubstr, []string{"gpt"}},
		{`(gpt|o1)`, litSubstr, []string{"gpt", "o1"}},
		{``, litSubstr, []string{""}},
		{`^.*$`, litNone, nil},             // . is not a newline: "a\nb" does not match
		{`^claude-.*$`, litNone, nil},      // likewise
		{`(?i)^gpt-4$`, litNone, nil},      // case folding
		{`(?m)^gpt$`, litNone, nil},        // line anchors
		{`^gpt-\d+$`, litNone, nil},        // unbounded
		{`^model-[0-9]{3}$`, litNone, nil}, // 1,000 names: more than maxLiterals
		{`\bgpt\b`, litNone, nil},          // word boundaries
		{`^a$|^b$`, litNone, nil},          // anchors inside an alternation
		{"^\uFFFD$", litNone, nil},         // matches an invalid byte too
		{`^[^a]$`, litNone, nil},           // a huge class
		{`^(^a)$`, litNone, nil},           // a nested anchor
		{`^gpt-4+`, litPrefix, []string{"gpt-4"}},
		{`a+b+`, litSubstr, []string{"ab"}},
		{`^a+b+$`, litNone, nil},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			kind, lits := analyzeRegex(tt.expr)
			if kind != tt.kind || !slices.Equal(lits, tt.lits) {
				t.Errorf("analyzeRegex(%q) = %v %q, want %v %q", tt.expr, kind, lits, tt.kind, tt.lits)
			}
		})
	}
}

func TestCandidatesIndexed(t *testing.T) {
	tb := mustTable(t,
		client("exact", 1, exact("gpt-4o", "model-7")),
		client("anchored", 1, regex(`^model-7$`, `^gpt-4o(-mini)?$`)),
		client("prefix", 1, regex(`^claude-.*`)),
		client("suffix", 1, regex(`-instruct$`)),
		client("substr", 1, regex(`mini`)),
		client("kw", 1, keyword("claude")),
		client("re", 1, regex(`^model-\d+$`)),
		client("lines", 1, regex(`(?m)^second$`)),
		client("all", 0, exact("x"), regex(`^.*$`)),
		client("dup", 1, exact("model-7"), regex(`^model-7$`), keyword("model")),
	)
	tests := []struct {
		model string
		want  []string
	}{
		{"model-7", []string{"exact", "anchored", "re", "all", "dup"}},
		{"model-77", []string{"re", "all", "dup"}},
		{"gpt-4o", []string{"exact", "anchored", "all"}},
		{"gpt-4o-mini", []string{"anchored", "substr", "all"}},
		{"claude-3-instruct", []string{"prefix", "suffix", "kw", "all"}},
		{"my-claude", []string{"kw", "all"}},
		{"first\nsecond", []string{"lines"}},
		{"x", []string{"all"}},
		{"model-7\n", []string{"dup"}},
		{"", []string{"all"}},
	}
	for round := range 3 { // the first round fills the cache, the next ones read it
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%d/%q", round, tt.model), func(t *testing.T) {
				got := tb.Candidates(tt.model, []int{99})
				if got[0] != 99 {
					t.Fatalf("Candidates overwrote dst: %v", got)
				}
				if n := names(tb, got[1:]); !slices.Equal(n, tt.want) {
					t.Errorf("Candidates(%q) = %v, want %v", tt.model, n, tt.want)
				}
				if want := linearCandidates(tb, tt.model, nil); !slices.Equal(got[1:], want) {
					t.Errorf("Candidates(%q) = %v, the linear scan %v", tt.model, got[1:], want)
				}
			})
		}
	}
}

// Pieces random rules and models are made of: few enough that they often meet.
var (
	randAtoms = []string{"a", "b", "ab", "-", "7", "\n", "A", "é", "\uFFFD", "\xff"}
	randRegex = []string{
		"a", "b", "ab", "-", "7", `\.`, ".", ".*", ".*?", "a?", "b*", "(a|b)", "[ab]", "[a-c7]", "(?i)a",
		`\b`, `\d`, "(ab)?", "é", "\uFFFD", "[^a]", "a{1,2}", "(?s).", `\n`, "$", "^",
	}
)

func randString(r *rand.Rand, atoms []string, maxLen int) string {
	var sb strings.Builder
	for range r.IntN(maxLen + 1) {
		sb.WriteString(atoms[r.IntN(len(atoms))])
	}
	return sb.String()
}

// randRule returns a rule of a random type with one to three random values.
func randRule(r *rand.Rand) MatchRule {
	n := 1 + r.IntN(3)
	vals := make([]string, n)
	typ := []MatchType{MatchExact, MatchKeyword, MatchRegex, MatchRegex}[r.IntN(4)]
	for i := range vals {
		switch typ {
		case MatchRegex:
			s := randString(r, randRegex, 4)
			if r.IntN(2) == 0 {
				s = "^" + s
			}
			if r.IntN(2) == 0 {
				s += "$"
			}
			if r.IntN(8) == 0 {
				s = "(?m)" + s
			}
			if _, err := regexp.Compile(s); err != nil {
				s = "a"
			}
			vals[i] = s
		default:
			vals[i] = randString(r, randAtoms, 3)
		}
	}
	return MatchRule{Type: typ, Values: vals}
}

// TestCandidatesMatchLinearScan compares the index and its cache with the linear scan over
// random configs and random model names, each name asked for several times so that answers come
// from the cache too, and enough names to make the cache evict.
func TestCandidatesMatchLinearScan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	configs, floodEvery := 200, 20
	if raceEnabled { // nothing here is concurrent: TestCandidatesConcurrent is the race test
		configs, floodEvery = 20, 0
	}
	for cfg := range configs {
		clients := make([]*Client, 1+r.IntN(40))
		for i := range clients {
			rules := make([]MatchRule, 1+r.IntN(3))
			for j := range rules {
				rules[j] = randRule(r)
			}
			clients[i] = client("c"+strconv.Itoa(i), 1, rules...)
		}
		tb := mustTable(t, clients...)
		models := make([]string, 50)
		for i := range models {
			models[i] = randString(r, randAtoms, 6)
		}
		if floodEvery > 0 && cfg%floodEvery == 0 { // enough distinct names to fill every set of the cache
			for i := range 3 * cacheSlots {
				models = append(models, "n"+strconv.Itoa(i))
			}
		}
		var got, want []int
		for range 3 {
			for _, m := range models {
				got = tb.Candidates(m, got[:0])
				want = linearCandidates(tb, m, want[:0])
				if !slices.Equal(got, want) {
					t.Fatalf("config %d: Candidates(%q) = %v, the linear scan %v; rules: %s", cfg, m, got, want, describe(tb))
				}
				for _, i := range got {
					if !tb.Clients[i].MatchesModel(m) {
						t.Fatalf("config %d: client %d is a candidate for %q, but MatchesModel says no; rules: %s", cfg, i, m, describe(tb))
					}
				}
			}
		}
	}
}

func describe(tb *Table) string {
	var sb strings.Builder
	for i, c := range tb.Clients {
		fmt.Fprintf(&sb, "\n  %d:", i)
		for _, m := range c.Match {
			fmt.Fprintf(&sb, " %s %q", m.Type, m.Values)
		}
	}
	return sb.String()
}

// FuzzCandidates checks one regex rule, indexed or not, against the regexp itself.
func FuzzCandidates(f *testing.F) {
	for _, s := range [][2]string{
		{`^model-7$`, "model-7"}, {`^claude-.*`, "claude-\n"}, {`-instruct$`, "x-instruct\n"},
		{`^(a|b)c?$`, "bc"}, {`^.*$`, "a\nb"}, {"^\uFFFD$", "\xff"}, {`(?i)^A$`, "a"},
		{`^[a-c]x$`, "bx"}, {`mini`, "4o-mini"}, {``, ""}, {`é$`, "e\u0301"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, expr, model string) {
		re, err := regexp.Compile(expr)
		if err != nil {
			return
		}
		tb, err := NewTable([]*Client{client("c", 1, regex(expr))})
		if err != nil {
			t.Fatal(err)
		}
		want := re.MatchString(model)
		if got := tb.Clients[0].MatchesModel(model); got != want {
			kind, lits := analyzeRegex(expr)
			t.Fatalf("regex %q, model %q: MatchesModel %v, regexp says %v (analysed as %v %q)", expr, model, got, want, kind, lits)
		}
		for range 2 { // computed, then cached
			if got := len(tb.Candidates(model, nil)) == 1; got != want {
				kind, lits := analyzeRegex(expr)
				t.Fatalf("regex %q, model %q: candidate %v, regexp says %v (analysed as %v %q)", expr, model, got, want, kind, lits)
			}
		}
	})
}

// TestCandidatesConcurrent routes from many goroutines at once, hot names and a stream of new
// ones that keep the cache evicting, and checks every answer. Run it with -race.
func TestCandidatesConcurrent(t *testing.T) {
	const clients = 200
	tb := mustTable(t, benchClients("mixed", clients)...)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			var got, want []int
			for i := range 2000 {
				var m string
				switch i % 3 {
				case 0:
					m = "model-" + strconv.Itoa(r.IntN(clients)) // served, often by a scanned rule
				case 1:
					m = "model-" + strconv.Itoa(r.IntN(clients)) + "-mini"
				default:
					m = "kw-" + strconv.Itoa(r.IntN(clients)) + "/x" + strconv.Itoa(g*10000+i) // new each time
				}
				got = tb.Candidates(m, got[:0])
				want = linearCandidates(tb, m, want[:0])
				if !slices.Equal(got, want) {
					t.Errorf("Candidates(%q) = %v, the linear scan %v", m, got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// cacheStats counts a cache's entries and checks its accounting.
func cacheStats(t *testing.T, c *candCache) (entries int) {
	t.Helper()
	var size int64
	for i := range c.slots {
		if e := c.slots[i].Load(); e != nil {
			entries++
			size += e.size
		}
	}
	if got := c.bytes.Load(); got != size {
		t.Errorf("cache accounts %d bytes, its entries hold %d", got, size)
	}
	if size > cacheMaxBytes {
		t.Errorf("cache holds %d bytes, more than its bound %d", size, cacheMaxBytes)
	}
	return entries
}

// TestCandidatesCacheBound floods the cache with names asked for once, as a hostile caller
// would: it stays within its bounds, and a model in use between the flood's names stays cached.
func TestCandidatesCacheBound(t *testing.T) {
	tb := mustTable(t, benchClients("mixed", 100)...)
	c := tb.index.cache
	if c == nil {
		t.Fatal("a table with scanned rules has no cache")
	}
	hot := "model-99-mini"
	for i := range 20 * cacheSlots {
		tb.Candidates(hot, nil)
		tb.Candidates("flood-"+strconv.Itoa(i), nil)
	}
	if n := cacheStats(t, c); n != 1 {
		t.Errorf("%d entries after a flood of names asked for once: want the model in use only", n)
	}
	for i := range 3 * cacheSlots { // names asked for twice are stored, within the slots
		tb.Candidates(hot, nil)
		tb.Candidates("twice-"+strconv.Itoa(i), nil)
		tb.Candidates("twice-"+strconv.Itoa(i), nil)
	}
	if n := cacheStats(t, c); n < cacheSlots/2 || n > cacheSlots {
		t.Errorf("%d entries after %d names asked for twice: want between %d and %d", n, 3*cacheSlots, cacheSlots/2, cacheSlots)
	}
	if e, _ := c.get(hot); e == nil || !slices.Equal(e.cands, []int{99}) {
		t.Errorf("the model in use was evicted by names asked for once: %v", e)
	}
	long := strings.Repeat("m", cacheMaxModel+1)
	tb.Candidates(long, nil)
	if e, _ := c.get(long); e != nil {
		t.Errorf("a %d-byte name was cached", len(long))
	}

	// Every client serves every model: 1,000-client lists fill the byte budget long before
	// the slots.
	all := make([]*Client, 1000)
	for i := range all {
		all[i] = client("c"+strconv.Itoa(i), 1, keyword(""))
	}
	tb = mustTable(t, all...)
	for i := range 2 * cacheSlots {
		for range 2 { // a name is cached when asked for twice
			if got := tb.Candidates("m"+strconv.Itoa(i), nil); len(got) != len(all) {
				t.Fatalf("%d candidates, want %d", len(got), len(all))
			}
		}
	}
	if n := cacheStats(t, tb.index.cache); n == 0 || n >= cacheSlots {
		t.Errorf("%d entries of 1,000 candidates each: want some, bounded by bytes", n)
	}
}

func TestCandidatesCacheOnlyWhenScanning(t *testing.T) {
	tests := []struct {
		name    string
		clients []*Client
		cached  bool
	}{
		{"exact", benchClients("exact", 1000), false},
		{"anchored literal regexes", benchClients("regex", 1000), false},
		{"one keyword", []*Client{client("a", 1, keyword("gpt"))}, false},
		{"one regex", []*Client{client("a", 1, regex(`^gpt-\d+$`))}, true},
		{"mixed", benchClients("mixed", 8), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := mustTable(t, tt.clients...)
			if got := tb.index.cache != nil; got != tt.cached {
				t.Errorf("cached = %v, want %v", got, tt.cached)
			}
		})
	}
}
