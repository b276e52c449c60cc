package keys

import (
	"sync"
	"time"
)

// Window is the length of the rolling rate-limit windows.
const Window = 60 * time.Second

// Limits are a key's limits; zero means none.
type Limits struct {
	RPM          int64   // calls admitted per trailing Window
	TPM          int64   // tokens settled per trailing Window
	Concurrency  int64   // calls open at once
	BudgetTokens int64   // tokens per calendar month (local time)
	BudgetUSD    float64 // USD per calendar month (local time)
}

// Verdict is the outcome of an admission.
type Verdict uint8

const (
	Admitted    Verdict = iota
	RateLimited         // rpm, tpm or concurrency: retry after RetryAfter
	OverBudget          // the monthly budget is spent: until the next month
	Unavailable         // a shared store is unreachable and its failure mode is closed
)

// Dimension names the limit a refusal is for.
type Dimension uint8

const (
	DimNone Dimension = iota
	DimRequests
	DimTokens
	DimConcurrency
	DimBudgetTokens
	DimBudgetUSD
)

func (d Dimension) String() string {
	switch d {
	case DimRequests:
		return "requests per minute"
	case DimTokens:
		return "tokens per minute"
	case DimConcurrency:
		return "concurrent calls"
	case DimBudgetTokens:
		return "monthly token budget"
	case DimBudgetUSD:
		return "monthly usd budget"
	}
	return ""
}

// Quota is the state of one rate-limited dimension as the x-ratelimit-* headers show it.
type Quota struct {
	Limit     int64         // 0: the key does not limit this dimension
	Remaining int64         // after the current call, for requests
	Reset     time.Duration // until the oldest entry leaves the window (0 when it is empty)
}

// Decision is what Admit decided.
type Decision struct {
	Verdict    Verdict
	Dimension  Dimension     // what refused the call
	RetryAfter time.Duration // RateLimited: whole seconds, at least one
	Requests   Quota
	Tokens     Quota
	// Ticket identifies an admitted call to the store that admitted it; Settle hands it back.
	// The in-process store leaves it empty.
	Ticket Ticket
}

// Ticket identifies an admitted call in a shared store, so that its settlement releases exactly
// its own concurrency slot, and on the store that counted it.
type Ticket string

// Totals are a key's month-to-date usage.
type Totals struct {
	Tokens int64
	USD    float64
}

// Store holds the counters of every key, by name. An implementation shared by several
// gateways (Redis) does each call in one round trip: Admit checks and counts a call, Settle
// settles its tokens and cost and releases its concurrency slot.
type Store interface {
	// Admit decides whether key name may make a call at now under lim; when it may, the call
	// counts against rpm and concurrency from now on. A refused call counts against nothing.
	Admit(name string, lim Limits, now time.Time) Decision
	// Settle records the tokens and cost of an admitted call that ended at now and releases its
	// concurrency slot; t is the ticket of the call's Decision.
	Settle(name string, t Ticket, tokens int64, usd float64, now time.Time)
	// MonthTotals is key name's usage in the calendar month (local time) of now.
	MonthTotals(name string, now time.Time) Totals
	// AddMonth adds usage recorded elsewhere (the audit database read at start) to key name's
	// totals for the calendar month of now.
	AddMonth(name string, t Totals, now time.Time)
}

// Memory is the in-process Store: exact sliding logs per key behind a mutex per key.
type Memory struct {
	mu   sync.RWMutex
	keys map[string]*keyState
}

// NewMemory returns an empty in-process store.
func NewMemory() *Memory { return &Memory{keys: make(map[string]*keyState)} }

// keyState is one key's counters.
type keyState struct {
	mu       sync.Mutex
	requests ring        // admission times (unix ns) in the trailing window
	tokens   []tokenMark // settlements in the trailing window, oldest first
	tokenSum int64       // sum of tokens
	open     int64       // calls admitted and not settled
	last     int64       // the latest time (unix ns) seen: the logs' clock never goes back
	month    int         // year*12+month of the totals
	totals   Totals
}

type tokenMark struct {
	at int64 // unix ns
	n  int64
}

func (m *Memory) state(name string) *keyState {
	m.mu.RLock()
	s := m.keys[name]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s = m.keys[name]; s == nil {
		s = new(keyState)
		m.keys[name] = s
	}
	return s
}

func monthOf(t time.Time) int {
	y, mo, _ := t.Local().Date()
	return y*12 + int(mo)
}

// rollMonth starts new totals when now is in a later month than they are for.
func (s *keyState) rollMonth(now time.Time) {
	if mo := monthOf(now); mo != s.month {
		s.month, s.totals = mo, Totals{}
	}
}

// clock returns now as the key's logs use it: never before a time already used. Callers read
// the clock before they take the key's lock, so a call can arrive with a time a little before
// one already logged; taken as it is, it could be admitted on a window that no longer holds the
// later entries, and the logs would no longer be in time order.
func (s *keyState) clock(now time.Time) int64 {
	ns := now.UnixNano()
	if ns < s.last {
		return s.last
	}
	s.last = ns
	return ns
}

// prune drops entries that left the window ending at now: those at or before now-Window.
func (s *keyState) prune(now int64) {
	edge := now - int64(Window)
	for s.requests.len() > 0 && s.requests.oldest() <= edge {
		s.requests.pop()
	}
	i := 0
	for i < len(s.tokens) && s.tokens[i].at <= edge {
		s.tokenSum -= s.tokens[i].n
		i++
	}
	// Re-slicing, not copying: a busy key's log holds a minute of settlements, and copying it
	// on every call would cost O(entries). append moves the live entries to a fresh array once
	// the old one's end is reached, so the dropped head is freed then (amortised O(1)).
	s.tokens = s.tokens[i:]
	if len(s.tokens) == 0 {
		s.tokens = nil
	}
}

// Admit implements Store.
func (m *Memory) Admit(name string, lim Limits, now time.Time) Decision {
	s := m.state(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := s.clock(now)
	s.prune(ns)
	s.rollMonth(now)

	d := Decision{}
	switch {
	case lim.BudgetTokens > 0 && s.totals.Tokens >= lim.BudgetTokens:
		d.Verdict, d.Dimension = OverBudget, DimBudgetTokens
	case lim.BudgetUSD > 0 && s.totals.USD >= lim.BudgetUSD:
		d.Verdict, d.Dimension = OverBudget, DimBudgetUSD
	case lim.Concurrency > 0 && s.open >= lim.Concurrency:
		d.Verdict, d.Dimension, d.RetryAfter = RateLimited, DimConcurrency, time.Second
	case lim.RPM > 0 && int64(s.requests.len()) >= lim.RPM:
		// Room comes when enough of the oldest admissions leave for the count to drop below
		// the limit (after a lowered limit, more than one may have to).
		oldest := s.requests.at(s.requests.len() - int(lim.RPM))
		d.Verdict, d.Dimension, d.RetryAfter = RateLimited, DimRequests, retryAfter(oldest+int64(Window)-ns)
	case lim.TPM > 0 && s.tokenSum >= lim.TPM:
		sum, at := s.tokenSum, ns
		for _, t := range s.tokens {
			sum -= t.n
			at = t.at
			if sum < lim.TPM {
				break
			}
		}
		d.Verdict, d.Dimension, d.RetryAfter = RateLimited, DimTokens, retryAfter(at+int64(Window)-ns)
	}
	if d.Verdict == Admitted {
		if lim.RPM > 0 {
			s.requests.push(ns)
		}
		s.open++
	}
	if lim.RPM > 0 {
		d.Requests = Quota{Limit: lim.RPM, Remaining: max(lim.RPM-int64(s.requests.len()), 0)}
		if s.requests.len() > 0 {
			d.Requests.Reset = time.Duration(s.requests.oldest() + int64(Window) - ns)
		}
	}
	if lim.TPM > 0 {
		d.Tokens = Quota{Limit: lim.TPM, Remaining: max(lim.TPM-s.tokenSum, 0)}
		if len(s.tokens) > 0 {
			d.Tokens.Reset = time.Duration(s.tokens[0].at + int64(Window) - ns)
		}
	}
	return d
}

// retryAfter rounds a wait up to whole seconds, at least one.
func retryAfter(ns int64) time.Duration {
	secs := (ns + int64(time.Second) - 1) / int64(time.Second)
	return time.Duration(max(secs, 1)) * time.Second
}

// Settle implements Store.
func (m *Memory) Settle(name string, _ Ticket, tokens int64, usd float64, now time.Time) {
	s := m.state(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open > 0 {
		s.open--
	}
	ns := s.clock(now)
	s.prune(ns)
	s.rollMonth(now)
	if tokens > 0 {
		if n := len(s.tokens); n > 0 && s.tokens[n-1].at == ns {
			s.tokens[n-1].n += tokens
		} else {
			s.tokens = append(s.tokens, tokenMark{at: ns, n: tokens})
		}
		s.tokenSum += tokens
		s.totals.Tokens += tokens
	}
	if usd > 0 {
		s.totals.USD += usd
	}
}

// MonthTotals implements Store.
func (m *Memory) MonthTotals(name string, now time.Time) Totals {
	s := m.state(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rollMonth(now)
	return s.totals
}

// AddMonth implements Store.
func (m *Memory) AddMonth(name string, t Totals, now time.Time) {
	s := m.state(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rollMonth(now)
	s.totals.Tokens += t.Tokens
	s.totals.USD += t.USD
}

// Open is the number of calls of key name admitted and not settled.
func (m *Memory) Open(name string) int64 {
	s := m.state(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// ring is a growable FIFO of unix-ns times.
type ring struct {
	buf        []int64
	head, size int
}

func (r *ring) len() int      { return r.size }
func (r *ring) oldest() int64 { return r.buf[r.head] }

// at returns the i-th oldest entry.
func (r *ring) at(i int) int64 { return r.buf[(r.head+i)%len(r.buf)] }

func (r *ring) pop() {
	r.head = (r.head + 1) % len(r.buf)
	r.size--
}

func (r *ring) push(v int64) {
	if r.size == len(r.buf) {
		n := make([]int64, max(2*len(r.buf), 8))
		for i := 0; i < r.size; i++ {
			n[i] = r.at(i)
		}
		r.buf, r.head = n, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = v
	r.size++
}
