package llmgateway

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestSeriesCache: a finished call's series are the vectors' own children, resolved once per
// label values; tokens_total gets a series only once it counts a token; past its bound the
// cache still serves the vectors' children without keeping them. (The end-to-end metrics tests
// check the values a scrape shows.)
func TestSeriesCache(t *testing.T) {
	sc := seriesCache{max: 2}
	// Labels of this run only: the vectors are the process's, and -count runs the test again.
	model := "cache-test-model-" + strconv.FormatInt(seriesCacheRuns.Add(1), 10)
	k := seriesKey{model: model, backend: "cache-test-backend", ep: epChat, status: 200, key: labelNone}
	s := sc.get(k)
	if again := sc.get(k); again != s {
		t.Error("the same labels resolved twice")
	}
	if s.requests != requestsTotal.WithLabelValues(k.model, k.backend, "chat.completions", "200", labelNone) {
		t.Error("requests is not the requests_total child of the call's labels")
	}
	if s.duration != requestDuration.WithLabelValues(k.model, k.backend, "chat.completions") {
		t.Error("duration is not the request_duration_seconds child of the call's labels")
	}

	before := countSeries(t, tokensTotal)
	completion := s.tokens(tokensCompletion)
	if completion != tokensTotal.WithLabelValues(k.model, k.backend, "completion", labelNone) || s.tokens(tokensCompletion) != completion {
		t.Error("completion tokens: not the tokens_total child of the call's labels, resolved once")
	}
	if got := countSeries(t, tokensTotal); got != before+1 {
		t.Errorf("tokens_total has %d series, want %d: the completion one only", got, before+1)
	}

	for status := 201; status < 205; status++ {
		k2 := k
		k2.status = status
		if sc.get(k2).requests != requestsTotal.WithLabelValues(k.model, k.backend, "chat.completions", statusLabel(status), labelNone) {
			t.Errorf("status %d: not the requests_total child", status)
		}
	}
	if len(sc.m) != sc.max {
		t.Errorf("%d series cached, want the bound %d", len(sc.m), sc.max)
	}
}

var seriesCacheRuns atomic.Int64

// countSeries counts the series c has.
func countSeries(t *testing.T, c prometheus.Collector) int {
	t.Helper()
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	n := 0
	for range ch {
		n++
	}
	return n
}
