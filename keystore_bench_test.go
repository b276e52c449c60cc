package llmgateway_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/llmgw/caddy-llm-gateway/internal/redistest"
)

// BenchmarkKeyStoreLatency measures the p50 latency of a keyed chat call through the gateway
// with no keys, with keys counted in-process, and with keys counted in a local redis-server
// (SPEC §14); docs/benchmarks.md records the figures and the command:
//
//	go test -run '^$' -bench BenchmarkKeyStoreLatency -benchtime 3000x .
func BenchmarkKeyStoreLatency(b *testing.B) {
	srv := redistest.Start(b)
	up := fake(b, "bench-up")
	const secret = "sk-bench-0123456789abcdef"
	key := keyBlock("bench", "secret "+secret, "rpm 100000000", "tpm 1000000000000", "concurrency 1000")
	for _, tc := range []struct{ name, keys string }{
		{"no-keys", ""},
		{"keys-in-process", keysBlock(key)},
		{"keys-redis", keysBlock("store "+srv.URL(0), key)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			gw := startGateway(b, "", gatewaySite(tc.keys, clientBlock("bench-up", up.URL(), "match keyword gpt")))
			for range 50 { // warm the connections and the store's scripts
				if code, err := keyedPost(gw.URL, secret); err != nil || code != http.StatusOK {
					b.Fatalf("warm-up: %d %v", code, err)
				}
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				code, err := keyedPost(gw.URL, secret)
				lat = append(lat, time.Since(start))
				if err != nil || code != http.StatusOK {
					b.Fatalf("%d %v", code, err)
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
