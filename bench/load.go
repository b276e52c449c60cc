//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// chatBody returns a chat completion request for model of about size bytes.
func chatBody(model string, size int, stream bool) []byte {
	head := `{"model":"` + model + `","stream":` + strconv.FormatBool(stream) + `,"messages":[{"role":"user","content":"`
	const tail = `"}]}`
	n := max(size-len(head)-len(tail), 0)
	return []byte(head + strings.Repeat("lorem ipsum ", n/12+1)[:n] + tail)
}

// newClient returns a keep-alive client for one target that never shares a
// connection with another target and never asks for compression. With h2c it
// speaks only HTTP/2 without TLS (prior knowledge), many streams to a
// connection.
func newClient(idle int, h2c bool) *http.Client {
	t := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   idle,
		IdleConnTimeout:       time.Minute,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
	}
	if h2c {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: t}
}

// sample is what one load phase observed.
type sample struct {
	ok, errs int
	firstErr error
	lat      []time.Duration // per successful request: until the body's end
	ttft     []time.Duration // streams: until the first data event
	elapsed  time.Duration
}

func (s *sample) add(o outcome) {
	if o.err != nil {
		s.errs++
		if s.firstErr == nil {
			s.firstErr = o.err
		}
		return
	}
	s.ok++
	s.lat = append(s.lat, o.lat)
	if o.ttft > 0 {
		s.ttft = append(s.ttft, o.ttft)
	}
}

func (s *sample) merge(o *sample) {
	s.ok += o.ok
	s.errs += o.errs
	if s.firstErr == nil {
		s.firstErr = o.firstErr
	}
	s.lat = append(s.lat, o.lat...)
	s.ttft = append(s.ttft, o.ttft...)
}

type outcome struct {
	lat, ttft time.Duration
	err       error
}

// benchKey is the bearer key of every request. Targets without a keys block ignore it; the keyed
// targets of the "keys" phase know it, with limits no phase reaches.
const benchKey = "sk-bench-0123456789"

// post sends one chat completion request as every phase does.
func post(ctx context.Context, c *http.Client, url string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+benchKey)
	return c.Do(req)
}

// request sends one chat completion and reads the whole answer. A stream
// must bring at least minChunks data events and end with [DONE].
func request(ctx context.Context, c *http.Client, url string, body []byte, stream bool, minChunks int) outcome {
	start := time.Now()
	resp, err := post(ctx, c, url, body)
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return outcome{err: fmt.Errorf("status %d", resp.StatusCode)}
	}
	if !stream {
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return outcome{err: err}
		}
		return outcome{lat: time.Since(start)}
	}
	var o outcome
	chunks, done := 0, false
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadSlice('\n')
		if data, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			if o.ttft == 0 {
				o.ttft = time.Since(start)
			}
			if bytes.HasPrefix(data, []byte("[DONE]")) {
				done = true
			} else {
				chunks++
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return outcome{err: err}
		}
	}
	if !done || chunks < minChunks {
		return outcome{err: fmt.Errorf("stream ended after %d data events, [DONE] seen: %v", chunks, done)}
	}
	o.lat = time.Since(start)
	return o
}

// closedLoop runs conc workers that each send requests back to back for d.
func closedLoop(c *http.Client, url string, body []byte, stream bool, minChunks, conc int, d time.Duration) sample {
	var (
		mu    sync.Mutex
		total sample
		wg    sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range conc {
		wg.Go(func() {
			var s sample
			for time.Now().Before(deadline) {
				s.add(request(context.Background(), c, url, body, stream, minChunks))
			}
			mu.Lock()
			total.merge(&s)
			mu.Unlock()
		})
	}
	wg.Wait()
	total.elapsed = time.Since(start)
	return total
}

// warmUp sends n requests over conc connections, so that connections exist
// and lazily built state is built before anything is measured.
func warmUp(c *http.Client, url string, body []byte, stream bool, conc, n int) error {
	var (
		wg    sync.WaitGroup
		left  atomic.Int64
		first atomic.Pointer[error]
	)
	left.Store(int64(n))
	for range conc {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if o := request(context.Background(), c, url, body, stream, 1); o.err != nil {
					first.CompareAndSwap(nil, &o.err)
				}
			}
		})
	}
	wg.Wait()
	if err := first.Load(); err != nil {
		return fmt.Errorf("warm-up %s: %w", url, *err)
	}
	return nil
}

// openLoop sends requests at a fixed rate for d, whatever the latency, from
// a pool of workers. Latency is measured from each request's scheduled time,
// so a proxy that falls behind shows it instead of slowing the load.
func openLoop(c *http.Client, url string, body []byte, rate int, d time.Duration, workers int) sample {
	n := int(float64(rate) * d.Seconds())
	jobs := make(chan time.Time, workers)
	var (
		mu    sync.Mutex
		total sample
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			var s sample
			for at := range jobs {
				o := request(context.Background(), c, url, body, false, 0)
				if o.err == nil {
					o.lat = time.Since(at)
				}
				s.add(o)
			}
			mu.Lock()
			total.merge(&s)
			mu.Unlock()
		})
	}
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		jobs <- at
	}
	close(jobs)
	wg.Wait()
	total.elapsed = time.Since(start)
	return total
}

// openStreams opens n streams that the upstream keeps open (its next chunk
// is far away), at most opening at once, and calls measure once all of them
// received their first event, then holds them for hold to catch streams that
// break, and cancels them. Errors are streams that failed before the cancel.
func openStreams(c *http.Client, url string, body []byte, n, opening int, timeout, hold time.Duration, measure func()) sample {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu      sync.Mutex
		total   sample
		wg      sync.WaitGroup
		settled = make(chan struct{}, n) // one per stream: open or failed
		sem     = make(chan struct{}, opening)
	)
	start := time.Now()
	// The dispatcher is itself in wg, so that the streams it adds never race
	// with a Wait that saw the count at zero.
	wg.Go(func() {
		for range n {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Go(func() {
				released := false
				release := func() {
					if !released {
						released = true
						<-sem
						settled <- struct{}{}
					}
				}
				o := holdStream(ctx, c, url, body, release)
				release()
				mu.Lock()
				total.add(o)
				mu.Unlock()
			})
		}
	})
	deadline := time.After(timeout)
	for range n {
		select {
		case <-settled:
		case <-deadline:
			mu.Lock()
			total.add(outcome{err: fmt.Errorf("not all %d streams open after %v", n, timeout)})
			mu.Unlock()
			cancel()
			wg.Wait()
			return total
		}
	}
	total.elapsed = time.Since(start)
	measure()
	time.Sleep(hold) // the hold is the measurement: nothing to await
	cancel()
	wg.Wait()
	return total
}

// holdStream opens one stream, calls opened at its first data event, and
// reads until ctx is cancelled. An ending before that is an error.
func holdStream(ctx context.Context, c *http.Client, url string, body []byte, opened func()) outcome {
	start := time.Now()
	resp, err := post(ctx, c, url, body)
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return outcome{err: fmt.Errorf("status %d", resp.StatusCode)}
	}
	r := bufio.NewReader(resp.Body)
	var o outcome
	for {
		line, err := r.ReadSlice('\n')
		if o.ttft == 0 && bytes.HasPrefix(line, []byte("data: ")) {
			o.ttft = time.Since(start)
			o.lat = o.ttft
			opened()
		}
		if err != nil {
			if ctx.Err() != nil && o.ttft > 0 {
				return o
			}
			return outcome{err: fmt.Errorf("stream ended before the cancel: %w", err)}
		}
	}
}
