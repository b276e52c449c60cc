package llmgateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// Soak shape (SPEC §2.3, issue 7): soakWorkers callers for soakDuration while soakSwaps config
// swaps happen at even intervals (kept small enough that -count=20 of the reload tests fits go
// test's default 10-minute timeout under the race detector). A long stream is started before every longStreamEvery-th
// swap, so several streams span one.
const (
	soakWorkers     = 8
	soakSwaps       = 12
	longStreamEvery = 4
	longChunks      = 10
	longChunkDelay  = 250 * time.Millisecond // a long stream lasts ~2.3 s, longer than grace_period
	longModel       = "slow-model"
	longContent     = "a long answer that keeps streaming across a config swap"
)

// soakDuration is how long a soak runs: 4 s, or LLMGW_SOAK_DURATION (a Go duration) for a
// longer run by hand. The swaps, not the duration, are what the soak tests: soakSwaps of them
// happen whatever the duration.
func soakDuration(t *testing.T) time.Duration {
	if v := os.Getenv("LLMGW_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			t.Fatalf("LLMGW_SOAK_DURATION=%q: want a duration of 1s or more", v)
		}
		return d
	}
	return 4 * time.Second
}

// resender sends a request a second time when the first attempt got no byte of response, as
// the OpenAI SDKs do. During a reload the old server closes its idle keep-alive connections
// (DESIGN-NOTES, Reload and lifecycle); a caller reusing one at that instant gets an error
// before its request reached any handler. Anything that got a byte back is never resent.
//
// The resend goes over a new connection: the pool may hold several connections the old server
// is closing at that instant, and an SDK's retry backoff (0.5 s and up) outlasts them all.
type resender struct {
	base    http.RoundTripper
	fresh   http.RoundTripper // keep-alives off: every resend dials
	resends atomic.Int64

	mu     sync.Mutex
	causes map[string]int // error text of the first attempt → resends
}

func (rs *resender) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, gotByte, err := rs.try(rs.base, req)
	// A resend can meet the same fate: a new connection the kernel queued on the old server's
	// socket just before it closed is reset with the queue. The SDKs retry twice; so does this.
	for range maxResends {
		if err == nil || gotByte || req.GetBody == nil || req.Context().Err() != nil {
			break
		}
		body, berr := req.GetBody()
		if berr != nil {
			break
		}
		rs.resends.Add(1)
		rs.mu.Lock()
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:] // drop the addresses
		}
		rs.causes[msg]++
		rs.mu.Unlock()
		again := req.Clone(req.Context())
		again.Body = body
		resp, gotByte, err = rs.try(rs.fresh, again)
	}
	return resp, err
}

// maxResends is how often a request that got no byte back is sent again, as the OpenAI SDKs'
// default max_retries.
const maxResends = 2

// try runs one attempt and tells whether any byte of the response arrived.
func (rs *resender) try(rt http.RoundTripper, req *http.Request) (*http.Response, bool, error) {
	var got atomic.Bool
	trace := &httptrace.ClientTrace{GotFirstResponseByte: func() { got.Store(true) }}
	resp, err := rt.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	return resp, got.Load(), err
}

// soak drives mixed traffic at a gateway and keeps the score.
type soak struct {
	t      *testing.T
	gw     *gateway
	rs     *resender
	client *http.Client
	sdk    openai.Client

	mu       sync.Mutex
	backends map[string]int
	failures []string
	answers  []answer
}

// answer is one completed call: when it was sent and which client answered.
type answer struct {
	sent    time.Time
	backend string
}

func newSoak(t *testing.T, gw *gateway) *soak {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2 * soakWorkers // reuse keep-alive connections: the risky case
	fresh := tr.Clone()
	fresh.DisableKeepAlives = true
	rs := &resender{base: tr, fresh: fresh, causes: map[string]int{}}
	s := &soak{t: t, gw: gw, rs: rs, client: &http.Client{Transport: rs, Timeout: 30 * time.Second}, backends: map[string]int{}}
	s.sdk = gw.client(option.WithHTTPClient(s.client))
	t.Cleanup(tr.CloseIdleConnections)
	return s
}

// fail records a failed call; workers run outside the test goroutine.
func (s *soak) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, fmt.Sprintf(format, args...))
}

func (s *soak) record(sent time.Time, backend string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.backends[backend]++
	s.answers = append(s.answers, answer{sent: sent, backend: backend})
}

// call makes one request of the given kind for gpt-4 and checks the answer is whole: status
// 200, a backend the test configured, and that backend's full content (streams: every chunk
// and the end marker). It returns the backend, or "" after recording a failure.
func (s *soak) call(kind int) string {
	sent := time.Now()
	var backend string
	var err error
	switch kind % 3 {
	case 0:
		backend, err = s.plain()
	case 1:
		backend, err = s.rawStream("gpt-4", nil)
	default:
		backend, err = s.sdkStream()
	}
	if err != nil {
		s.fail("%s (kind %d, sent %s)", err, kind%3, sent.Format("15:04:05.000"))
		return ""
	}
	s.record(sent, backend)
	return backend
}

func (s *soak) plain() (string, error) {
	req, _ := http.NewRequest(http.MethodPost, s.gw.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("plain: %w", err)
	}
	defer resp.Body.Close()
	var v struct {
		Choices []struct{ Message struct{ Content string } }
	}
	backend := resp.Header.Get("X-LLM-Gateway-Backend")
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", fmt.Errorf("plain: status %d backend %q: decoding: %w", resp.StatusCode, backend, err)
	}
	if resp.StatusCode != 200 || len(v.Choices) != 1 || backend == "" || v.Choices[0].Message.Content != "hello from "+backend {
		return "", fmt.Errorf("plain: status %d backend %q answer %+v", resp.StatusCode, backend, v)
	}
	return backend, nil
}

// rawStream reads a chat stream event by event. firstChunk, when set, is called once after the
// first content chunk arrived. It checks every chunk, the finish_reason and [DONE].
func (s *soak) rawStream(model string, firstChunk func()) (string, error) {
	req, _ := http.NewRequest(http.MethodPost, s.gw.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"`+model+`","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", model, err)
	}
	defer resp.Body.Close()
	backend := resp.Header.Get("X-LLM-Gateway-Backend")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return "", fmt.Errorf("stream %s: status %d %q backend %q", model, resp.StatusCode, resp.Header.Get("Content-Type"), backend)
	}
	var content strings.Builder
	chunks, stopped, done := 0, false, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if done {
			return "", fmt.Errorf("stream %s: data after [DONE]: %s", model, data)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var ev struct {
			Choices []struct {
				Delta        struct{ Content string }
				FinishReason string `json:"finish_reason"`
			}
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return "", fmt.Errorf("stream %s: bad event %q: %w", model, data, err)
		}
		for _, c := range ev.Choices {
			content.WriteString(c.Delta.Content)
			stopped = stopped || c.FinishReason == "stop"
			chunks++
			if chunks == 1 && firstChunk != nil {
				firstChunk()
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("stream %s: truncated after %d chunks (%q): %w", model, chunks, content.String(), err)
	}
	want := "hello from " + backend
	if model == longModel {
		want = longContent
		if chunks != longChunks {
			return "", fmt.Errorf("stream %s: %d chunks, want %d", model, chunks, longChunks)
		}
	}
	if !done || !stopped || content.String() != want {
		return "", fmt.Errorf("stream %s: truncated: done=%v stop=%v content %q, want %q", model, done, stopped, content.String(), want)
	}
	return backend, nil
}

func (s *soak) sdkStream() (string, error) {
	var resp *http.Response
	stream := s.sdk.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:    "gpt-4",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}, option.WithResponseInto(&resp))
	defer stream.Close()
	var content strings.Builder
	stopped := false
	for stream.Next() {
		for _, c := range stream.Current().Choices {
			content.WriteString(c.Delta.Content)
			stopped = stopped || c.FinishReason == "stop"
		}
	}
	if err := stream.Err(); err != nil {
		return "", fmt.Errorf("sdk stream: %w (after %q)", err, content.String())
	}
	if resp == nil {
		return "", errors.New("sdk stream: no response")
	}
	backend := resp.Header.Get("X-LLM-Gateway-Backend")
	if !stopped || backend == "" || content.String() != "hello from "+backend {
		return "", fmt.Errorf("sdk stream: backend %q stop=%v content %q", backend, stopped, content.String())
	}
	return backend, nil
}

// run starts the workers; stop ends them and waits.
func (s *soak) run() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range soakWorkers {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i++ {
				s.call(i)
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// longStream is a slow stream started before a swap; its result is read after the soak.
type longStream struct {
	started <-chan struct{} // closed when the first chunk arrived
	done    chan struct{}
	ended   time.Time
	err     error
}

// startLong starts a long stream and returns once its first chunk arrived, so the swap that
// follows happens in its middle.
func (s *soak) startLong() *longStream {
	started := make(chan struct{})
	ls := &longStream{started: started, done: make(chan struct{})}
	go func() {
		defer close(ls.done)
		var once sync.Once
		_, ls.err = s.rawStream(longModel, func() { once.Do(func() { close(started) }) })
		ls.ended = time.Now()
		once.Do(func() { close(started) })
	}()
	<-started
	return ls
}

// check waits for the long streams and asserts the soak's outcome: no failure, no truncated
// stream, both configs seen, every long stream complete and ended after its swap.
func (s *soak) check(longs []*longStream, swappedAt []time.Time, elapsed time.Duration) {
	t := s.t
	for i, ls := range longs {
		<-ls.done
		switch {
		case ls.err != nil:
			t.Errorf("long stream %d: %v", i, ls.err)
		case !ls.ended.After(swappedAt[i]):
			t.Errorf("long stream %d ended at %s, before its swap at %s", i, ls.ended.Format("15:04:05.000"), swappedAt[i].Format("15:04:05.000"))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	total := len(s.answers) + len(s.failures)
	t.Logf("%d requests in %v (%d long streams spanning a swap): %d answered %v, %d failed, %d resent after no byte of response %v",
		total, elapsed.Round(time.Millisecond), len(longs), len(s.answers), s.backends, len(s.failures), s.rs.resends.Load(), s.rs.causes)
	for i, f := range s.failures {
		if i == 10 {
			t.Errorf("… %d more failures", len(s.failures)-i)
			break
		}
		t.Errorf("failed: %s", f)
	}
	if s.backends["alpha"] == 0 || s.backends["beta"] == 0 {
		t.Errorf("answers by backend %v: both configs must be observed", s.backends)
	}
	if len(s.answers) < 10*soakSwaps {
		t.Errorf("only %d answers: the load was too light to test anything", len(s.answers))
	}
}

// soakFakes starts the upstreams of both configs and the slow one for long streams. alpha and
// beta stream in several paced chunks, so many streams are in flight at every swap.
func soakFakes(t *testing.T) (alpha, beta, slow *fakeupstream.Server) {
	alpha, beta, slow = fake(t, "alpha"), fake(t, "beta"), fake(t, "slow")
	for _, f := range []*fakeupstream.Server{alpha, beta} {
		f.Update(func(s *fakeupstream.Settings) { s.Chunks, s.ChunkDelay = 4, 10*time.Millisecond })
	}
	slow.Update(func(s *fakeupstream.Settings) {
		s.Chunks, s.ChunkDelay, s.Content = longChunks, longChunkDelay, longContent
	})
	return alpha, beta, slow
}

// TestReloadSoak reloads the Caddy config soakSwaps times, alternating two client sets, under load.
func TestReloadSoak(t *testing.T) {
	alpha, beta, slow := soakFakes(t)
	slowClient := clientBlock("slow", slow.URL(), "match exact "+longModel)
	sites := [2]string{
		gatewaySite("", clientBlock("alpha", alpha.URL(), "match exact gpt-4"), slowClient),
		gatewaySite("", clientBlock("beta", beta.URL(), "match exact gpt-4"), slowClient),
	}
	names := [2]string{"alpha", "beta"}
	gw := startGateway(t, "", sites[0])
	s := newSoak(t, gw)

	// swap k is in effect from loaded[k] until begun[k+1]; configs alternate from sites[1].
	var begun, loaded, longSwaps []time.Time
	var longs []*longStream
	start := time.Now()
	every := soakDuration(t) / soakSwaps
	stop := s.run()
	for k := range soakSwaps {
		time.Sleep(time.Until(start.Add(time.Duration(k+1) * every))) // pacing: waiting for time itself
		if k%longStreamEvery == 2 {
			longs = append(longs, s.startLong())
		}
		begun = append(begun, time.Now())
		gw.reload("", sites[(k+1)%2], true)
		loaded = append(loaded, time.Now())
		if k%longStreamEvery == 2 {
			longSwaps = append(longSwaps, loaded[k])
		}
	}
	time.Sleep(every / 2) // let the last config serve a while
	stop()
	s.check(longs, longSwaps, time.Since(start))

	// New calls use the new config: a call sent after swap k completed and before swap k+1
	// began must be answered by swap k's client. Caddy's Load returns once the goroutines that
	// stop the old servers were started, before they closed anything: until the old listener
	// is closed, the kernel still hands it some new connections (SO_REUSEPORT), and under the
	// race detector on two busy cores that took up to 1.5 s once. Those calls are served by the
	// old config and counted; the old server is gone by the end of grace_period (2 s here), so
	// an answer from the old config after that means the config went stale.
	const staleGrace = 2 * time.Second
	late := 0
	for _, a := range s.answers {
		for k := range loaded {
			if !a.sent.After(loaded[k]) || (k+1 < len(begun) && !a.sent.Before(begun[k+1])) {
				continue
			}
			if want := names[(k+1)%2]; a.backend != want {
				if a.sent.Sub(loaded[k]) < staleGrace {
					late++
				} else {
					t.Errorf("call sent %v after swap %d completed was answered by %s, want %s", a.sent.Sub(loaded[k]), k, a.backend, want)
				}
			}
		}
	}
	t.Logf("%d calls sent within %v after a reload returned were served by the old config", late, staleGrace)
}

// TestYAMLRewriteSoak rewrites the watched YAML soakSwaps times, alternating two client sets, under
// load. Each rewrite must be served (the slowest time is logged; SPEC §2.3 wants 2 s).
func TestYAMLRewriteSoak(t *testing.T) {
	alpha, beta, slow := soakFakes(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	yamls := [2]string{originYAML("alpha", alpha.URL()), originYAML("beta", beta.URL())}
	names := [2]string{"alpha", "beta"}
	writeFileAtomic(t, cfgPath, yamls[0])
	gw := startGateway(t, "", gatewaySite("config "+cfgPath, clientBlock("slow", slow.URL(), "match exact "+longModel)))
	s := newSoak(t, gw)
	if b := s.call(0); b != "alpha" {
		t.Fatalf("first call answered by %q, want alpha", b)
	}

	var longs []*longStream
	var longSwaps []time.Time
	var slowest time.Duration
	start := time.Now()
	every := soakDuration(t) / soakSwaps
	stop := s.run()
	for k := range soakSwaps {
		time.Sleep(time.Until(start.Add(time.Duration(k+1) * every))) // pacing: waiting for time itself
		if k%longStreamEvery == 2 {
			longs = append(longs, s.startLong())
		}
		want := names[(k+1)%2]
		writeFileAtomic(t, cfgPath, yamls[(k+1)%2])
		written := time.Now()
		// Probe until the new client answers; the probes are calls like the workers' and count.
		for i := 0; s.call(i) != want; i++ {
			if time.Since(written) > applyDeadline {
				stop()
				t.Fatalf("rewrite %d not serving after %v", k, applyDeadline)
			}
		}
		slowest = max(slowest, time.Since(written))
		if k%longStreamEvery == 2 {
			longSwaps = append(longSwaps, time.Now())
		}
	}
	time.Sleep(every / 2)
	stop()
	t.Logf("slowest rewrite to serve: %v", slowest.Round(time.Millisecond))
	s.check(longs, longSwaps, time.Since(start))
}

// TestReloadMemory reloads 100 times without traffic and checks the process does not grow:
// each generation loads transports, client state, a YAML watcher and metrics, and a leak of
// any of them shows up here.
func TestReloadMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/status")
	}
	a, b := fake(t, "a"), fake(t, "b")
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	writeFileAtomic(t, cfgPath, originYAML("from-yaml", a.URL()))
	// Client names alternate, so every reload loads new transports and new client state and
	// drops the old ones, rather than finding them shared.
	site := func(i int) string {
		n := strconv.Itoa(i % 2)
		return gatewaySite("config "+cfgPath,
			clientBlock("a"+n, a.URL(), "match exact gpt-4", "transport http {\n\t\t\t\tdial_timeout 5s\n\t\t\t}"),
			clientBlock("b"+n, b.URL(), "match exact gpt-4"))
	}
	gw := startGateway(t, "", site(0))
	if status, _, body := gw.chat("gpt-4"); status != 200 {
		t.Fatalf("chat: %d %s", status, body)
	}

	type sample struct {
		rssKiB     int64
		heap       uint64
		goroutines int
	}
	measure := func() sample {
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return sample{rssKiB: vmRSS(t), heap: ms.HeapAlloc, goroutines: runtime.NumGoroutine()}
	}
	var first sample
	for i := 1; i <= 100; i++ {
		gw.reload("", site(i), true)
		if i == 10 {
			first = measure()
		}
	}
	last := measure()
	t.Logf("after 10 reloads: RSS %d KiB, heap %d KiB, %d goroutines; after 100: RSS %d KiB, heap %d KiB, %d goroutines",
		first.rssKiB, first.heap>>10, first.goroutines, last.rssKiB, last.heap>>10, last.goroutines)
	if float64(last.rssKiB) > 1.1*float64(first.rssKiB) {
		t.Errorf("RSS grew from %d KiB to %d KiB over 90 reloads (> 10%%)", first.rssKiB, last.rssKiB)
	}
	// RSS includes the race detector's shadow memory, which grows slowly across reloads even
	// with plain Caddy and no gateway; the Go heap is the exact measure of what the gateway keeps.
	if float64(last.heap) > 1.1*float64(first.heap) {
		t.Errorf("heap grew from %d KiB to %d KiB over 90 reloads (> 10%%)", first.heap>>10, last.heap>>10)
	}
	// Goroutines are the sharper signal: a leaked watcher or connection pool leaves one per
	// reload. A few may be in the middle of exiting.
	if last.goroutines > first.goroutines+5 {
		t.Errorf("goroutines grew from %d to %d over 90 reloads", first.goroutines, last.goroutines)
	}
	if status, h, body := gw.chat("gpt-4"); status != 200 || h.Get("X-LLM-Gateway-Backend") == "" {
		t.Errorf("after 100 reloads: %d backend %q %s", status, h.Get("X-LLM-Gateway-Backend"), body)
	}
}

// vmRSS returns the resident set size of this process in KiB.
func vmRSS(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS line %q: %v", line, err)
			}
			return kib
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// TestReloadKeepsBreakerState opens a client's breaker, reloads, and checks the state carried
// over only when the client's name and base_url are unchanged (SPEC §2.3).
func TestReloadKeepsBreakerState(t *testing.T) {
	const hc = "health_check {\n\t\t\tfailure_threshold 1\n\t\t\tcooldown 1h\n\t\t\tmax_cooldown 2h\n\t\t}"
	for _, tc := range []struct {
		name string
		// reloadTo returns the clients of the new config, given the failing upstream's URL and
		// another upstream's.
		reloadTo func(failing, other string) []string
		client   string // whose state to read after the reload
		want     string
	}{
		{"same name and base_url", func(failing, other string) []string {
			// Other settings of the client change, and a client is added: still the same client.
			return []string{clientBlock("flaky", failing, "match exact m", "priority 5"), clientBlock("extra", other, "match exact n")}
		}, "flaky", "open"},
		{"base_url changed", func(failing, other string) []string {
			return []string{clientBlock("flaky", other, "match exact m"), clientBlock("extra", other, "match exact n")}
		}, "flaky", "closed"},
		{"renamed", func(failing, other string) []string {
			return []string{clientBlock("flaky2", failing, "match exact m"), clientBlock("extra", other, "match exact n")}
		}, "flaky2", "closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failing, other := fake(t, "failing"), fake(t, "other")
			failing.Update(func(s *fakeupstream.Settings) { s.Status = 500 })
			gw := startGateway(t, "", gatewaySite(hc, clientBlock("flaky", failing.URL(), "match exact m")))
			if status, _, body := gw.chat("m"); status != 500 {
				t.Fatalf("chat: %d %s, want the upstream's 500", status, body)
			}
			if got := healthStates(t, gw); got["flaky"] != "open" {
				t.Fatalf("before the reload: %v, want flaky open", got)
			}
			gw.reload("", gatewaySite(hc, tc.reloadTo(failing.URL(), other.URL())...), true)
			got := healthStates(t, gw)
			if _, ok := got["extra"]; !ok {
				t.Fatalf("health %v lacks the new config's client", got)
			}
			if got[tc.client] != tc.want {
				t.Errorf("after the reload %s is %q, want %q (health %v)", tc.client, got[tc.client], tc.want, got)
			}
		})
	}
}

// healthStates returns the breaker state of each client from GET /health.
func healthStates(t *testing.T, gw *gateway) map[string]string {
	t.Helper()
	status, _, body := gw.get("/health")
	var v struct {
		Clients map[string]struct{ State string }
	}
	if err := json.Unmarshal([]byte(body), &v); status != 200 || err != nil {
		t.Fatalf("health: %d %s (%v)", status, body, err)
	}
	states := make(map[string]string, len(v.Clients))
	for name, c := range v.Clients {
		states[name] = c.State
	}
	return states
}
