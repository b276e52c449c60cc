package llmgateway_test

import (
	"bytes"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// BenchmarkNonStream sends non-stream chats of about 2 KB, one at a time, through a gateway in
// this process to a fake upstream answering 1 KiB of content, as bench/'s "non-stream 2 KB, c=1"
// phase does. allocs/op and B/op count the whole process (load client, gateway and fake
// upstream), so compare them between versions of the gateway, not with bench/'s figures.
func BenchmarkNonStream(b *testing.B) {
	up := fake(b, "up")
	up.Update(func(s *fakeupstream.Settings) {
		s.Content = strings.Repeat("The quick brown fox jumps over the lazy dog. ", 23)[:1024]
	})
	gw := startGateway(b, "", gatewaySite("", clientBlock("fake", up.URL(), "match keyword gpt")))
	head := `{"model":"gpt-4o","stream":false,"messages":[{"role":"user","content":"`
	const tail = `"}]}`
	n := 2048 - len(head) - len(tail)
	body := []byte(head + strings.Repeat("lorem ipsum ", n/12+1)[:n] + tail)

	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	url := gw.URL + "/v1/chat/completions"
	post := func() error {
		resp, err := hc.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := post(); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	cpu0 := cpuTime(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := post(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "µs-CPU/call")
}
