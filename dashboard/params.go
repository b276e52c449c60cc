package dashboard

import (
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

// Bounds of the API's parameters.
const (
	// DefaultRange is the time range when neither from nor to is given.
	DefaultRange = 24 * time.Hour
	// MaxRange is the longest time range one call may ask for.
	MaxRange = 366 * 24 * time.Hour
	// maxValueLen bounds a filter value: no model, key or backend name
	// is longer, and a longer one cannot match.
	maxValueLen = 256
	// rawRange is the longest range read from the rows themselves, with
	// minute buckets; longer ones read the hourly rollup.
	rawRange = 6 * time.Hour
	// maxPoints bounds the buckets of a series.
	maxPoints = 1000
	// DefaultLimit and MaxLimit bound top tables and failure lists.
	DefaultLimit = 10
	MaxLimit     = 500
	// None is the filter value matching calls without a model, key or
	// backend (NULL or empty).
	None = "(none)"
)

// Filter dimensions, the values of by.
const (
	byModel   = "model"
	byKey     = "key"
	byBackend = "backend"
)

var dimNames = [3]string{byModel, byKey, byBackend}

// params are an API call's parsed query parameters.
type params struct {
	from, to time.Time
	a, b     string // from and to as stored Time text (local time)
	// filters, one per dimension (model, key, backend); nil means any.
	filter [3]*string
	class  int64 // status class 1..5; 0 means any
	by     int   // dimension index for series and top
	bucket time.Duration
	limit  int
	// noSeries is set by the calls that show no time series (summary,
	// top): whole days can then come from the daily rollup whatever the
	// bucket.
	noSeries bool
}

// paramError is a malformed parameter, answered with 400.
type paramError struct {
	param, msg string
}

func (e *paramError) Error() string { return e.param + ": " + e.msg }

// parseParams reads the common parameters: from, to, model, key, backend,
// status. now is the default end of the range.
func parseParams(q url.Values, now time.Time) (*params, error) {
	p := &params{limit: DefaultLimit}
	for name, vs := range q {
		if len(vs) > 1 {
			return nil, &paramError{name, "given more than once"}
		}
		if err := checkValue(name, vs[0]); err != nil {
			return nil, err
		}
	}
	var err error
	hasFrom, hasTo := q.Get("from") != "", q.Get("to") != ""
	if hasTo {
		if p.to, err = parseTime("to", q.Get("to")); err != nil {
			return nil, err
		}
	} else {
		p.to = now
	}
	if hasFrom {
		if p.from, err = parseTime("from", q.Get("from")); err != nil {
			return nil, err
		}
	} else {
		p.from = p.to.Add(-DefaultRange)
	}
	if !p.from.Before(p.to) {
		return nil, &paramError{"from", "must be before to"}
	}
	if p.to.Sub(p.from) > MaxRange {
		return nil, &paramError{"from", "range longer than 366 days"}
	}
	p.a = p.from.Local().Format(audit.TimeLayout)
	p.b = p.to.Local().Format(audit.TimeLayout)
	for i, name := range dimNames {
		if v, ok := q[name]; ok && v[0] != "" {
			s := v[0]
			if s == None {
				s = ""
			}
			p.filter[i] = &s
		}
	}
	switch s := q.Get("status"); s {
	case "":
	case "1xx", "2xx", "3xx", "4xx", "5xx":
		p.class = int64(s[0] - '0')
	default:
		return nil, &paramError{"status", "want 1xx, 2xx, 3xx, 4xx or 5xx"}
	}
	switch s := q.Get("by"); s {
	case "", byModel:
		p.by = 0
	case byKey:
		p.by = 1
	case byBackend:
		p.by = 2
	default:
		return nil, &paramError{"by", "want model, key or backend"}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return nil, &paramError{"limit", "want a number from 1 to " + strconv.Itoa(MaxLimit)}
		}
		p.limit = n
	}
	if err := p.parseBucket(q.Get("bucket")); err != nil {
		return nil, err
	}
	return p, nil
}

// checkValue rejects values no name can have: invalid UTF-8, control
// characters (NUL among them) and anything longer than maxValueLen.
func checkValue(name, v string) error {
	if len(v) > maxValueLen {
		return &paramError{name, "longer than " + strconv.Itoa(maxValueLen) + " bytes"}
	}
	if !utf8.ValidString(v) {
		return &paramError{name, "not valid UTF-8"}
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return &paramError{name, "contains a control character"}
		}
	}
	return nil
}

// Years accepted in times: what the stored text format can hold and sort.
var (
	minTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
)

// parseTime reads RFC 3339 (2026-07-23T11:00:00Z) or Unix seconds.
func parseTime(name, s string) (time.Time, error) {
	var t time.Time
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < minTime.Unix() || n >= maxTime.Unix() {
			return t, &paramError{name, "out of range"}
		}
		t = time.Unix(n, 0)
	} else if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
		return t, &paramError{name, "want RFC 3339 (2026-07-23T11:00:00Z) or Unix seconds"}
	}
	if t.Before(minTime) || !t.Before(maxTime) {
		return t, &paramError{name, "out of range"}
	}
	return t, nil
}

// Series bucket widths.
var bucketNames = map[string]time.Duration{
	"1m": time.Minute, "5m": 5 * time.Minute, "15m": 15 * time.Minute,
	"1h": time.Hour, "3h": 3 * time.Hour, "6h": 6 * time.Hour, "1d": 24 * time.Hour,
}

// parseBucket sets the series bucket: auto (default) picks one by range.
func (p *params) parseBucket(s string) error {
	span := p.to.Sub(p.from)
	if s == "" || s == "auto" {
		switch {
		case span <= 2*time.Hour:
			p.bucket = time.Minute
		case span <= rawRange:
			p.bucket = 5 * time.Minute
		case span <= 8*24*time.Hour:
			p.bucket = time.Hour
		default:
			// Days, which the daily rollup answers: a month in 30 points.
			p.bucket = 24 * time.Hour
		}
		return nil
	}
	d, ok := bucketNames[s]
	if !ok {
		return &paramError{"bucket", "want auto, 1m, 5m, 15m, 1h, 3h, 6h or 1d"}
	}
	if d < time.Hour && span > rawRange {
		return &paramError{"bucket", "buckets under an hour need a range of at most 6h"}
	}
	if span/d > maxPoints {
		return &paramError{"bucket", "more than " + strconv.Itoa(maxPoints) + " buckets: choose a wider one"}
	}
	p.bucket = d
	return nil
}

// rawOnly reports whether the range is read from the rows alone.
func (p *params) rawOnly() bool {
	return p.to.Sub(p.from) <= rawRange || p.bucket < time.Hour
}

// daily reports whether whole days may be read from the daily rollup.
func (p *params) daily() bool {
	return p.noSeries || p.bucket%(24*time.Hour) == 0
}

// hourSpan returns the hours [hs, he) lying wholly inside [a, b), as
// rollup hours ("YYYY-MM-DD HH"); hs >= he when there are none.
func (p *params) hourSpan() (hs, he string) {
	hs = audit.HourOf(p.a)
	if p.a[len(hs):] != ":00:00.000000" {
		hs = nextHour(hs)
	}
	return hs, audit.HourOf(p.b)
}

const (
	hourLayout = "2006-01-02 15"
	dayLayout  = "2006-01-02"
)

// nextDay returns the rollup day after d.
func nextDay(d string) string {
	t, err := time.Parse(dayLayout, d)
	if err != nil {
		return d
	}
	return t.AddDate(0, 0, 1).Format(dayLayout)
}

// nextHour returns the rollup hour after h, in the calendar of the stored
// text (local wall clock, whatever DST does).
func nextHour(h string) string {
	t, err := time.Parse(hourLayout, h)
	if err != nil {
		return h
	}
	return t.Add(time.Hour).Format(hourLayout)
}

// filterArgs returns the filters as SQL arguments: a string, or nil for
// any (bound as NULL, which the queries read as "no filter").
func (p *params) filterArgs() [4]any {
	var out [4]any
	for i, f := range p.filter {
		if f != nil {
			out[i] = *f
		}
	}
	if p.class != 0 {
		out[3] = p.class
	}
	return out
}

// describe is the echo of the parameters in every answer.
func (p *params) describe() map[string]any {
	m := map[string]any{
		"from": p.from.UTC().Format(time.RFC3339Nano),
		"to":   p.to.UTC().Format(time.RFC3339Nano),
	}
	for i, f := range p.filter {
		if f != nil {
			v := *f
			if v == "" {
				v = None
			}
			m[dimNames[i]] = v
		}
	}
	if p.class != 0 {
		m["status"] = strconv.FormatInt(p.class, 10) + "xx"
	}
	return m
}
