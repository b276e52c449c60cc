package llmgateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// manyClientsConfig is the JSON config of a gateway on port with n clients of base, client i
// serving model-i by a rule of kind ("exact" or "regex": ^model-i$).
func manyClientsConfig(t testing.TB, port, n int, base, kind string) []byte {
	t.Helper()
	clients := make([]map[string]any, n)
	for i := range clients {
		v := "model-" + strconv.Itoa(i)
		if kind == "regex" {
			v = "^" + v + "$"
		}
		clients[i] = map[string]any{
			"name":     "c" + strconv.Itoa(i),
			"base_url": base,
			"match":    []map[string]any{{"type": kind, "values": []string{v}}},
		}
	}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"writer": map[string]any{"output": "discard"}}}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"srv0": map[string]any{
			"listen":          []string{"127.0.0.1:" + strconv.Itoa(port)},
			"automatic_https": map[string]any{"disable": true},
			"routes":          []any{map[string]any{"handle": []any{map[string]any{"handler": "llm_gateway", "clients": clients}}}},
		}}}},
	}
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rssKiB returns the process's resident set size.
func rssKiB(t testing.TB) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// BenchmarkProvision loads a config of 1,000 and 10,000 clients of one base_url and reports
// how long caddy.Load took and the heap and RSS it added. Run with -benchtime 1x.
func BenchmarkProvision(b *testing.B) {
	up := fake(b, "up")
	for _, n := range []int{1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			g := newGateway(b)
			cfg := manyClientsConfig(b, g.port, n, up.URL(), "regex")
			var ms runtime.MemStats
			for b.Loop() {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				heap0, rss0 := ms.HeapAlloc, rssKiB(b)
				start := time.Now()
				if err := caddy.Load(cfg, true); err != nil {
					b.Fatal(err)
				}
				elapsed := time.Since(start)
				runtime.GC()
				runtime.ReadMemStats(&ms)
				b.ReportMetric(float64(elapsed.Milliseconds()), "ms-load")
				b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(heap0))/(1<<20), "MiB-heap")
				b.ReportMetric(float64(rssKiB(b)-rss0)/1024, "MiB-RSS")
				b.StopTimer()
				if err := caddy.Stop(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// TestClientsShareTransport checks that clients of one base_url and transport config share one
// transport, connection pool included, and that a client whose transport config differs gets
// its own.
func TestClientsShareTransport(t *testing.T) {
	up := newConnUpstream(t, "up")
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("alpha", up.URL, "match exact gpt-a"),
		clientBlock("beta", up.URL, "match exact gpt-b"),
		clientBlock("gamma", up.URL, "match exact gpt-c", "transport http {\n\t\t\t\tdial_timeout 5s\n\t\t\t}")))
	waitModel(t, gw, "gpt-a", "alpha", 0)
	conn := up.lastConn()
	waitModel(t, gw, "gpt-b", "beta", 0)
	if got := up.lastConn(); got != conn {
		t.Errorf("beta's call came on connection %s, want alpha's idle %s: the clients do not share a pool", got, conn)
	}
	waitModel(t, gw, "gpt-c", "gamma", 0)
	if got := up.lastConn(); got == conn {
		t.Errorf("gamma, with a transport config of its own, used alpha's connection %s", conn)
	}
}

// TestYAMLEditSharedTransport checks reloads of a shared transport: it stays, connection
// included, while a client that uses it stays unchanged, and is cleaned up, its idle
// connection closed, once the last such client is replaced.
func TestYAMLEditSharedTransport(t *testing.T) {
	up := newConnUpstream(t, "up")
	yaml := func(names ...string) string {
		s := "openai_clients:\n"
		for _, n := range names {
			s += fmt.Sprintf("  - name: %s\n    base_url: %s\n    model_match:\n      type: exact\n      value: [\"m-%s\"]\n", n, up.URL, n)
		}
		return s
	}
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	writeFileAtomic(t, cfgPath, yaml("alpha", "beta"))
	gw := startGateway(t, "", gatewaySite("config "+cfgPath))
	waitModel(t, gw, "m-alpha", "alpha", 0)
	conn := up.lastConn()

	// alpha goes; beta, unchanged, keeps the transport the two shared.
	writeFileAtomic(t, cfgPath, yaml("beta"))
	waitModel(t, gw, "m-beta", "beta", applyDeadline)
	if got := up.lastConn(); got != conn {
		t.Errorf("after alpha left, beta's call came on connection %s, want the shared %s", got, conn)
	}
	if !up.isOpen(conn) {
		t.Fatalf("the shared connection %s was closed while beta uses it", conn)
	}

	// beta is replaced by gamma of the same base_url: the old transport goes.
	writeFileAtomic(t, cfgPath, yaml("gamma"))
	waitModel(t, gw, "m-gamma", "gamma", applyDeadline)
	if got := up.lastConn(); got == conn {
		t.Errorf("the replaced clients' connection %s served the new client", conn)
	}
	up.waitClosed(t, conn, applyDeadline, "idle connection of the replaced shared transport")
}

// BenchmarkRoutingScale sends non-stream chats at concurrency 16 through a gateway of 1 and of
// 10,000 clients of one upstream, each client serving one model (`match exact model-i` or
// `match regex ^model-i$`), every call for the last client's model. It reports the process's
// CPU time per call (gateway, load and fake upstream all run in this process, so compare the
// configs with each other, not with bench/'s figures).
func BenchmarkRoutingScale(b *testing.B) {
	up := fake(b, "up")
	for _, kind := range []string{"exact", "regex"} {
		for _, n := range []int{1, 10000} {
			b.Run(fmt.Sprintf("%s/%d", kind, n), func(b *testing.B) {
				g := newGateway(b)
				if err := caddy.Load(manyClientsConfig(b, g.port, n, up.URL(), kind), true); err != nil {
					b.Fatal(err)
				}
				body := `{"model":"model-` + strconv.Itoa(n-1) + `","messages":[{"role":"user","content":"hi"}]}`
				tr := &http.Transport{MaxIdleConnsPerHost: 64}
				defer tr.CloseIdleConnections()
				hc := &http.Client{Transport: tr}
				post := func() error {
					resp, err := hc.Post(g.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
					if err != nil {
						return err
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						return fmt.Errorf("status %d", resp.StatusCode)
					}
					return nil
				}
				if err := post(); err != nil {
					b.Fatal(err)
				}
				// Loading the config made garbage; collect it now, not while calls are counted.
				runtime.GC()
				cpu0 := cpuTime(b)
				b.ResetTimer()
				b.SetParallelism(8) // 16 goroutines on this machine's 2 CPUs
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := post(); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "µs-CPU/call")
			})
		}
	}
}

// cpuTime returns the CPU time this process used so far, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Skip("no getrusage")
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkModelsScale answers GET /v1/models at 1,000 and 10,000 clients of one upstream, each
// client serving one exact model: cold (the first call, which fetches) and warm (cached lists).
func BenchmarkModelsScale(b *testing.B) {
	up := fake(b, "up")
	for _, n := range []int{1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			g := newGateway(b)
			if err := caddy.Load(manyClientsConfig(b, g.port, n, up.URL(), "exact"), true); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			status, _, body := g.get("/v1/models")
			if status != http.StatusOK {
				b.Fatalf("status %d: %.200s", status, body)
			}
			b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-cold")
			b.ResetTimer()
			for b.Loop() {
				if status, _, _ := g.get("/v1/models"); status != http.StatusOK {
					b.Fatalf("status %d", status)
				}
			}
		})
	}
}

// TestModelsFetchedOncePerUpstream checks that clients sending the same /models request to one
// upstream share one fetch, that each still lists only the models its rules match, in config
// order, and that a client with its own api_key fetches its own list.
func TestModelsFetchedOncePerUpstream(t *testing.T) {
	up := fake(t, "up")
	up.Update(func(s *fakeupstream.Settings) { s.Models = []string{"z-3", "a-1", "b-2", "a-2", "other"} })
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("b", up.URL(), "match keyword b-"),
		clientBlock("a", up.URL(), "match regex ^a-", "match exact extra"),
		clientBlock("z", up.URL(), "match exact z-3 a-1"),
		clientBlock("keyed", up.URL(), "api_key sk-own", "match keyword other")))
	for range 2 {
		status, _, body := gw.get("/v1/models")
		if status != http.StatusOK {
			t.Fatalf("models: %d %s", status, body)
		}
		var doc struct {
			Data []struct{ ID, OwnedBy string }
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range doc.Data {
			ids = append(ids, m.ID)
		}
		// b's share, then a's (a-1 before a-2 as listed), then z's z-3 (its a-1 is there
		// already), the keyed client's, then the exact names no list holds.
		if want := "b-2,a-1,a-2,z-3,other,extra"; strings.Join(ids, ",") != want {
			t.Errorf("models = %s, want %s", strings.Join(ids, ","), want)
		}
	}
	if n := up.Count("/v1/models"); n != 2 {
		t.Errorf("upstream /models fetched %d times, want 2: one for the three pass-through clients, one for the keyed one", n)
	}
}
