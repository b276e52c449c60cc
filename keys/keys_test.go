package keys

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseBudget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Budget
		err  string
	}{
		{"50M tokens monthly", Budget{Tokens: 50_000_000}, ""},
		{"1.5k tokens monthly", Budget{Tokens: 1500}, ""},
		{"200 usd monthly", Budget{USD: 200}, ""},
		{"12.5 USD monthly", Budget{USD: 12.5}, ""},
		{"1G tokens monthly", Budget{Tokens: 1e9}, ""},
		{"1.5 tokens monthly", Budget{}, "whole number"},
		{"50M tokens weekly", Budget{}, "monthly"},
		{"50M eur monthly", Budget{}, "unit"},
		{"-5 usd monthly", Budget{}, "positive"},
		{"0 usd monthly", Budget{}, "positive"},
		{"NaN usd monthly", Budget{}, "positive"},
		{"1e3 usd monthly", Budget{}, "positive"},
		{"50M tokens", Budget{}, "want"},
	} {
		got, err := ParseBudget(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseBudget(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseBudget(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		p, n string
		want bool
	}{
		{"gpt-4o*", "gpt-4o", true},
		{"gpt-4o*", "gpt-4o-mini", true},
		{"gpt-4o*", "gpt-4", false},
		{"*", "", true},
		{"", "", true},
		{"", "x", false},
		{"text-embedding-*", "text-embedding-3-small", true},
		{"meta-llama/*", "meta-llama/Llama-3", true},
		{"gpt-?o", "gpt-4o", true},
		{"gpt-?o", "gpt-40o", false},
		{"*mini", "gpt-4o-mini", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"exact", "exact", true},
		{"exact", "exactly", false},
	} {
		if got := Match(tc.p, tc.n); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.p, tc.n, got, tc.want)
		}
	}
}

func TestKeyCheck(t *testing.T) {
	h := FormatHash("sk-x")
	for _, tc := range []struct {
		k   Key
		err string
	}{
		{Key{Name: "a", Secret: "s"}, ""},
		{Key{Name: "a", Hash: h}, ""},
		{Key{Secret: "s"}, "without a name"},
		{Key{Name: "a b", Secret: "s"}, `key "a b": name`},
		{Key{Name: "a"}, "key a: secret or hash is required"},
		{Key{Name: "a", Secret: "s", Hash: h}, "key a: give secret or hash"},
		{Key{Name: "a", Hash: "sha256:xyz"}, "key a: hash"},
		{Key{Name: "a", Hash: "md5:" + h[7:]}, "key a: hash"},
		{Key{Name: "a", Secret: "s", RPM: -1}, "key a: rpm"},
		{Key{Name: "a", Secret: "s", TPM: -1}, "key a: tpm"},
		{Key{Name: "a", Secret: "s", Concurrency: -1}, "key a: concurrency"},
		{Key{Name: "a", Secret: "s", Budget: "5 apples monthly"}, "key a: budget"},
		{Key{Name: "a", Secret: "s", Expires: "tomorrow"}, "key a: expires"},
		{Key{Name: "a", Secret: "s", Models: []string{""}}, "key a: models"},
	} {
		err := tc.k.Check()
		if tc.err == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.k, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v: error %v, want %q", tc.k, err, tc.err)
		}
	}
}

func TestCompileAndLookup(t *testing.T) {
	env := map[string]string{"{env.A}": "sk-aaa"}
	expand := func(s string) string {
		if v, ok := env[s]; ok {
			return v
		}
		if strings.HasPrefix(s, "{env.") {
			return ""
		}
		return s
	}
	s, err := Compile([]*Key{
		{Name: "a", Secret: "{env.A}", Models: []string{"gpt-4o*"}, RPM: 5, Budget: "1M tokens monthly", Expires: "2027-01-01"},
		{Name: "b", Hash: FormatHash("sk-bbb")},
	}, []Price{{Model: "gpt-4o", Input: 2.5, Output: 10}, {Model: "gpt-*", Input: 1, Output: 1}}, expand)
	if err != nil {
		t.Fatal(err)
	}
	a := s.Lookup("sk-aaa")
	if a == nil || a.Name != "a" || a.Limits.RPM != 5 || a.Limits.BudgetTokens != 1e6 {
		t.Fatalf("Lookup(sk-aaa) = %+v", a)
	}
	if b := s.Lookup("sk-bbb"); b == nil || b.Name != "b" {
		t.Fatalf("Lookup(sk-bbb) = %+v", b)
	}
	for _, bad := range []string{"", "sk-aa", "sk-aaaa", "{env.A}", "sha256:" + FormatHash("sk-bbb")[7:]} {
		if e := s.Lookup(bad); e != nil {
			t.Errorf("Lookup(%q) = %s, want nil", bad, e.Name)
		}
	}
	if !a.Allows("gpt-4o-mini") || a.Allows("o3") || !s.Lookup("sk-bbb").Allows("anything") {
		t.Error("model allow-list wrong")
	}
	exp := time.Date(2027, 1, 1, 0, 0, 0, 0, time.Local)
	if a.Expired(exp.Add(-time.Nanosecond)) || !a.Expired(exp) {
		t.Error("expiry wrong")
	}
	if c, ok := s.Cost("gpt-4o", 1_000_000, 100_000); !ok || c != 3.5 {
		t.Errorf("Cost(gpt-4o) = %v, %v; want 3.5 (the exact name beats the earlier pattern)", c, ok)
	}
	if c, ok := s.Cost("gpt-4o-mini", 1_000_000, 0); !ok || c != 1 {
		t.Errorf("Cost(gpt-4o-mini) = %v, %v; want the pattern's 1", c, ok)
	}
	if _, ok := s.Cost("llama", 1, 1); ok {
		t.Error("Cost(llama) priced without a price")
	}

	for _, tc := range []struct {
		keys   []*Key
		prices []Price
		err    string
	}{
		{[]*Key{{Name: "a", Secret: "x"}, {Name: "a", Secret: "y"}}, nil, "key a: defined twice"},
		{[]*Key{{Name: "a", Secret: "x"}, {Name: "b", Secret: "x"}}, nil, "key b: same secret as key a"},
		{[]*Key{{Name: "a", Secret: "{env.UNSET}"}}, nil, "key a: secret \"{env.UNSET}\" expands to an empty key"},
		{[]*Key{{Name: "a", Secret: "x", Budget: "5 usd monthly"}}, nil, "key a: budget in usd needs prices"},
		{nil, []Price{{Model: "m", Input: -1}}, "price m"},
	} {
		if _, err := Compile(tc.keys, tc.prices, expand); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Compile: error %v, want %q", err, tc.err)
		}
	}
}

var t0 = time.Date(2026, 11, 15, 12, 0, 0, 0, time.Local)

func TestMemoryRPMSlidingWindow(t *testing.T) {
	m := NewMemory()
	lim := Limits{RPM: 3}
	at := func(d time.Duration) Decision { return m.Admit("k", lim, t0.Add(d)) }
	for i, want := range []int64{2, 1, 0} {
		d := at(time.Duration(i) * 10 * time.Second)
		if d.Verdict != Admitted || d.Requests.Remaining != want || d.Requests.Limit != 3 {
			t.Fatalf("call %d: %+v; want admitted with %d remaining (the current call counted)", i, d, want)
		}
	}
	// t=30s: 3 calls in (−30s, 30s]: refused until the first (t=0) leaves at t=60s.
	d := at(30 * time.Second)
	if d.Verdict != RateLimited || d.Dimension != DimRequests || d.RetryAfter != 30*time.Second {
		t.Fatalf("4th call: %+v; want rate limited, retry after 30s", d)
	}
	// A refused call counts against nothing: at 59.5s the wait is 0.5s, rounded up to 1s.
	d = at(59500 * time.Millisecond)
	if d.Verdict != RateLimited || d.RetryAfter != time.Second {
		t.Fatalf("at 59.5s: %+v; want retry after 1s", d)
	}
	// The window is (now-60s, now]: at exactly 60s the first call has left.
	if d = at(60 * time.Second); d.Verdict != Admitted || d.Requests.Remaining != 0 {
		t.Fatalf("at 60s: %+v; want admitted, 0 remaining", d)
	}
	if d = at(60 * time.Second); d.Verdict != RateLimited || d.RetryAfter != 10*time.Second {
		t.Fatalf("again at 60s: %+v; want retry after 10s (the t=10s call leaves at 70s)", d)
	}
	// A lowered limit applies at once to the same counters.
	if d = m.Admit("k", Limits{RPM: 1}, t0.Add(71*time.Second)); d.Verdict != RateLimited || d.RetryAfter != 49*time.Second {
		t.Fatalf("limit lowered to 1: %+v; want retry after 49s (until the t=60s call leaves)", d)
	}
}

func TestMemoryTPM(t *testing.T) {
	m := NewMemory()
	lim := Limits{TPM: 100}
	if d := m.Admit("k", lim, t0); d.Verdict != Admitted || d.Tokens.Remaining != 100 {
		t.Fatalf("%+v", d)
	}
	m.Settle("k", "", 60, 0, t0.Add(time.Second))
	m.Settle("k", "", 50, 0, t0.Add(5*time.Second))
	// 110 settled: refused until the 60 leave at 61s (50 < 100 afterwards).
	d := m.Admit("k", lim, t0.Add(10*time.Second))
	if d.Verdict != RateLimited || d.Dimension != DimTokens || d.RetryAfter != 51*time.Second || d.Tokens.Remaining != 0 {
		t.Fatalf("%+v; want tokens refused, retry after 51s", d)
	}
	if d = m.Admit("k", lim, t0.Add(61*time.Second)); d.Verdict != Admitted || d.Tokens.Remaining != 50 {
		t.Fatalf("%+v; want admitted with 50 tokens remaining", d)
	}
}

func TestMemoryConcurrencyAndBudget(t *testing.T) {
	m := NewMemory()
	lim := Limits{Concurrency: 2, BudgetTokens: 1000}
	for i := 0; i < 2; i++ {
		if d := m.Admit("k", lim, t0); d.Verdict != Admitted {
			t.Fatalf("call %d: %+v", i, d)
		}
	}
	if d := m.Admit("k", lim, t0); d.Verdict != RateLimited || d.Dimension != DimConcurrency || d.RetryAfter != time.Second {
		t.Fatalf("third open call: %+v", d)
	}
	m.Settle("k", "", 600, 0.5, t0)
	if d := m.Admit("k", lim, t0); d.Verdict != Admitted {
		t.Fatalf("after a release: %+v", d)
	}
	m.Settle("k", "", 400, 0.5, t0)
	m.Settle("k", "", 0, 0, t0)
	if got := m.MonthTotals("k", t0); got.Tokens != 1000 || got.USD != 1 {
		t.Fatalf("totals %+v", got)
	}
	if d := m.Admit("k", lim, t0); d.Verdict != OverBudget || d.Dimension != DimBudgetTokens {
		t.Fatalf("budget spent: %+v", d)
	}
	if m.Open("k") != 0 {
		t.Fatal("a refused call holds a concurrency slot")
	}
	// The next month (local time) starts afresh.
	next := time.Date(2026, 12, 1, 0, 0, 0, 0, time.Local)
	if d := m.Admit("k", lim, next); d.Verdict != Admitted {
		t.Fatalf("next month: %+v", d)
	}
	m.AddMonth("k", Totals{USD: 3}, next)
	if d := m.Admit("k", Limits{BudgetUSD: 3}, next); d.Verdict != OverBudget || d.Dimension != DimBudgetUSD {
		t.Fatalf("usd budget spent: %+v", d)
	}
}

// TestMemoryHammer: 32 callers hammer one key with rpm 600 over a simulated minute: exactly 600
// are admitted; the next minute admits exactly 600 more. Callers read the clock before the key's
// lock, so calls reach the store slightly out of time order, as they do in the gateway.
func TestMemoryHammer(t *testing.T) {
	m := NewMemory()
	lim := Limits{RPM: 600, Concurrency: 1000}
	const callers, perCaller = 32, 200 // 6400 attempts per minute
	step := int64(Window) / (callers * perCaller)
	for minute := range 2 {
		var tick, admitted atomic.Int64
		start := t0.Add(time.Duration(minute) * Window)
		var wg sync.WaitGroup
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perCaller {
					now := start.Add(time.Duration((tick.Add(1) - 1) * step))
					if d := m.Admit("k", lim, now); d.Verdict == Admitted {
						admitted.Add(1)
						m.Settle("k", "", 1, 0, now)
					}
				}
			}()
		}
		wg.Wait()
		if n := admitted.Load(); n != 600 {
			t.Fatalf("minute %d: admitted %d, want exactly 600", minute, n)
		}
	}
}

// TestMemoryOutOfOrderClock: a call whose time is before one already logged is taken at the
// logged time, so a window never holds more than the limit.
func TestMemoryOutOfOrderClock(t *testing.T) {
	m := NewMemory()
	lim := Limits{RPM: 1}
	if d := m.Admit("k", lim, t0); d.Verdict != Admitted {
		t.Fatal(d)
	}
	if d := m.Admit("k", lim, t0.Add(70*time.Second)); d.Verdict != Admitted {
		t.Fatal(d)
	}
	// Arriving late with a time from before: the window ending at 70 s holds one call.
	if d := m.Admit("k", lim, t0.Add(65*time.Second)); d.Verdict != RateLimited || d.RetryAfter != time.Minute {
		t.Fatalf("late call: %+v; want refused for a minute", d)
	}
}

func TestParseFile(t *testing.T) {
	good := `keys:
  - name: team-a
    secret: "{env.TEAM_A}"
    models: [gpt-4o*, text-embedding-*]
    rpm: 600
    tpm: 200000
    concurrency: 20
    budget: 50M tokens monthly
    expires: 2027-01-01
  - name: team-b
    hash: ` + FormatHash("x") + `
    models: gpt-4o-mini
`
	ks, err := ParseFile([]byte(good), "keys.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(ks) != 2 || ks[0].RPM != 600 || ks[0].Budget != "50M tokens monthly" || len(ks[0].Models) != 2 || ks[1].Models[0] != "gpt-4o-mini" {
		t.Fatalf("parsed %+v %+v", ks[0], ks[1])
	}
	if ks, err := ParseFile(nil, "keys.yaml"); err != nil || ks != nil {
		t.Fatalf("empty file: %v %v", ks, err)
	}
	for _, tc := range []struct{ in, err string }{
		{"keys:\n  - name: a\n    secret: x\n    rpm: lots\n", `keys.yaml:4: keys[0] (key a): rpm: want a whole number >= 0, got "lots"`},
		{"keys:\n  - name: a\n    secret: x\n    budget: 5 apples monthly\n", `keys.yaml:4: keys[0] (key a): budget: budget unit "apples"`},
		{"keys:\n  - name: a\n    hash: sha256:00\n", "keys.yaml:3: keys[0] (key a): hash: want sha256:<64 hex digits>"},
		{"keys:\n  - name: a\n    secret: x\n    colour: red\n", `keys.yaml:4: keys[0] (key a): unknown field "colour"`},
		{"keys:\n  - name: a\n", "keys.yaml:2: keys[0]: key a: secret or hash is required"},
		{"keys:\n  - name: a\n    secret: x\n  - name: a\n    secret: y\n", "keys.yaml:4: keys[1]: key a defined twice (first on line 2)"},
		{"keys:\n  - name: a\n    secret: x\n    expires: soon\n", "keys.yaml:4: keys[0] (key a): expires"},
		{"keys: [\n", "keys.yaml:"},
		{"keys: 5\n", "keys.yaml:1: keys: want a list"},
		{"clients: []\n", `keys.yaml:1: unknown field "clients"`},
	} {
		_, err := ParseFile([]byte(tc.in), "keys.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseFile(%q): error %v, want %q", tc.in, err, tc.err)
		}
	}
}

// BenchmarkAdmit measures admission at 10,000 keys: the key lookup (hash and map), the model
// check and the store's Admit and Settle, the CPU admission adds to a call (SPEC §11: ≤ 2 µs).
func BenchmarkAdmit(b *testing.B) {
	const n = 10_000
	ks := make([]*Key, n)
	secrets := make([]string, n)
	for i := range ks {
		secrets[i] = fmt.Sprintf("sk-%032d", i)
		ks[i] = &Key{Name: fmt.Sprintf("key-%d", i), Secret: secrets[i], Models: []string{"gpt-4o*", "text-embedding-*"}, RPM: 1 << 30, TPM: 1 << 40, Concurrency: 1 << 20, Budget: "1G tokens monthly"}
	}
	s, err := Compile(ks, []Price{{Model: "gpt-4o*", Input: 2.5, Output: 10}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	m := NewMemory()
	now := t0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := s.Lookup(secrets[i%n])
		if e == nil || !e.Allows("gpt-4o-mini") {
			b.Fatal("lookup")
		}
		now = now.Add(time.Microsecond)
		if d := m.Admit(e.Name, e.Limits, now); d.Verdict != Admitted {
			b.Fatal(d)
		}
		usd, _ := s.Cost("gpt-4o-mini", 100, 20)
		m.Settle(e.Name, "", 120, usd, now)
	}
}

// BenchmarkSteadyTPM measures a key under steady traffic (1000 calls per simulated second, so
// the token log holds a minute of 60,000 settlements): pruning must not copy the log per call.
func BenchmarkSteadyTPM(b *testing.B) {
	m := NewMemory()
	lim := Limits{RPM: 1 << 40, TPM: 1 << 50}
	now := t0
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		now = now.Add(time.Millisecond)
		m.Admit("k", lim, now)
		m.Settle("k", "", 100, 0, now)
	}
}
