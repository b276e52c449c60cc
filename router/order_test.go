package router

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// seq returns a source yielding vals in turn, failing the test if it runs dry.
func seq(t *testing.T, vals ...float64) func() float64 {
	return func() float64 {
		if len(vals) == 0 {
			t.Fatalf("random source drawn more often than expected")
		}
		v := vals[0]
		vals = vals[1:]
		return v
	}
}

func seeded(seed uint64) func() float64 {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)).Float64
}

func all(tb *Table) []int {
	out := make([]int, len(tb.Clients))
	for i := range out {
		out[i] = i
	}
	return out
}

func TestOrderRandom(t *testing.T) {
	tests := []struct {
		name    string
		clients []*Client
		rnd     []float64 // one draw per weighted client, in config order
		want    []string
	}{
		{
			name:    "no weights is config order and draws nothing",
			clients: []*Client{client("c", 0), client("a", 0), client("b", 0)},
			want:    []string{"c", "a", "b"},
		},
		{
			name:    "zero weights last in config order",
			clients: []*Client{client("z1", 0), client("w1", 1), client("z2", 0), client("w2", 1)},
			rnd:     []float64{0.2, 0.9},
			want:    []string{"w2", "w1", "z1", "z2"},
		},
		{
			name:    "weighted client drawing zero still beats zero weight",
			clients: []*Client{client("z", 0), client("w", 5)},
			rnd:     []float64{0},
			want:    []string{"w", "z"},
		},
		{
			// keys: 0.5^(1/1)=0.5, 0.5^(1/4)≈0.84, 0.1^(1/2)≈0.32
			name:    "key is U to the 1/w",
			clients: []*Client{client("p1", 1), client("p4", 4), client("p2", 2)},
			rnd:     []float64{0.5, 0.5, 0.1},
			want:    []string{"p4", "p1", "p2"},
		},
		{
			name:    "equal keys keep config order",
			clients: []*Client{client("a", 3), client("b", 3)},
			rnd:     []float64{0.5, 0.5},
			want:    []string{"a", "b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := mustTable(t, tt.clients...)
			for _, s := range []Strategy{"", StrategyRandom} {
				cands := all(tb)
				Order(s, tb, cands, nil, nil, seq(t, tt.rnd...))
				if got := names(tb, cands); !slices.Equal(got, tt.want) {
					t.Errorf("strategy %q: order = %v, want %v", s, got, tt.want)
				}
			}
		})
	}
}

// TestOrderRandomShares checks the defining property of the sampling: the chance of being tried
// first is proportional to priority, and the second place follows sampling without replacement.
func TestOrderRandomShares(t *testing.T) {
	tb := mustTable(t, client("p1", 1), client("z", 0), client("p2", 2), client("p3", 3), client("p4", 4))
	const draws = 20000
	rnd := seeded(1)
	first := make([]int, len(tb.Clients))
	var p4ThenP3, p4First int
	cands := make([]int, 0, len(tb.Clients))
	for range draws {
		cands = append(cands[:0], all(tb)...)
		Order(StrategyRandom, tb, cands, nil, nil, rnd)
		first[cands[0]]++
		if cands[len(cands)-1] != 1 {
			t.Fatalf("zero-weight client not last: %v", names(tb, cands))
		}
		if cands[0] == 4 {
			p4First++
			if cands[1] == 3 {
				p4ThenP3++
			}
		}
	}
	for i, c := range tb.Clients {
		want := float64(c.Priority) / 10
		if got := float64(first[i]) / draws; math.Abs(got-want) > 0.02 {
			t.Errorf("%s first in %.3f of draws, want %.3f", c.Name, got, want)
		}
	}
	// Given p4 went first, p3 is second with probability 3/(10-4).
	if got, want := float64(p4ThenP3)/float64(p4First), 0.5; math.Abs(got-want) > 0.03 {
		t.Errorf("p3 second after p4 in %.3f of draws, want %.3f", got, want)
	}
}

func TestOrderDeterministic(t *testing.T) {
	tb := mustTable(t, client("a", 1), client("b", 2), client("c", 3), client("d", 4))
	keys := []Key{{Text: "Explain the rendezvous hashing algorithm in detail", Weight: 52}}

	// Same keys: same order, every time, whatever the random source says.
	var want []int
	for seed := range uint64(20) {
		cands := all(tb)
		Order(StrategyDeterministic, tb, cands, keys, nil, seeded(seed))
		if want == nil {
			want = cands
		} else if !slices.Equal(cands, want) {
			t.Fatalf("order changed between calls: %v then %v", names(tb, want), names(tb, cands))
		}
	}

	// The order does not depend on the order candidates come in: the winner is decided by
	// score alone and the rest by votes, then name.
	rev := all(tb)
	slices.Reverse(rev)
	Order(StrategyDeterministic, tb, rev, keys, nil, nil)
	if !slices.Equal(rev, want) {
		t.Errorf("reversed candidates ordered %v, want %v", names(tb, rev), names(tb, want))
	}
}

// Golden values of the affinity hash, computed once; see TestOrderDeterministicGolden.
const goldenHash = 0xe980fb2ad5eb7c1

var (
	goldenHello  = []string{"a", "b", "c", "d"}
	goldenFrance = []string{"d", "a", "b", "c"}
)

// TestOrderDeterministicGolden pins the hash: affinity must survive restarts and upgrades, so a
// change of the hash function (which would move every user to another backend) must be deliberate.
func TestOrderDeterministicGolden(t *testing.T) {
	if got, want := hashName(hashKey("hello"), "primary"), uint64(goldenHash); got != want {
		t.Errorf("hash(hello, primary) = %#x, want %#x", got, want)
	}
	if hashName(hashKey("ab"), "c") == hashName(hashKey("a"), "bc") {
		t.Errorf("key/name boundary not part of the hash")
	}
	tb := mustTable(t, client("a", 1), client("b", 2), client("c", 3), client("d", 4))
	tests := []struct {
		key  string
		want []string
	}{
		{"hello", goldenHello},
		{"What is the capital of France?", goldenFrance},
	}
	for _, tt := range tests {
		cands := all(tb)
		Order(StrategyDeterministic, tb, cands, []Key{{tt.key, len(tt.key)}}, nil, nil)
		if got := names(tb, cands); !slices.Equal(got, tt.want) {
			t.Errorf("key %q: order = %v, want %v", tt.key, got, tt.want)
		}
	}
}

// TestOrderDeterministicShares checks that over many distinct prompts each client wins in
// proportion to its priority, and that priority 0 never wins against a weighted client.
func TestOrderDeterministicShares(t *testing.T) {
	tb := mustTable(t, client("p1", 1), client("z", 0), client("p2", 2), client("p3", 3), client("p4", 4))
	const n = 20000
	rnd := rand.New(rand.NewPCG(7, 7))
	first := make([]int, len(tb.Clients))
	cands := make([]int, 0, len(tb.Clients))
	for range n {
		key := fmt.Sprintf("user prompt %x %x", rnd.Uint64(), rnd.Uint32())
		cands = append(cands[:0], all(tb)...)
		Order(StrategyDeterministic, tb, cands, []Key{{key, len(key)}}, nil, nil)
		first[cands[0]]++
	}
	for i, c := range tb.Clients {
		want := float64(c.Priority) / 10
		if got := float64(first[i]) / n; math.Abs(got-want) > 0.02 {
			t.Errorf("%s first for %.3f of keys, want %.3f", c.Name, got, want)
		}
	}
}

func TestOrderDeterministicVotes(t *testing.T) {
	tb := mustTable(t, client("a", 1), client("b", 1), client("c", 1))
	// Find keys whose single vote goes to a and to c.
	winner := func(text string) int {
		cands := all(tb)
		Order(StrategyDeterministic, tb, cands, []Key{{text, 1}}, nil, nil)
		return cands[0]
	}
	var forA, forC string
	for i := 0; forA == "" || forC == ""; i++ {
		k := fmt.Sprintf("key-%d", i)
		switch winner(k) {
		case 0:
			forA = k
		case 2:
			forC = k
		}
	}
	tests := []struct {
		name string
		keys []Key
		want []string
	}{
		{"heavier key wins", []Key{{forA, 10}, {forC, 90}}, []string{"c", "a", "b"}},
		{"heavier key wins, reversed", []Key{{forA, 90}, {forC, 10}}, []string{"a", "c", "b"}},
		{"votes add up", []Key{{forA, 30}, {forC, 50}, {forA, 30}}, []string{"a", "c", "b"}},
		{"equal votes by name", []Key{{forC, 5}, {forA, 5}}, []string{"a", "c", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cands := all(tb)
			Order(StrategyDeterministic, tb, cands, tt.keys, nil, nil)
			if got := names(tb, cands); !slices.Equal(got, tt.want) {
				t.Errorf("order = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOrderDeterministicEdges(t *testing.T) {
	t.Run("no priorities: the first candidate takes every vote, the rest by name", func(t *testing.T) {
		tb := mustTable(t, client("c", 0), client("a", 0), client("b", 0))
		for _, k := range []string{"x", "y", "a longer prompt"} {
			cands := all(tb)
			Order(StrategyDeterministic, tb, cands, []Key{{k, len(k)}}, nil, nil)
			if got, want := names(tb, cands), []string{"c", "a", "b"}; !slices.Equal(got, want) {
				t.Errorf("key %q: order = %v, want %v", k, got, want)
			}
		}
	})
	t.Run("priority 0 never beats a weighted client", func(t *testing.T) {
		tb := mustTable(t, client("z", 0), client("w", 1))
		for i := range 200 {
			k := fmt.Sprint(i)
			cands := all(tb)
			Order(StrategyDeterministic, tb, cands, []Key{{k, 1}}, nil, nil)
			if cands[0] != 1 {
				t.Fatalf("key %q: zero-priority client won", k)
			}
		}
	})
	t.Run("no keys takes the random path", func(t *testing.T) {
		tb := mustTable(t, client("a", 1), client("b", 1))
		cands := all(tb)
		Order(StrategyDeterministic, tb, cands, nil, nil, seq(t, 0.1, 0.9))
		if got, want := names(tb, cands), []string{"b", "a"}; !slices.Equal(got, want) {
			t.Errorf("order = %v, want %v", got, want)
		}
	})
}

func TestOrderLeastConnections(t *testing.T) {
	tests := []struct {
		name     string
		clients  []*Client
		inflight []int64 // by client index; nil means a nil func
		want     []string
	}{
		{
			name:    "nil counts: config order",
			clients: []*Client{client("c", 1), client("a", 1), client("b", 1)},
			want:    []string{"c", "a", "b"},
		},
		{
			name:     "fewest in flight first",
			clients:  []*Client{client("a", 1), client("b", 1), client("c", 1)},
			inflight: []int64{5, 0, 2},
			want:     []string{"b", "c", "a"},
		},
		{
			name:     "divided by priority",
			clients:  []*Client{client("small", 1), client("big", 10)},
			inflight: []int64{3, 20}, // 3/1 > 20/10
			want:     []string{"big", "small"},
		},
		{
			name:     "priority 0 divides by 1",
			clients:  []*Client{client("zero", 0), client("one", 1)},
			inflight: []int64{2, 3},
			want:     []string{"zero", "one"},
		},
		{
			name:     "ties in config order",
			clients:  []*Client{client("c", 2), client("a", 1), client("b", 2)},
			inflight: []int64{4, 2, 4},
			want:     []string{"c", "a", "b"},
		},
		{
			name:     "negative counts as zero",
			clients:  []*Client{client("a", 1), client("b", 1)},
			inflight: []int64{0, -3},
			want:     []string{"a", "b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := mustTable(t, tt.clients...)
			var inflight func(int) int64
			if tt.inflight != nil {
				inflight = func(i int) int64 { return tt.inflight[i] }
			}
			cands := all(tb)
			Order(StrategyLeastConnections, tb, cands, nil, inflight, seq(t))
			if got := names(tb, cands); !slices.Equal(got, tt.want) {
				t.Errorf("order = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestOrderMany covers the heap path beyond stackRanks candidates.
func TestOrderMany(t *testing.T) {
	var clients []*Client
	for i := range 3 * stackRanks {
		clients = append(clients, client(fmt.Sprintf("c%02d", i), i%3))
	}
	tb := mustTable(t, clients...)
	for _, s := range []Strategy{StrategyRandom, StrategyDeterministic, StrategyLeastConnections} {
		cands := all(tb)
		Order(s, tb, cands, []Key{{"k", 1}}, func(i int) int64 { return int64(i % 5) }, seeded(3))
		sorted := slices.Clone(cands)
		slices.Sort(sorted)
		if !slices.Equal(sorted, all(tb)) {
			t.Errorf("%s: not a permutation: %v", s, cands)
		}
	}
}

func BenchmarkOrder(b *testing.B) {
	tb := mustTable(b, client("alpha", 1), client("bravo", 2), client("charlie", 3), client("delta", 0))
	keys := []Key{{"You are a helpful assistant.", 28}, {"Summarise the following text in three bullet points", 480}}
	counts := []int64{3, 1, 4, 1}
	inflight := func(i int) int64 { return counts[i] }
	for _, s := range []Strategy{StrategyRandom, StrategyDeterministic, StrategyLeastConnections} {
		b.Run(string(s), func(b *testing.B) {
			cands := make([]int, 0, 4)
			b.ReportAllocs()
			for b.Loop() {
				cands = append(cands[:0], 0, 1, 2, 3)
				Order(s, tb, cands, keys, inflight, rand.Float64)
			}
		})
	}
}
