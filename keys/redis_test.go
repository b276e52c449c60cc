package keys

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmgw/caddy-llm-gateway/internal/redistest"
)

func newRedisStore(t *testing.T, srv *redistest.Server, opts RedisOptions) *Redis {
	t.Helper()
	c, err := NewRedisClient(srv.URL(0), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r := NewRedis(c, opts)
	if err := r.Load(); err != nil {
		t.Fatalf("loading the scripts: %v", err)
	}
	return r
}

// TestRedisMatchesMemory: the Redis store decides as the in-process one does, on the same
// sequence of admissions and settlements (rpm, tpm, concurrency, budgets, Retry-After, quotas).
func TestRedisMatchesMemory(t *testing.T) {
	srv := redistest.Start(t)
	r := newRedisStore(t, srv, RedisOptions{})
	m := NewMemory()
	type step struct {
		at     time.Duration
		lim    Limits
		settle int64 // >0: settle the last admitted call with these tokens instead of admitting
		usd    float64
	}
	lim := Limits{RPM: 3, TPM: 100, Concurrency: 2, BudgetTokens: 1000}
	steps := []step{
		{at: 0, lim: lim}, {at: time.Second, lim: lim}, {at: 2 * time.Second, lim: lim}, // third: concurrency
		{at: 3 * time.Second, settle: 60}, {at: 4 * time.Second, lim: lim}, // rpm 3rd
		{at: 5 * time.Second, lim: lim}, // concurrency again
		{at: 6 * time.Second, settle: 50, usd: 0.25}, {at: 7 * time.Second, settle: 1},
		{at: 8 * time.Second, lim: lim},                                       // rpm: refused until the t=0 call leaves
		{at: 61 * time.Second, lim: lim},                                      // rpm ok; tokens 111 ≥ 100: tpm refuses
		{at: 64 * time.Second, lim: lim},                                      // the 60 left: admitted
		{at: 65 * time.Second, lim: Limits{RPM: 1}},                           // limit lowered
		{at: 70 * time.Second, settle: 900}, {at: 71 * time.Second, lim: lim}, // budget spent
		{at: 72 * time.Second, lim: Limits{BudgetUSD: 0.25}},
	}
	var rt, mt []Ticket
	for i, s := range steps {
		now := t0.Add(s.at)
		if s.settle > 0 {
			r.Settle("k", rt[len(rt)-1], s.settle, s.usd, now)
			m.Settle("k", mt[len(mt)-1], s.settle, s.usd, now)
			rt, mt = rt[:len(rt)-1], mt[:len(mt)-1]
			continue
		}
		dr, dm := r.Admit("k", s.lim, now), m.Admit("k", s.lim, now)
		if dr.Verdict == Admitted {
			if dr.Ticket == "" {
				t.Fatalf("step %d: admitted without a ticket", i)
			}
			rt = append(rt, dr.Ticket)
			mt = append(mt, dm.Ticket)
		}
		dr.Ticket = ""
		if dr != dm {
			t.Fatalf("step %d at %v: redis %+v, memory %+v", i, s.at, dr, dm)
		}
	}
	if rtot, mtot := r.MonthTotals("k", t0.Add(80*time.Second)), m.MonthTotals("k", t0.Add(80*time.Second)); rtot != mtot {
		t.Fatalf("month totals: redis %+v, memory %+v", rtot, mtot)
	}
}

// TestRedisSharedWindow: three stores (three nodes) on one Redis admit exactly rpm calls of a
// concurrent burst between them.
func TestRedisSharedWindow(t *testing.T) {
	srv := redistest.Start(t)
	nodes := []*Redis{newRedisStore(t, srv, RedisOptions{}), newRedisStore(t, srv, RedisOptions{}), newRedisStore(t, srv, RedisOptions{})}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			n := nodes[i%3]
			if d := n.Admit("k", Limits{RPM: 9, Concurrency: 20}, t0.Add(time.Duration(i)*time.Millisecond)); d.Verdict == Admitted {
				admitted.Add(1)
				n.Settle("k", d.Ticket, 0, 0, t0.Add(time.Second))
			}
		}(i)
	}
	wg.Wait()
	if got := admitted.Load(); got != 9 {
		t.Fatalf("admitted %d of 30 with rpm 9 over three nodes", got)
	}
}

// TestRedisOneRequestPerCall: an admission is one EVALSHA and a settlement is one, per Redis's
// own command statistics.
func TestRedisOneRequestPerCall(t *testing.T) {
	srv := redistest.Start(t)
	r := newRedisStore(t, srv, RedisOptions{})
	before := srv.CommandCalls("evalsha")
	otherBefore := srv.CommandCalls("eval")
	const calls = 25
	for i := 0; i < calls; i++ {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		d := r.Admit("k", Limits{RPM: 100, TPM: 1e6, Concurrency: 5, BudgetTokens: 1e9}, now)
		if d.Verdict != Admitted {
			t.Fatalf("call %d: %+v", i, d)
		}
		r.Settle("k", d.Ticket, 10, 0.01, now)
	}
	if got := srv.CommandCalls("evalsha") - before; got != 2*calls {
		t.Fatalf("%d EVALSHA for %d admissions and settlements; want %d", got, 2*calls, 2*calls)
	}
	if got := srv.CommandCalls("eval") - otherBefore; got != 0 {
		t.Fatalf("%d EVAL (script reloads); want 0", got)
	}
}

// TestRedisSeed: month totals are seeded only when the store holds none for the month.
func TestRedisSeed(t *testing.T) {
	srv := redistest.Start(t)
	a := newRedisStore(t, srv, RedisOptions{})
	a.AddMonth("k", Totals{Tokens: 500, USD: 2}, t0)
	b := newRedisStore(t, srv, RedisOptions{})
	b.AddMonth("k", Totals{Tokens: 700, USD: 3}, t0) // a second node: the store has totals already
	if got := b.MonthTotals("k", t0); got != (Totals{Tokens: 500, USD: 2}) {
		t.Fatalf("totals %+v; want the first seed only", got)
	}
	if got := b.MonthTotals("k", time.Date(2026, 12, 1, 0, 0, 0, 0, time.Local)); got != (Totals{}) {
		t.Fatalf("next month's totals %+v; want none", got)
	}
}

// TestRedisFailureModes: with the store down, open mode counts in the fallback store and
// closed mode refuses; each call fails within the timeout; the store is used again once it is
// back, without a new store.
func TestRedisFailureModes(t *testing.T) {
	srv := redistest.Start(t)
	var failures atomic.Int64
	onFail := func(error) { failures.Add(1) }
	open := newRedisStore(t, srv, RedisOptions{OnFailure: onFail})
	closed := newRedisStore(t, srv, RedisOptions{FailClosed: true, OnFailure: onFail})
	lim := Limits{RPM: 2}
	if d := open.Admit("k", lim, t0); d.Verdict != Admitted {
		t.Fatalf("%+v", d)
	}
	srv.Stop()
	start := time.Now()
	d := open.Admit("k", lim, t0.Add(time.Second))
	if d.Verdict != Admitted || d.Ticket != "" {
		t.Fatalf("open mode, store down: %+v; want admitted by the fallback", d)
	}
	open.Settle("k", d.Ticket, 5, 0, t0.Add(time.Second))
	if dc := closed.Admit("k", lim, t0.Add(time.Second)); dc.Verdict != Unavailable {
		t.Fatalf("closed mode, store down: %+v; want unavailable", dc)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("three calls on a dead store took %v", el)
	}
	if failures.Load() == 0 {
		t.Fatal("no failure reported")
	}
	// The fallback counts on its own: its window holds only the call it admitted.
	if d := open.Admit("k", lim, t0.Add(2*time.Second)); d.Verdict != Admitted || d.Requests.Remaining != 0 {
		t.Fatalf("fallback: %+v", d)
	}

	srv.Restart()
	// Within storeRetry of the last failure the store is not tried; poll until it is.
	deadline := time.Now().Add(5 * time.Second)
	for {
		d := closed.Admit("k", lim, t0.Add(3*time.Second))
		if d.Verdict == Admitted {
			break
		}
		if d.Verdict != Unavailable || time.Now().After(deadline) {
			t.Fatalf("after a restart: %+v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Back on the (empty) store: the limit holds again across both stores.
	if d := open.Admit("k", lim, t0.Add(3*time.Second)); d.Verdict != Admitted || d.Ticket == "" {
		t.Fatalf("open store after the restart: %+v; want admitted by Redis", d)
	}
	if d := open.Admit("k", lim, t0.Add(3*time.Second)); d.Verdict != RateLimited {
		t.Fatalf("third call after the restart: %+v; want refused by the shared window", d)
	}
}

func TestParseRedisURL(t *testing.T) {
	for _, u := range []string{"redis://127.0.0.1:6379/0", "rediss://user:pw@example.com:6380/2", "redis://:secret@h:1/0"} {
		if _, err := ParseRedisURL(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, u := range []string{"http://h:1/0", "redis://h:1/notadb", "127.0.0.1:6379"} {
		_, err := ParseRedisURL(u)
		if err == nil {
			t.Errorf("%s: accepted", u)
		}
	}
	_, err := ParseRedisURL("redis://u:hunter2@h:1/x")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v leaks the password", err)
	}
}
