package dashboard

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

// sums are the additive figures of a set of calls.
type sums struct {
	Requests, Errors                            int64
	PromptTokens, CompletionTokens, TotalTokens int64
	CostNanos, Costed                           int64
}

func (s *sums) add(o *sums) {
	s.Requests = addSat(s.Requests, o.Requests)
	s.Errors = addSat(s.Errors, o.Errors)
	s.PromptTokens = addSat(s.PromptTokens, o.PromptTokens)
	s.CompletionTokens = addSat(s.CompletionTokens, o.CompletionTokens)
	s.TotalTokens = addSat(s.TotalTokens, o.TotalTokens)
	s.CostNanos = addSat(s.CostNanos, o.CostNanos)
	s.Costed = addSat(s.Costed, o.Costed)
}

// addSat adds non-negative figures, stopping at math.MaxInt64 rather than
// wrapping, whatever a file holds.
func addSat(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// hist counts latencies (ms) in audit's histogram buckets.
type hist [audit.HistBuckets]uint64

// percentile returns the nearest-rank p-th percentile (the smallest
// value with at least p of all values at or below it) as the midpoint of
// its bucket, and false when the histogram is empty.
func (h *hist) percentile(p float64) (int64, bool) {
	if h == nil {
		return 0, false
	}
	var n uint64
	for _, c := range h {
		n += c
	}
	if n == 0 {
		return 0, false
	}
	rank := uint64(math.Ceil(p * float64(n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h {
		seen += c
		if seen >= rank {
			return audit.HistValue(i), true
		}
	}
	return audit.HistValue(len(h) - 1), true
}

// group is the sums and latency histogram of one model, key or backend.
type group struct {
	sums
	latency *hist
}

// dim aggregates one dimension (model, key or backend) by name.
type dim struct {
	names  []string
	index  map[string]int32
	groups []group
}

func (d *dim) id(name string) int32 {
	if i, ok := d.index[name]; ok {
		return i
	}
	i := int32(len(d.names))
	d.index[name] = i
	d.names = append(d.names, name)
	d.groups = append(d.groups, group{})
	return i
}

// bucket is one time bucket of a series.
type bucket struct {
	sums
	latency, ttft *hist
}

// cellKey is a time bucket and a name of the series' dimension.
type cellKey struct {
	bucket int32
	name   int32
}

// aggregator sums calls, from rollup rows and from rows of records alike,
// into totals, a time series and per-name groups, in one pass.
type aggregator struct {
	p     *params
	total sums
	lat   hist
	ttft  hist

	dims [3]dim

	// The series: buckets from start, width wide, in the stored text's
	// calendar (local wall clock read as UTC, so that DST never makes a
	// bucket ambiguous or empty).
	start   time.Time
	width   int64 // seconds
	buckets []bucket
	cells   map[cellKey]*[2]int64 // requests and tokens per bucket and name of p.by

	// Scratch, kept across rows.
	interned  map[string]string
	lastHour  string
	lastIdx   int32
	latPairs  []audit.HistCount
	ttftPairs []audit.HistCount
}

func newAggregator(p *params) *aggregator {
	a := &aggregator{p: p, cells: map[cellKey]*[2]int64{}, interned: map[string]string{}, lastIdx: -1}
	for i := range a.dims {
		a.dims[i].index = map[string]int32{}
	}
	// The stored text of from and to, read back as naive wall clocks.
	start, _ := time.Parse(audit.TimeLayout, p.a)
	end, _ := time.Parse(audit.TimeLayout, p.b)
	a.width = int64(p.bucket / time.Second)
	a.start = start.Truncate(p.bucket)
	last := end.Add(-time.Microsecond).Unix() // to is excluded
	if !p.noSeries {
		a.buckets = make([]bucket, max((last-a.start.Unix())/a.width+1, 1))
	}
	return a
}

// intern returns a string for b, allocating once per distinct value.
func (a *aggregator) intern(b []byte) string {
	if s, ok := a.interned[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(a.interned) < 1<<16 {
		a.interned[s] = s
	}
	return s
}

// parseNaive reads the leading "YYYY-MM-DD HH:MM" of stored Time text (or
// a rollup hour or day) as a UTC wall clock; a missing hour or minute
// counts as 0.
func parseNaive(s string) (time.Time, bool) {
	num := func(i, n int) (int, bool) {
		if len(s) < i+n {
			return 0, false
		}
		v := 0
		for _, c := range []byte(s[i : i+n]) {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	y, ok1 := num(0, 4)
	mo, ok2 := num(5, 2)
	d, ok3 := num(8, 2)
	if !ok1 || !ok2 || !ok3 {
		return time.Time{}, false
	}
	h, _ := num(11, 2)
	mi, _ := num(14, 2)
	return time.Date(y, time.Month(mo), d, h, mi, 0, 0, time.UTC), true
}

// bucketOf returns the series bucket of stored Time (or rollup hour) text,
// or -1 outside the series.
func (a *aggregator) bucketOf(s string) int32 {
	t, ok := parseNaive(s)
	if !ok {
		return -1
	}
	i := (t.Unix() - a.start.Unix()) / a.width
	if i < 0 || i >= int64(len(a.buckets)) {
		return -1
	}
	return int32(i)
}

// bucketOfHour is bucketOf for rollup rows, which come grouped by hour.
func (a *aggregator) bucketOfHour(h string) int32 {
	if h != a.lastHour || a.lastIdx < 0 {
		a.lastHour, a.lastIdx = h, a.bucketOf(h)
	}
	return a.lastIdx
}

// addRollup adds the rollup row stmt is on (rollupSQL's columns).
func (a *aggregator) addRollup(stmt *sqlite3.Stmt) error {
	hour := a.intern(stmt.ColumnRawText(0))
	names := [3]string{a.intern(stmt.ColumnRawText(1)), a.intern(stmt.ColumnRawText(2)), a.intern(stmt.ColumnRawText(3))}
	class := stmt.ColumnInt64(4)
	s := sums{
		Requests:         stmt.ColumnInt64(5),
		PromptTokens:     stmt.ColumnInt64(6),
		CompletionTokens: stmt.ColumnInt64(7),
		TotalTokens:      stmt.ColumnInt64(8),
		CostNanos:        stmt.ColumnInt64(9),
		Costed:           stmt.ColumnInt64(10),
	}
	if class >= 4 {
		s.Errors = s.Requests
	}
	a.latPairs = a.latPairs[:0]
	a.ttftPairs = a.ttftPairs[:0]
	if err := audit.DecodeHist(stmt.ColumnRawBlob(11), func(b int, c uint64) {
		a.latPairs = append(a.latPairs, audit.HistCount{Bucket: uint16(b), Count: c})
	}); err != nil {
		return err
	}
	if err := audit.DecodeHist(stmt.ColumnRawBlob(12), func(b int, c uint64) {
		a.ttftPairs = append(a.ttftPairs, audit.HistCount{Bucket: uint16(b), Count: c})
	}); err != nil {
		return err
	}
	a.add(a.bucketOfHour(hour), names, &s)
	return nil
}

// addRow adds one row of records, read as the rollup reads it.
func (a *aggregator) addRow(r *audit.RollupRow) {
	s := sums{
		Requests:         1,
		PromptTokens:     audit.ClampTokens(r.PromptTokens),
		CompletionTokens: audit.ClampTokens(r.CompletionTokens),
		TotalTokens:      audit.ClampTokens(r.TotalTokens),
	}
	if audit.StatusClass(r.Status, r.StatusNull) >= 4 {
		s.Errors = 1
	}
	if r.HasCost {
		s.CostNanos, s.Costed = audit.CostNanos(r.Cost), 1
	}
	a.latPairs = a.latPairs[:0]
	a.ttftPairs = a.ttftPairs[:0]
	if r.HasLatency {
		a.latPairs = append(a.latPairs, audit.HistCount{Bucket: uint16(audit.HistBucket(r.LatencyMs)), Count: 1})
	}
	if r.HasTTFT {
		a.ttftPairs = append(a.ttftPairs, audit.HistCount{Bucket: uint16(audit.HistBucket(r.TTFTMs)), Count: 1})
	}
	a.add(a.bucketOf(r.Time), [3]string{r.Model, r.Key, r.Backend}, &s)
}

func addPairs(h *hist, pairs []audit.HistCount) {
	for _, c := range pairs {
		h[c.Bucket] += c.Count
	}
}

// add counts s (with latPairs and ttftPairs) in bucket b under names.
func (a *aggregator) add(b int32, names [3]string, s *sums) {
	a.total.add(s)
	addPairs(&a.lat, a.latPairs)
	addPairs(&a.ttft, a.ttftPairs)
	var ids [3]int32
	for i := range a.dims {
		d := &a.dims[i]
		ids[i] = d.id(names[i])
		g := &d.groups[ids[i]]
		g.add(s)
		if len(a.latPairs) > 0 {
			if g.latency == nil {
				g.latency = new(hist)
			}
			addPairs(g.latency, a.latPairs)
		}
	}
	if b < 0 {
		return
	}
	bk := &a.buckets[b]
	bk.add(s)
	if len(a.latPairs) > 0 {
		if bk.latency == nil {
			bk.latency = new(hist)
		}
		addPairs(bk.latency, a.latPairs)
	}
	if len(a.ttftPairs) > 0 {
		if bk.ttft == nil {
			bk.ttft = new(hist)
		}
		addPairs(bk.ttft, a.ttftPairs)
	}
	k := cellKey{b, ids[a.p.by]}
	c := a.cells[k]
	if c == nil {
		c = new([2]int64)
		a.cells[k] = c
	}
	c[0] = addSat(c[0], s.Requests)
	c[1] = addSat(c[1], addSat(s.PromptTokens, s.CompletionTokens))
}

// ranked returns dimension i's names by requests, most first (then by
// name), as indexes into its groups.
func (a *aggregator) ranked(i int) []int32 {
	d := &a.dims[i]
	ids := make([]int32, len(d.names))
	for j := range ids {
		ids[j] = int32(j)
	}
	slices.SortFunc(ids, func(x, y int32) int {
		if c := cmp.Compare(d.groups[y].Requests, d.groups[x].Requests); c != 0 {
			return c
		}
		return cmp.Compare(d.names[x], d.names[y])
	})
	return ids
}
