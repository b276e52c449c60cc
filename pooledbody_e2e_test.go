package llmgateway_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

// TestPooledBodiesReachUpstreamIntact: request bodies are read into pooled buffers that go back
// to the pool once the transport is done with them. Many concurrent calls with distinct bodies of
// every pool size (and larger), plain, failed over from an upstream answering 503 (two upstream
// requests from one buffer) and streamed, each reach the upstream byte for byte as the official
// client sent them: the fake upstream answers every request with the SHA-256 of the body it got.
// A buffer reused while a transport still read it would send another call's bytes.
func TestPooledBodiesReachUpstreamIntact(t *testing.T) {
	good, flaky := fake(t, "good"), fake(t, "flaky")
	flaky.Update(func(s *fakeupstream.Settings) { s.Status = http.StatusServiceUnavailable })
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("flaky", flaky.URL(), "match exact gpt-failover", "priority 1"),
		clientBlock("good", good.URL(), "match keyword gpt")))

	var (
		mu       sync.Mutex
		problems []string
		checked  int
	)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	// digest compares the body the client sent with the one the upstream received.
	digest := option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		resp, err := next(req)
		if err != nil {
			return resp, err
		}
		sum := sha256.Sum256(body)
		if got, want := resp.Header.Get("X-Fake-Body-Sha256"), hex.EncodeToString(sum[:]); got != want {
			report("%d-byte body (stream %v): upstream got digest %q, want %q", len(body), bytes.Contains(body, []byte(`"stream":true`)), got, want)
		}
		mu.Lock()
		checked++
		mu.Unlock()
		return resp, nil
	})
	client := gw.client(option.WithHeader("X-Fake-Digest", "1"), digest)

	// Prompts around the pool classes (4, 16 and 64 KiB) and past them.
	sizes := []int{100, 3000, 4000, 10000, 16000, 40000, 70000}
	models := []string{"gpt-4o", "gpt-failover"}
	const workers, calls = 8, 12
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ctx := context.Background()
			for i := range calls {
				size := sizes[(w+i)%len(sizes)]
				model := models[(w*calls+i)%len(models)]
				// Distinct bytes per call, so that another call's body cannot pass for this one.
				tag := fmt.Sprintf("worker %d call %d ", w, i)
				prompt := strings.Repeat(tag, size/len(tag)+1)[:size]
				params := openai.ChatCompletionNewParams{
					Model:    model,
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
				}
				if i%3 == 2 {
					// Asking for the usage chunk, the gateway has no reason to edit the body.
					params.StreamOptions.IncludeUsage = openai.Bool(true)
					stream := client.Chat.Completions.NewStreaming(ctx, params)
					for stream.Next() {
					}
					if err := stream.Err(); err != nil {
						report("stream %s, %d bytes: %v", model, size, err)
					}
					stream.Close()
					continue
				}
				if _, err := client.Chat.Completions.New(ctx, params); err != nil {
					report("chat %s, %d bytes: %v", model, size, err)
				}
			}
		})
	}
	wg.Wait()
	for _, p := range problems {
		t.Error(p)
	}
	if checked != workers*calls {
		t.Errorf("%d answers checked, want %d", checked, workers*calls)
	}
	if flaky.Requests() == 0 {
		t.Error("no call was failed over: the two-attempt case went untested")
	}
}
