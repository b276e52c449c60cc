package llmgateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// eventually polls cond until it holds or five seconds have passed. The gateway records a call
// after its response has reached the caller, and nothing signals that moment to a test, so
// assertions on metrics and logs wait for it.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, detail)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scrape fetches /metrics and parses it.
func (g *gateway) scrape() map[string]*dto.MetricFamily {
	g.t.Helper()
	status, _, body := g.get("/metrics")
	if status != http.StatusOK {
		g.t.Fatalf("GET /metrics: %d %s", status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		g.t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// series finds the series of family name whose labels include want, and returns its value
// (a histogram's sample count).
func series(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	fam := fams[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		have := make(map[string]string, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsEndToEnd(t *testing.T) {
	good, bad := fake(t, "mt-good"), fake(t, "mt-bad")
	bad.Update(func(s *fakeupstream.Settings) { s.Status = http.StatusServiceUnavailable })
	gw := startGateway(t,
		fmt.Sprintf("\tllm_audit {\n\t\tpath %s\n\t}", filepath.Join(t.TempDir(), "record.db")),
		"\tmetrics /metrics\n"+gatewaySite("\t\thealth_check {\n\t\t\tfailure_threshold 1\n\t\t\tcooldown 10m\n\t\t}",
			clientBlock("mt-good", good.URL(), "match exact mt-chat"),
			clientBlock("mt-bad", bad.URL(), "match exact mt-fail", "fallback mt-chat")))
	// Counters are process-wide and outlive configs: compare against what they held before.
	base := gw.scrape()

	if status, _, body := gw.chat("mt-chat"); status != http.StatusOK {
		t.Fatalf("chat: %d %s", status, body)
	}
	if status, _, body := gw.post("/v1/chat/completions", "application/json",
		`{"model":"mt-chat","stream":true,"messages":[{"role":"user","content":"hi"}]}`); status != http.StatusOK || !strings.Contains(body, "[DONE]") {
		t.Fatalf("stream: %d %s", status, body)
	}
	// mt-bad answers 503, so the call fails over to its fallback model on mt-good.
	if status, h, body := gw.chat("mt-fail"); status != http.StatusOK || h.Get("X-LLM-Gateway-Tried") != "mt-bad,mt-good" {
		t.Fatalf("failover: %d tried=%q %s", status, h.Get("X-LLM-Gateway-Tried"), body)
	}
	if status, _, _ := gw.chat("mt-unknown-4711"); status != http.StatusNotFound {
		t.Fatalf("unknown model: %d, want 404", status)
	}

	const ns = "caddy_llm_gateway_"
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64 // -1: the series must exist, any value
	}{
		// The stream and the failed-over call both end on model mt-chat at mt-good.
		{"requests_total", map[string]string{"model": "mt-chat", "backend": "mt-good", "endpoint": "chat.completions", "code": "200"}, 3},
		{"requests_total", map[string]string{"model": "other", "backend": "none", "endpoint": "chat.completions", "code": "404"}, -1},
		{"request_duration_seconds", map[string]string{"model": "mt-chat", "backend": "mt-good", "endpoint": "chat.completions"}, 3},
		{"ttft_seconds", map[string]string{"model": "mt-chat", "backend": "mt-good"}, 1},
		{"tokens_total", map[string]string{"model": "mt-chat", "backend": "mt-good", "type": "prompt"}, 3 * fakeupstream.DefaultPromptTokens},
		// Two JSON answers of DefaultCompletionTokens, and a stream counting its chunks.
		{"tokens_total", map[string]string{"model": "mt-chat", "backend": "mt-good", "type": "completion"}, 2*fakeupstream.DefaultCompletionTokens + fakeupstream.DefaultChunks},
		{"failovers_total", map[string]string{"model": "mt-fail"}, 1},
		{"breaker_state", map[string]string{"client": "mt-bad"}, 2},
		{"breaker_state", map[string]string{"client": "mt-good"}, 0},
		{"in_flight", map[string]string{"endpoint": "chat.completions"}, 0},
		{"audit_queue_depth", nil, -1},
		{"audit_dropped_total", map[string]string{"reason": "queue_full"}, 0},
		{"audit_dropped_total", map[string]string{"reason": "write_failed"}, 0},
	} {
		t.Run(tc.name+labelString(tc.labels), func(t *testing.T) {
			want := tc.want
			if want >= 0 && cumulative[tc.name] {
				before, _ := series(base, ns+tc.name, tc.labels)
				want += before
			}
			eventually(t, tc.name, func() (bool, string) {
				got, ok := series(gw.scrape(), ns+tc.name, tc.labels)
				if !ok {
					return false, fmt.Sprintf("no series %s%s", tc.name, labelString(tc.labels))
				}
				if want >= 0 && got != want {
					return false, fmt.Sprintf("%s%s = %v, want %v", tc.name, labelString(tc.labels), got, want)
				}
				return true, ""
			})
		})
	}

	// The caller's unknown model name must not become a label value.
	if fam := gw.scrape()[ns+"requests_total"]; fam != nil {
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == "mt-unknown-4711" {
					t.Errorf("unknown model leaked into a label: %v", m)
				}
			}
		}
	}
}

// cumulative names the families whose values only grow across tests in one process.
var cumulative = map[string]bool{
	"requests_total": true, "request_duration_seconds": true, "ttft_seconds": true,
	"tokens_total": true, "failovers_total": true,
}

func labelString(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	parts := make([]string, 0, len(labels))
	for k, v := range labels {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// TestMetricsSurviveReload checks that a reload re-registers the collectors in the new
// generation's registry and that counters keep their values.
func TestMetricsSurviveReload(t *testing.T) {
	up := fake(t, "mr-up")
	site := "\tmetrics /metrics\n" + gatewaySite("", clientBlock("mr-up", up.URL(), "match exact mr-model"))
	gw := startGateway(t, "", site)
	labels := map[string]string{"model": "mr-model", "backend": "mr-up", "code": "200"}
	want, _ := series(gw.scrape(), "caddy_llm_gateway_requests_total", labels) // earlier runs in this process
	for round := range 2 {
		if status, _, body := gw.chat("mr-model"); status != http.StatusOK {
			t.Fatalf("round %d: %d %s", round, status, body)
		}
		want++
		eventually(t, "requests_total after round "+fmt.Sprint(round), func() (bool, string) {
			got, _ := series(gw.scrape(), "caddy_llm_gateway_requests_total", labels)
			return got == want, fmt.Sprintf("requests_total = %v, want %v", got, want)
		})
		gw.reload("", site, true)
		// The old server closes idle keep-alive connections as it stops (a known Caddy
		// behaviour, see DESIGN-NOTES); start the next round on a fresh one.
		http.DefaultClient.CloseIdleConnections()
	}
}

// accessLogEntry is the part of Caddy's JSON access log entry the gateway adds.
type accessLogEntry struct {
	Request struct {
		URI string `json:"uri"`
	} `json:"request"`
	Status int `json:"status"`
	LLM    *struct {
		Model            string   `json:"model"`
		Backend          string   `json:"backend"`
		Tried            []string `json:"tried"`
		PromptTokens     int64    `json:"prompt_tokens"`
		CompletionTokens int64    `json:"completion_tokens"`
		TotalTokens      int64    `json:"total_tokens"`
		Stream           bool     `json:"stream"`
		TTFTMs           *int64   `json:"ttft_ms"`
	} `json:"llm"`
}

// TestAccessLogCarriesLLMFields checks that Caddy's access log line of each call has the
// gateway's "llm" object, with no directive beyond an ordinary `log`.
func TestAccessLogCarriesLLMFields(t *testing.T) {
	good, bad := fake(t, "al-good"), fake(t, "al-bad")
	bad.Update(func(s *fakeupstream.Settings) { s.Status = http.StatusInternalServerError })
	logPath := filepath.Join(t.TempDir(), "access.log")
	gw := startGateway(t, "", fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}\n", logPath)+
		gatewaySite("",
			clientBlock("al-good", good.URL(), "match exact al-chat"),
			clientBlock("al-bad", bad.URL(), "match exact al-fail", "fallback al-chat")))

	for i, tc := range []struct {
		body       string
		model      string
		backend    string
		tried      []string
		prompt     int64
		completion int64
		stream     bool
	}{
		{`{"model":"al-chat","messages":[{"role":"user","content":"hi"}]}`, "al-chat", "al-good", []string{"al-good"},
			fakeupstream.DefaultPromptTokens, fakeupstream.DefaultCompletionTokens, false},
		{`{"model":"al-chat","stream":true,"messages":[{"role":"user","content":"hi"}]}`, "al-chat", "al-good", []string{"al-good"},
			fakeupstream.DefaultPromptTokens, fakeupstream.DefaultChunks, true},
		{`{"model":"al-fail","messages":[{"role":"user","content":"hi"}]}`, "al-chat", "al-good", []string{"al-bad", "al-good"},
			fakeupstream.DefaultPromptTokens, fakeupstream.DefaultCompletionTokens, false},
	} {
		// A distinct query string per call identifies its log line.
		uri := fmt.Sprintf("/v1/chat/completions?call=%d", i)
		if status, _, body := gw.post(uri, "application/json", tc.body); status != http.StatusOK {
			t.Fatalf("call %d: %d %s", i, status, body)
		}
		var e accessLogEntry
		eventually(t, "access log line of call "+fmt.Sprint(i), func() (bool, string) {
			var ok bool
			e, ok = findAccessLog(t, logPath, uri)
			return ok, "no access log line for " + uri
		})
		if e.LLM == nil {
			t.Fatalf("call %d: access log line has no llm object", i)
		}
		l := e.LLM
		if l.Model != tc.model || l.Backend != tc.backend || strings.Join(l.Tried, ",") != strings.Join(tc.tried, ",") {
			t.Errorf("call %d: model=%q backend=%q tried=%v, want %q %q %v", i, l.Model, l.Backend, l.Tried, tc.model, tc.backend, tc.tried)
		}
		if l.PromptTokens != tc.prompt || l.CompletionTokens != tc.completion || l.TotalTokens != tc.prompt+tc.completion {
			t.Errorf("call %d: tokens %d+%d=%d, want %d+%d", i, l.PromptTokens, l.CompletionTokens, l.TotalTokens, tc.prompt, tc.completion)
		}
		if l.Stream != tc.stream || (l.TTFTMs != nil) != tc.stream {
			t.Errorf("call %d: stream=%v ttft_ms=%v, want stream=%v with ttft_ms only on streams", i, l.Stream, l.TTFTMs, tc.stream)
		}
	}

	// Requests the gateway passes on are logged without the object.
	if status, _, _ := gw.get("/not-an-api-path"); status == 0 {
		t.Fatal("no answer")
	}
	var e accessLogEntry
	eventually(t, "access log line of a non-API request", func() (bool, string) {
		var ok bool
		e, ok = findAccessLog(t, logPath, "/not-an-api-path")
		return ok, "no access log line"
	})
	if e.LLM != nil {
		t.Errorf("non-API request logged with llm fields: %+v", *e.LLM)
	}
}

// findAccessLog returns the entry of the access log at path whose request URI is uri.
func findAccessLog(t *testing.T, path, uri string) (accessLogEntry, bool) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return accessLogEntry{}, false
		}
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e accessLogEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // a line still being written
		}
		if e.Request.URI == uri {
			return e, true
		}
	}
	return accessLogEntry{}, false
}

// TestMetricsLabelValuesBounded checks that no label value exceeds 128 bytes (SPEC §10): long
// model names, which keyword rules route, are counted as "other", and so is a configured client
// name past the bound, so callers cannot grow /metrics with long names.
func TestMetricsLabelValuesBounded(t *testing.T) {
	up := fake(t, "mb-up")
	longClient := "mb-" + strings.Repeat("c", 140)
	gw := startGateway(t, "", "\tmetrics /metrics\n"+gatewaySite("",
		clientBlock("mb-up", up.URL(), "match keyword mb-model"),
		clientBlock(longClient, up.URL(), "match exact mb-exact")))
	const ns = "caddy_llm_gateway_"
	other := map[string]string{"model": "other", "backend": "mb-up", "endpoint": "chat.completions", "code": "200"}
	toLong := map[string]string{"model": "mb-exact", "backend": "other", "endpoint": "chat.completions", "code": "200"}
	base := gw.scrape()
	otherBefore, _ := series(base, ns+"requests_total", other)
	longBefore, _ := series(base, ns+"requests_total", toLong)

	// Distinct names of 129 to 256 bytes: routed (the request limit is 256 bytes), never labels.
	for _, n := range []int{129, 200, 256} {
		model := "mb-model-" + strings.Repeat(fmt.Sprint(n%10), n-len("mb-model-"))
		if status, _, body := gw.chat(model); status != http.StatusOK {
			t.Fatalf("%d-byte model: %d %s", n, status, body)
		}
	}
	if status, _, body := gw.chat("mb-exact"); status != http.StatusOK {
		t.Fatalf("long client: %d %s", status, body)
	}
	eventually(t, "calls counted under other", func() (bool, string) {
		fams := gw.scrape()
		got, _ := series(fams, ns+"requests_total", other)
		gotLong, _ := series(fams, ns+"requests_total", toLong)
		return got == otherBefore+3 && gotLong == longBefore+1,
			fmt.Sprintf("requests_total%s = %v, want %v; %s = %v, want %v", labelString(other), got, otherBefore+3, labelString(toLong), gotLong, longBefore+1)
	})
	if _, ok := series(gw.scrape(), ns+"breaker_state", map[string]string{"client": "other"}); !ok {
		t.Errorf("no breaker_state series for the long-named client under \"other\"")
	}
	for name, fam := range gw.scrape() {
		if !strings.HasPrefix(name, ns) {
			continue
		}
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if len(l.GetValue()) > 128 {
					t.Errorf("%s has a %d-byte %s label", name, len(l.GetValue()), l.GetName())
				}
			}
		}
	}
}
