package llmgateway

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/llmgw/caddy-llm-gateway/internal/reqbody"
	"github.com/llmgw/caddy-llm-gateway/keys"
	"github.com/llmgw/caddy-llm-gateway/router"
)

// BenchmarkAdmission10kKeys measures what gateway keys add to a call at 10,000 keys (SPEC §11:
// at most 2 µs of CPU): reading the caller's key from its headers, the lookup by SHA-256, the
// model allow-list, the store's admission, the x-ratelimit-* headers and the settlement at the
// call's end. Run with -cpu 1 for the CPU per call.
func BenchmarkAdmission10kKeys(b *testing.B) {
	const n = 10_000
	ks := make([]*keys.Key, n)
	headers := make([]http.Header, n)
	for i := range ks {
		secret := fmt.Sprintf("sk-%040d", i)
		ks[i] = &keys.Key{Name: fmt.Sprintf("key-%05d", i), Secret: secret, Models: []string{"gpt-4o*", "text-embedding-*"},
			RPM: 1 << 40, TPM: 1 << 50, Concurrency: 1 << 20, Budget: "1G tokens monthly"}
		headers[i] = http.Header{"Authorization": {"Bearer " + secret}, "Content-Type": {"application/json"}}
	}
	prices := []keys.Price{{Model: "gpt-4o", Input: 2.5, Output: 10}, {Model: "gpt-4o-mini", Input: 0.15, Output: 0.6}}
	set, err := keys.Compile(ks, prices, nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Date(2026, 11, 15, 12, 0, 0, 0, time.Local)
	h := &Handler{Config: router.Config{Prices: prices}}
	h.counters = &keyCounters{store: keys.NewMemory(), now: func() time.Time { return now }}
	w := make(http.Header)
	r := &http.Request{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now = now.Add(time.Microsecond)
		r.Header = headers[i%n]
		c := call{h: h, req: apiRequest{r: r, info: reqbody.Info{Model: "gpt-4o-mini"}}}
		var e *apiError
		if c.grant, e = h.admit(set, &c.req); e != nil {
			b.Fatal(e.message)
		}
		setQuotaHeaders(w, c.grant.quota())
		c.res.Model = "gpt-4o-mini"
		c.res.Usage.PromptTokens, c.res.Usage.CompletionTokens, c.res.Usage.TotalTokens = 100, 20, 120
		c.price()
		c.settle()
	}
}
