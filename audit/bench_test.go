//go:build unix

package audit

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkWriterThroughput measures sustained rows/s from Enqueue to commit
// with production defaults and realistic rows (redacted headers, bodies as
// named), and the process CPU time spent per row, which stays meaningful on
// a busy machine where wall-clock rates do not.
func BenchmarkWriterThroughput(b *testing.B) {
	for _, bc := range []struct {
		name      string
		req, resp int
		groups    int // distinct model, key and backend combinations: rollup rows per hour
	}{
		{"bodies=2KB+1KB", 2048, 1024, 1},
		{"bodies=none", 0, 0, 1},
		{"bodies=none,groups=120", 0, 0, 120},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchmarkWriter(b, bytes.Repeat([]byte("a"), bc.req), bytes.Repeat([]byte("b"), bc.resp), bc.groups)
		})
	}
}

func benchmarkWriter(b *testing.B, req, resp []byte, groups int) {
	cfg := writerConfig{
		path:          b.TempDir() + "/record.db",
		rotate:        true,
		checkInterval: DefaultCheckInterval,
		queueSize:     DefaultQueueSize,
		batchSize:     DefaultBatchSize,
		flushInterval: DefaultFlushInterval,
		policy:        &policy{bodies: bodyPolicy{mode: BodiesFull}, redact: newRedactor(DefaultRedactHeaders)},
	}
	w, err := newWriter(cfg)
	if err != nil {
		b.Fatal(err)
	}
	hdr := http.Header{
		"Authorization": {"Bearer sk-abcdefghijklmnopqrstuvwxyz0123456789"},
		"Content-Type":  {"application/json"},
		"User-Agent":    {"OpenAI/Python 1.50.0"},
		"Accept":        {"application/json"},
	}
	now := time.Now()
	// Names made up front: the producer allocates nothing per row.
	models, keys, backends := make([]string, 10), make([]string, 6), []string{"primary", "secondary"}
	for i := range models {
		models[i] = "model-" + strconv.Itoa(i)
	}
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	start := time.Now()
	// Fill the queue, let the writer empty it, repeat: the producer costs
	// next to nothing and never spins, so the CPU figure is the writer's.
	for i := 0; i < b.N; i++ {
		r := &Record{Time: now, IP: "192.0.2.1", Model: "gpt-4o", Type: "chat.completions",
			PromptTokens: 500, CompletionTokens: 200, TotalTokens: 700, Headers: hdr,
			Request: req, Response: resp, Backend: "primary", Status: 200, LatencyMs: 120,
			Endpoint: "/v1/chat/completions", RequestID: "req", Tried: "primary"}
		if g := i % groups; groups > 1 {
			r.Model, r.Key, r.Backend = models[g%len(models)], keys[g/len(models)%len(keys)], backends[g/len(models)/len(keys)%2]
			r.LatencyMs = int64(50 + i%2000)
		}
		if w.QueueDepth() == w.QueueCapacity() {
			if err := w.Sync(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		if !w.Enqueue(r) {
			b.Fatal("Enqueue refused below capacity")
		}
	}
	if err := w.Sync(context.Background()); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/row")
	if w.Written() != uint64(b.N) || w.Dropped() != 0 {
		b.Errorf("written %d dropped %d, want %d 0", w.Written(), w.Dropped(), b.N)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.close(ctx); err != nil {
		b.Fatal(err)
	}
}

// cpuTime returns the user+system CPU time the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
