package llmgateway_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
	"github.com/llmgw/caddy-llm-gateway/internal/redistest"
)

// Several gateway nodes sharing limits through one Redis (SPEC §14). The nodes are real Caddy
// processes (this test binary run as caddy, see caddyBinary), so each has its own process-wide
// state and only the store is shared; one more node runs in this process with
// store_failure closed.

// fleetKeys is the keys block every node of the fleet tests uses.
func fleetKeys(storeURL, failure string) string {
	lines := []string{"store " + storeURL}
	if failure != "" {
		lines = append(lines, "store_failure "+failure)
	}
	return keysBlock(append(lines,
		keyBlock("rpm9", "secret sk-fleet-rpm9-0123456789", "rpm 9"),
		keyBlock("tpm250", "secret sk-fleet-tpm250-0123456789", "tpm 250"),
		keyBlock("conc2", "secret sk-fleet-conc2-0123456789", "concurrency 2"),
		keyBlock("probe", "secret sk-fleet-probe-0123456789", "rpm 100000"),
	)...)
}

// startFleetNode runs one gateway node as a process of its own.
func startFleetNode(t *testing.T, bin, site string) string {
	t.Helper()
	port := freePort(t)
	cf := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tauto_https off\n\tgrace_period 1s\n}\n:%d {\n\tbind 127.0.0.1\n%s}\n", port, site)
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	startCaddyProcess(t, bin, path)
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// fleetCall makes one chat call with key on node url and returns its status and duration.
func fleetCall(t *testing.T, url, key, model string) (int, time.Duration, string) {
	t.Helper()
	start := time.Now()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions",
		strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("calling %s: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start), string(body)
}

// roundRobin makes n calls with key over the nodes in turn and counts them by status.
func roundRobin(t *testing.T, nodes []string, key string, n int) map[int]int {
	t.Helper()
	got := make(map[int]int)
	for i := 0; i < n; i++ {
		code, _, _ := fleetCall(t, nodes[i%len(nodes)], key, "gpt-4o")
		got[code]++
	}
	return got
}

// openStream starts a streamed call that stays open (the upstream lingers) and returns its body
// once the first event arrived; closing it ends the call.
func openStream(t *testing.T, url, key string) io.ReadCloser {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions",
		strings.NewReader(`{"model":"slow-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return resp.Body
}

// waitOnStore polls node url with the probe key until its calls are counted in Redis again
// (after a store failure a node retries within a second).
func waitOnStore(t *testing.T, srv *redistest.Server, url string) {
	t.Helper()
	eventually(t, "node "+url+" to use the store again", func() (bool, string) {
		before, _ := srv.Do("ZCARD", "llmgw:{probe}:req")
		code, _, body := fleetCall(t, url, "sk-fleet-probe-0123456789", "gpt-4o")
		after, _ := srv.Do("ZCARD", "llmgw:{probe}:req")
		return code == http.StatusOK && after != before, fmt.Sprintf("%d %s; probe log %s → %s", code, body, before, after)
	})
}

// TestFleetSharedLimits: three nodes share one redis-server: rpm, tpm and concurrency hold for
// the fleet; each admission and each settlement is one EVALSHA; with redis-server killed, open
// nodes keep serving without added delay beyond the store timeout and a closed node answers
// 503; once it is back, the limits hold again without a reload.
func TestFleetSharedLimits(t *testing.T) {
	srv := redistest.Start(t)
	bin := caddyBinary(t)
	up := fake(t, "fleet-up")
	up.Update(func(s *fakeupstream.Settings) { s.Usage = fakeupstream.Usage{PromptTokens: 70, CompletionTokens: 30} })
	slow := fake(t, "fleet-slow")
	slow.Update(func(s *fakeupstream.Settings) { s.Chunks = 2; s.Linger = true })
	site := gatewaySite(fleetKeys(srv.URL(0), ""),
		clientBlock("fleet-up", up.URL(), "match keyword gpt"), clientBlock("fleet-slow", slow.URL(), "match keyword slow"))
	nodes := make([]string, 3)
	for i := range nodes {
		nodes[i] = startFleetNode(t, bin, site)
	}
	closedNode := startGateway(t, "", "\tmetrics /metrics\n"+gatewaySite(fleetKeys(srv.URL(0), "closed"),
		clientBlock("fleet-up", up.URL(), "match keyword gpt")))
	failuresBefore := seriesSum(closedNode.scrape(), "caddy_llm_gateway_key_store_failures_total", nil)

	// rpm 9: exactly 9 of 15 round-robin calls.
	if got := roundRobin(t, nodes, "sk-fleet-rpm9-0123456789", 15); got[http.StatusOK] != 9 || got[http.StatusTooManyRequests] != 6 {
		t.Fatalf("rpm 9 over 3 nodes, 15 calls: %v; want 9 admitted, 6 refused", got)
	}
	// tpm 250 at 100 tokens a call: admitted while the window is below 250, so 3 of 6.
	if got := roundRobin(t, nodes, "sk-fleet-tpm250-0123456789", 6); got[http.StatusOK] != 3 || got[http.StatusTooManyRequests] != 3 {
		t.Fatalf("tpm 250 over 3 nodes, 6 calls of 100 tokens: %v; want 3 admitted", got)
	}
	// concurrency 2: two open streams on two nodes hold both slots against the third node.
	s0 := openStream(t, nodes[0], "sk-fleet-conc2-0123456789")
	s1 := openStream(t, nodes[1], "sk-fleet-conc2-0123456789")
	if code, _, body := fleetCall(t, nodes[2], "sk-fleet-conc2-0123456789", "gpt-4o"); code != http.StatusTooManyRequests {
		t.Fatalf("third call with two streams open on other nodes: %d %s; want 429", code, body)
	}
	s0.Close()
	eventually(t, "node 0's stream to release its slot", func() (bool, string) {
		code, _, body := fleetCall(t, nodes[2], "sk-fleet-conc2-0123456789", "gpt-4o")
		return code == http.StatusOK, fmt.Sprint(code, body)
	})
	s1.Close()
	// Node 1 settles its stream once it sees the caller gone; wait for it before counting.
	eventually(t, "node 1's stream to be settled", func() (bool, string) {
		n, err := srv.Do("ZCARD", "llmgw:{conc2}:open")
		return err == nil && n == "0", fmt.Sprint("open calls: ", n, err)
	})

	// One EVALSHA per admission and one per settlement, from Redis's own statistics.
	before := srv.CommandCalls("evalsha")
	const calls = 12
	for i := 0; i < calls; i++ {
		if code, _, body := fleetCall(t, nodes[i%3], "sk-fleet-probe-0123456789", "gpt-4o"); code != http.StatusOK {
			t.Fatalf("probe call: %d %s", code, body)
		}
	}
	if got := srv.CommandCalls("evalsha") - before; got != 2*calls {
		t.Fatalf("%d EVALSHA for %d calls; want %d (one per admission, one per settlement)", got, calls, 2*calls)
	}

	// Baseline latency with the store up.
	var slowest time.Duration
	for i := 0; i < 6; i++ {
		_, d, _ := fleetCall(t, nodes[i%3], "sk-fleet-probe-0123456789", "gpt-4o")
		slowest = max(slowest, d)
	}

	srv.Stop()
	// Open nodes serve, each counting on its own: the rpm key is admitted again (its shared
	// window was full), and no call is slower than a second more than with the store up.
	for i := 0; i < 9; i++ {
		code, d, body := fleetCall(t, nodes[i%3], "sk-fleet-rpm9-0123456789", "gpt-4o")
		if code != http.StatusOK {
			t.Fatalf("open node %d, store down: %d %s; want served", i%3, code, body)
		}
		if d > slowest+time.Second {
			t.Fatalf("open node %d, store down: a call took %v (%v with the store up)", i%3, d, slowest)
		}
	}
	code, d, body := fleetCall(t, closedNode.URL, "sk-fleet-probe-0123456789", "gpt-4o")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"code":"key_store_unavailable"`) {
		t.Fatalf("closed node, store down: %d %s; want 503 key_store_unavailable", code, body)
	}
	if d > slowest+time.Second {
		t.Fatalf("closed node, store down: the refusal took %v", d)
	}
	if got := seriesSum(closedNode.scrape(), "caddy_llm_gateway_key_store_failures_total", nil); got <= failuresBefore {
		t.Errorf("key_store_failures_total %v after a refused call, %v before; want it counted", got, failuresBefore)
	}

	srv.Restart() // empty, as after a crash without persistence
	for _, n := range append(nodes, closedNode.URL) {
		waitOnStore(t, srv, n)
	}
	if got := roundRobin(t, nodes, "sk-fleet-rpm9-0123456789", 15); got[http.StatusOK] != 9 || got[http.StatusTooManyRequests] != 6 {
		t.Fatalf("rpm 9 after the store came back: %v; want 9 admitted, 6 refused", got)
	}
}

// clientIDs lists the ids of the connections redis-server has open.
func clientIDs(t *testing.T, srv *redistest.Server) map[string]bool {
	t.Helper()
	list, err := srv.Do("CLIENT", "LIST")
	if err != nil {
		t.Fatal(err)
	}
	ids := make(map[string]bool)
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				ids[id] = true
			}
		}
	}
	return ids
}

// TestFleetStorePoolSurvivesReload: a reload keeps the store's connection pool (the gateway's
// connection to Redis stays the same one) and the counters in it.
func TestFleetStorePoolSurvivesReload(t *testing.T) {
	srv := redistest.Start(t)
	up := fake(t, "fleet-reload")
	site := gatewaySite(fleetKeys(srv.URL(0), ""), clientBlock("fleet-reload", up.URL(), "match keyword gpt"))
	gw := startGateway(t, "", site)
	for i := 0; i < 5; i++ {
		if code, _, body := fleetCall(t, gw.URL, "sk-fleet-rpm9-0123456789", "gpt-4o"); code != http.StatusOK {
			t.Fatalf("call %d: %d %s", i, code, body)
		}
	}
	before := clientIDs(t, srv)
	gw.reload("", site, true)
	for i := 0; i < 4; i++ {
		if code, _, body := fleetCall(t, gw.URL, "sk-fleet-rpm9-0123456789", "gpt-4o"); code != http.StatusOK {
			t.Fatalf("call %d after the reload: %d %s", 5+i, code, body)
		}
	}
	if code, _, _ := fleetCall(t, gw.URL, "sk-fleet-rpm9-0123456789", "gpt-4o"); code != http.StatusTooManyRequests {
		t.Fatalf("10th call: %d; want 429 (the window survived the reload)", code)
	}
	after := clientIDs(t, srv)
	for id := range after {
		if !before[id] {
			// The one connection of srv.Do is new each time; any other is a new pool.
			delete(after, id)
		}
	}
	if len(after) == 0 {
		t.Fatalf("no connection of the gateway survived the reload: before %v", before)
	}
}
