//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

// auditHeaders are the request headers of every row the writer phase
// queues: those the load generator sends, with the Authorization the
// writer has to redact.
var auditHeaders = http.Header{
	"Authorization":   {"Bearer sk-bench-0123456789"},
	"Content-Type":    {"application/json"},
	"User-Agent":      {"Go-http-client/1.1"},
	"Accept-Encoding": {"gzip"},
}

// auditWriter measures the audit writer's sustained rate in this process:
// an llm_audit app configured like the audit target's (bodies full,
// rotation off, default queue, batch and flush interval) is fed rows as
// fast as it commits them for the phase's duration, through App.Acquire and
// Handle.Enqueue as the gateway does. Each row stores the 2 KB request the
// load generator sends and the answer the fake upstream gives to it. The
// count is of rows committed; CPU is this process's, which runs nothing else
// meanwhile, so it is the writer's plus the producer's small share.
func (b *bench) auditWriter(*target) (measurement, error) {
	if b.auditResponse == nil {
		resp, err := fetchAnswer(b.targets[targetDirect], b.body)
		if err != nil {
			return measurement{}, err
		}
		b.auditResponse = resp
	}
	b.writerRuns++
	dir := filepath.Join(b.dir, fmt.Sprintf("writer-%d", b.writerRuns))
	// A run writes hundreds of megabytes; keep none of them.
	defer os.RemoveAll(dir)

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	app := &audit.App{Path: filepath.Join(dir, "record.db"), Rotate: audit.RotateOff, Bodies: audit.BodiesFull}
	if err := app.Provision(ctx); err != nil {
		return measurement{}, fmt.Errorf("provisioning the audit app: %w", err)
	}
	h, err := app.Acquire()
	if err != nil {
		return measurement{}, errors.Join(fmt.Errorf("acquiring the audit writer: %w", err), app.Cleanup())
	}
	m, err := b.feed(h, b.plan.writerFor)
	// The last reference drains and closes the database, outside the
	// measurement.
	return m, errors.Join(err, h.Release(), app.Cleanup())
}

// feed fills h's writer's queue, waits until the writer has committed it
// and repeats until d has passed, then reports the rows committed and the
// CPU this process used meanwhile. The producer never spins and never sees
// the queue full, so nothing is dropped and its CPU stays small.
func (b *bench) feed(h audit.Handle, d time.Duration) (measurement, error) {
	w := h.Writer()
	ctx := context.Background()
	fill := func(n int) error {
		for range n {
			if !h.Enqueue(b.auditRecord()) {
				return errors.New("audit writer refused a row below its queue capacity")
			}
		}
		return w.Sync(ctx)
	}
	// Warm-up: the first batch pays for page cache and statement setup.
	if err := fill(2 * audit.DefaultBatchSize); err != nil {
		return measurement{}, err
	}
	written, failed := w.Written(), w.Failed()
	cpu0, err := processCPU()
	if err != nil {
		return measurement{}, err
	}
	start := time.Now()
	for time.Since(start) < d {
		if err := fill(w.QueueCapacity() - w.QueueDepth()); err != nil {
			return measurement{}, err
		}
	}
	elapsed := time.Since(start)
	cpu1, err := processCPU()
	if err != nil {
		return measurement{}, err
	}
	m := measurement{cpu: cpu1 - cpu0}
	m.ok, m.elapsed = int(w.Written()-written), elapsed
	if n := w.Failed() - failed; n > 0 {
		m.errs, m.firstErr = int(n), fmt.Errorf("%d rows failed to commit (see the log)", n)
	}
	return m, nil
}

// auditRecord returns a row like the gateway's for one non-stream call.
// The writer owns it once queued, so every row is a new one.
func (b *bench) auditRecord() *audit.Record {
	return &audit.Record{
		IP: "127.0.0.1", Model: "gpt-4o", Type: "chat.completions",
		PromptTokens: 500, CompletionTokens: 256, TotalTokens: 756,
		Headers: auditHeaders, Request: b.body, Response: b.auditResponse,
		Backend: "fake", Status: http.StatusOK, LatencyMs: 1, TTFTMs: -1,
		Endpoint: "/v1/chat/completions", RequestID: "bench", Tried: "fake",
	}
}

// fetchAnswer returns the body t answers to a non-stream request body.
func fetchAnswer(t *target, body []byte) ([]byte, error) {
	resp, err := t.client.Post(t.url, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("fetching an answer from %s: %w", t.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("fetching an answer from %s: %w", t.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching an answer from %s: status %d", t.name, resp.StatusCode)
	}
	return b, nil
}

// processCPU returns the user+system CPU time this process used so far, at
// microsecond resolution (/proc/<pid>/stat counts 10 ms ticks, too coarse
// for one process's short phase).
func processCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
