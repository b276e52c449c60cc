package llmgateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/llmgw/caddy-llm-gateway/internal/reqbody"
	"github.com/llmgw/caddy-llm-gateway/keys"
	"github.com/llmgw/caddy-llm-gateway/router"
	"github.com/llmgw/caddy-llm-gateway/sse"
)

func TestRetryable(t *testing.T) {
	for _, tt := range []struct {
		status int
		want   bool
	}{
		{200, false}, {201, false}, {301, false}, {400, false}, {401, false},
		{403, true}, {404, true}, {408, false}, {413, false}, {422, true}, {429, true},
		{499, false}, {500, true}, {502, true}, {503, true}, {504, true}, {599, true},
	} {
		if got := retryable(tt.status); got != tt.want {
			t.Errorf("retryable(%d) = %v, want %v", tt.status, got, tt.want)
		}
	}
}

// timeoutErr is a net.Error that timed out.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func TestClassifyErr(t *testing.T) {
	cancelled := func(cause error) context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		return ctx
	}
	refused := errors.New("connect: connection refused")
	for _, tt := range []struct {
		name     string
		ctx      context.Context
		err      error
		kind     failureKind
		wantErr  error  // errors.Is the failure's error
		wantText string // or the failure's error text
	}{
		{"refused", context.Background(), refused, failConnect, refused, ""},
		{"eof", context.Background(), io.ErrUnexpectedEOF, failConnect, io.ErrUnexpectedEOF, ""},
		{"net timeout", context.Background(), timeoutErr{}, failTimeout, timeoutErr{}, ""},
		{"deadline", context.Background(), fmt.Errorf("round trip: %w", context.DeadlineExceeded), failTimeout, context.DeadlineExceeded, ""},
		{"dial timeout is a connect failure", context.Background(),
			reverseproxy.NewDialError(timeoutErr{}), failConnect, nil, "i/o timeout"},
		// The attempt's own timer cancelled it: the cause replaces the bare "context canceled".
		{"header timeout", cancelled(errHeaderTimeout), context.Canceled, failTimeout, errHeaderTimeout, ""},
		{"first byte timeout", cancelled(errFirstByteTimeout), context.Canceled, failTimeout, errFirstByteTimeout, ""},
		{"body stalled", cancelled(errBodyStalled), io.ErrUnexpectedEOF, failTimeout, errBodyStalled, ""},
		{"timeout cause in the error", context.Background(), fmt.Errorf("read: %w", errBodyStalled), failTimeout, errBodyStalled, ""},
		{"cancelled for another cause", cancelled(errors.New("other")), context.Canceled, failConnect, context.Canceled, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := classifyErr(tt.ctx, tt.err)
			if f.kind != tt.kind {
				t.Errorf("kind = %d, want %d", f.kind, tt.kind)
			}
			if tt.wantErr != nil && !errors.Is(f.err, tt.wantErr) {
				t.Errorf("err = %v, want %v", f.err, tt.wantErr)
			}
			if tt.wantText != "" && !strings.Contains(errString(f.err), tt.wantText) {
				t.Errorf("err = %v, want it to mention %q", f.err, tt.wantText)
			}
		})
	}
}

func TestChooseFailure(t *testing.T) {
	answered := failure{kind: failUpstream, status: 503, body: []byte(`{"error":"busy"}`)}
	refused := failure{kind: failConnect, err: errors.New("connection refused")}
	slow := failure{kind: failTimeout, err: errHeaderTimeout}
	transformErr := errors.New("cannot apply the request transforms of client a: max_tokens is not a number")
	history := func(fs ...failure) *attemptHistory {
		var h attemptHistory
		for _, f := range fs {
			h.add(f)
		}
		return &h
	}
	for _, tt := range []struct {
		name         string
		hist         *attemptHistory
		attempted    bool
		transformErr error
		retryAfter   time.Duration
		status       int    // the gateway's own error, or 0
		code         string // its code
		upstream     int    // the upstream status relayed, or 0
		retryHeader  int64
	}{
		{"transform error only", history(), false, transformErr, math.MaxInt64, 400, "", 0, 0},
		{"all cooling down", history(), false, nil, 2500 * time.Millisecond, 503, errCodeAllCoolingDown, 0, 3},
		{"all cooling down, sub-second", history(), false, nil, 10 * time.Millisecond, 503, errCodeAllCoolingDown, 0, 1},
		{"all cooling down, no estimate", history(), false, nil, math.MaxInt64, 503, errCodeAllCoolingDown, 0, 1},
		{"connect failure", history(refused), true, nil, 0, 502, errCodeUpstreamConnect, 0, 0},
		{"timeout", history(slow), true, nil, 0, 504, errCodeUpstreamTimeout, 0, 0},
		{"upstream answer", history(answered), true, nil, 0, 0, "", 503, 0},
		{"answer beats a later connect failure", history(answered, refused), true, nil, 0, 0, "", 503, 0},
		{"answer beats a later timeout", history(answered, slow), true, nil, 0, 0, "", 503, 0},
		{"the last answer wins", history(answered, failure{kind: failUpstream, status: 429}, refused), true, nil, 0, 0, "", 429, 0},
		{"last failure without answers", history(slow, refused), true, nil, 0, 502, errCodeUpstreamConnect, 0, 0},
		{"an attempt beats a transform error", history(refused), true, transformErr, 0, 502, errCodeUpstreamConnect, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := chooseFailure(tt.hist, tt.attempted, tt.transformErr, tt.retryAfter, "m")
			if f.retryAfter != tt.retryHeader {
				t.Errorf("Retry-After = %d, want %d", f.retryAfter, tt.retryHeader)
			}
			if tt.upstream != 0 {
				if f.err != nil || f.upstream.status != tt.upstream {
					t.Fatalf("got error %v / upstream %d, want upstream %d relayed", f.err, f.upstream.status, tt.upstream)
				}
				return
			}
			if f.err == nil {
				t.Fatalf("got upstream %d relayed, want error %d", f.upstream.status, tt.status)
			}
			if f.err.status != tt.status || f.err.code != tt.code {
				t.Errorf("error %d %q, want %d %q (%s)", f.err.status, f.err.code, tt.status, tt.code, f.err.message)
			}
		})
	}
}

// testGeneration makes a generation of clients for planner tests: no transports, strategy random,
// so clients without priority are tried in config order.
func testGeneration(t *testing.T, policy router.Policy, clients ...*router.Client) *generation {
	t.Helper()
	table, err := router.NewTable(clients)
	if err != nil {
		t.Fatal(err)
	}
	g := &generation{table: table, policy: policy, strategy: router.StrategyRandom, maxHops: router.DefaultMaxFallbackHops}
	for _, c := range table.Clients {
		g.clients = append(g.clients, &upstreamClient{Client: c, state: new(router.ClientState)})
	}
	return g
}

func planClient(name, model, fallback string) *router.Client {
	return &router.Client{Name: name, BaseURL: "http://" + name + ".invalid/v1", Fallback: fallback,
		Match: []router.MatchRule{{Type: router.MatchExact, Values: []string{model}}}}
}

// planAll drains a planner, returning "client/model" per attempt.
func planAll(t *testing.T, g *generation, req *apiRequest) ([]string, *planner, *apiError) {
	t.Helper()
	var p planner
	var buf [16]int
	if e := p.start(g, req, nil, zap.NewNop(), buf[:0]); e != nil {
		return nil, &p, e
	}
	var got []string
	for {
		spec, ok := p.next()
		if !ok {
			return got, &p, nil
		}
		got = append(got, spec.uc.Name+"/"+spec.model)
	}
}

func chatRequest(t *testing.T, body string) *apiRequest {
	t.Helper()
	info, err := reqbody.Sniff([]byte(body), false)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest(http.MethodPost, "http://gw/v1/chat/completions", nil)
	return &apiRequest{r: r, ep: epChat, body: []byte(body), info: info, stream: info.Stream}
}

func TestPlanner(t *testing.T) {
	policy := router.Policy{Enabled: true, FailureThreshold: 1, Cooldown: time.Minute, MaxCooldown: time.Hour, Backoff: 2}

	t.Run("model not found", func(t *testing.T) {
		g := testGeneration(t, policy, planClient("a", "m", ""))
		_, _, e := planAll(t, g, chatRequest(t, `{"model":"nope"}`))
		if e == nil || e.status != http.StatusNotFound || e.code != errCodeModelNotFound {
			t.Fatalf("error = %+v, want 404 model_not_found", e)
		}
	})

	t.Run("candidates in order, then the fallback chain", func(t *testing.T) {
		g := testGeneration(t, policy,
			planClient("a", "m", "f"), planClient("b", "m", ""), planClient("c", "f", "g"), planClient("d", "g", ""))
		got, p, e := planAll(t, g, chatRequest(t, `{"model":"m"}`))
		if e != nil {
			t.Fatal(e)
		}
		if want := "a/m b/m c/f d/g"; strings.Join(got, " ") != want {
			t.Errorf("attempts %q, want %q", got, want)
		}
		if p.model != "g" || p.fallbacks != 2 || !p.attempted {
			t.Errorf("model %q, fallbacks %d, attempted %v; want g, 2, true", p.model, p.fallbacks, p.attempted)
		}
	})

	t.Run("the fallback chain ends at a model the key may not use", func(t *testing.T) {
		set, err := keys.Compile([]*keys.Key{
			{Name: "narrow", Secret: "sk-narrow-0123456789", Models: []string{"m", "f*"}},
			{Name: "wide", Secret: "sk-wide-0123456789"},
		}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		g := testGeneration(t, policy,
			planClient("a", "m", "f"), planClient("c", "f", "g"), planClient("d", "g", "named"), planClient("named", "x", ""))
		for _, tt := range []struct {
			key  string
			want string
		}{
			{"narrow", "a/m c/f"},           // g is not among the key's models
			{"wide", "a/m c/f d/g named/g"}, // every model; named is a client: the model stays g
			{"", "a/m c/f d/g named/g"},     // no keys
		} {
			var p planner
			var buf [16]int
			var key *keys.Entry
			if tt.key != "" {
				key = set.ByName(tt.key)
			}
			if e := p.start(g, chatRequest(t, `{"model":"m"}`), key, zap.NewNop(), buf[:0]); e != nil {
				t.Fatal(e)
			}
			var got []string
			for spec, ok := p.next(); ok; spec, ok = p.next() {
				got = append(got, spec.uc.Name+"/"+spec.model)
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("key %q: attempts %q, want %q", tt.key, got, tt.want)
			}
		}
	})

	t.Run("open breakers are skipped and give the retry estimate", func(t *testing.T) {
		g := testGeneration(t, policy, planClient("a", "m", ""), planClient("b", "m", ""))
		g.clients[0].state.Breaker.Failure(policy, time.Now()) // opens at threshold 1
		got, p, _ := planAll(t, g, chatRequest(t, `{"model":"m"}`))
		if strings.Join(got, " ") != "b/m" {
			t.Errorf("attempts %q, want [b/m]", got)
		}
		if p.retryAfter <= 0 || p.retryAfter > time.Minute {
			t.Errorf("retryAfter = %v, want within the cooldown", p.retryAfter)
		}

		g.clients[1].state.Breaker.Failure(policy, time.Now())
		got, p, _ = planAll(t, g, chatRequest(t, `{"model":"m"}`))
		if len(got) != 0 || p.attempted {
			t.Errorf("attempts %q with every breaker open", got)
		}
		f := chooseFailure(new(attemptHistory), p.attempted, p.transformErr, p.retryAfter, "m")
		if f.err == nil || f.err.status != http.StatusServiceUnavailable || f.retryAfter != 60 {
			t.Errorf("final error %+v, Retry-After %d; want 503 with 60", f.err, f.retryAfter)
		}
	})

	t.Run("fallback of a cooling model is still taken", func(t *testing.T) {
		g := testGeneration(t, policy, planClient("a", "m", "f"), planClient("b", "f", ""))
		g.clients[0].state.Breaker.Failure(policy, time.Now())
		got, p, _ := planAll(t, g, chatRequest(t, `{"model":"m"}`))
		if strings.Join(got, " ") != "b/f" || p.fallbacks != 1 {
			t.Errorf("attempts %q, fallbacks %d; want [b/f], 1", got, p.fallbacks)
		}
	})

	t.Run("untransformable clients are skipped", func(t *testing.T) {
		strict := planClient("a", "m", "")
		strict.MaxTokens = 100 // needs max_tokens to be a number
		g := testGeneration(t, policy, strict, planClient("b", "m", ""))
		req := chatRequest(t, `{"model":"m","max_tokens":"lots"}`)
		got, p, _ := planAll(t, g, req)
		if strings.Join(got, " ") != "b/m" {
			t.Errorf("attempts %q, want [b/m]", got)
		}
		if p.transformErr == nil || !strings.Contains(p.transformErr.Error(), "client a") {
			t.Errorf("transformErr = %v, want client a's", p.transformErr)
		}

		g = testGeneration(t, policy, strict)
		got, p, _ = planAll(t, g, req)
		if len(got) != 0 {
			t.Errorf("attempts %q, want none", got)
		}
		f := chooseFailure(new(attemptHistory), p.attempted, p.transformErr, p.retryAfter, "m")
		if f.err == nil || f.err.status != http.StatusBadRequest {
			t.Errorf("final error %+v, want 400", f.err)
		}
	})

	t.Run("a skipped probe is abandoned", func(t *testing.T) {
		strict := planClient("a", "m", "")
		strict.MaxTokens = 100
		short := policy
		short.Cooldown = time.Nanosecond
		g := testGeneration(t, short, strict)
		g.clients[0].state.Breaker.Failure(short, time.Now().Add(-time.Second))
		planAll(t, g, chatRequest(t, `{"model":"m","max_tokens":"lots"}`))
		// Abandoned, the probe slot is free: the next request may probe.
		if ok, probe := g.clients[0].state.Breaker.Allow(short, time.Now()); !ok || !probe {
			t.Errorf("Allow = %v, %v after an abandoned probe; want a new probe", ok, probe)
		}
	})

	t.Run("body per client", func(t *testing.T) {
		renamed := planClient("a", "m", "")
		renamed.UpstreamModel = "upstream-m"
		g := testGeneration(t, policy, renamed, planClient("b", "m", ""))
		req := chatRequest(t, `{"model":"m","stream":true}`)
		var p planner
		var buf [16]int
		if e := p.start(g, req, nil, zap.NewNop(), buf[:0]); e != nil {
			t.Fatal(e)
		}
		spec, _ := p.next()
		if !strings.Contains(string(spec.body), `"upstream-m"`) {
			t.Errorf("client a's body %s lacks its upstream_model", spec.body)
		}
		if !spec.injectedUsage || !strings.Contains(string(spec.body), `"include_usage":true`) {
			t.Errorf("client a's body %s (injectedUsage %v), want include_usage injected", spec.body, spec.injectedUsage)
		}
		spec, _ = p.next()
		if strings.Contains(string(spec.body), `"upstream-m"`) {
			t.Errorf("client b's body %s has client a's upstream_model", spec.body)
		}

		// A caller that asked for usage itself gets every chunk: nothing is injected.
		req = chatRequest(t, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`)
		p.start(g, req, nil, zap.NewNop(), buf[:0])
		p.next()
		if spec, _ = p.next(); spec.injectedUsage || string(spec.body) != string(req.body) {
			t.Errorf("client b's body %s (injectedUsage %v), want the caller's bytes", spec.body, spec.injectedUsage)
		}
	})
}

func TestRecordVerdict(t *testing.T) {
	policy := router.Policy{Enabled: true, FailureThreshold: 1, Cooldown: time.Minute, MaxCooldown: time.Hour, Backoff: 2}
	g := &generation{policy: policy}
	for _, tt := range []struct {
		kind  outcomeKind
		probe bool
		open  bool // the breaker is open after the verdict
	}{
		{outFailed, false, true},
		{outGone, false, false},
		{outStream, false, false},
		{outBuffered, false, false},
		{outLarge, false, false},
	} {
		spec := attemptSpec{uc: &upstreamClient{Client: &router.Client{Name: "a"}, state: new(router.ClientState)}, probe: tt.probe}
		out := outcome{kind: tt.kind}
		out.recordVerdict(g, &spec)
		ok, _ := spec.uc.state.Breaker.Allow(policy, time.Now())
		if ok == tt.open {
			t.Errorf("outcome %d: breaker open = %v, want %v", tt.kind, !ok, tt.open)
		}
	}
}

func TestSniff(t *testing.T) {
	g := &generation{maxBody: 128}
	for _, tt := range []struct {
		name, path, ct, body string
		ep                   endpoint
		status               int // 0: sniffed
		pass                 bool
		model                string
		stream               bool
	}{
		{"chat", "/v1/chat/completions", "application/json", `{"model":"m","stream":true}`, epChat, 0, false, "m", true},
		{"embeddings never stream", "/v1/embeddings", "application/json", `{"model":"m","stream":true}`, epEmbeddings, 0, false, "m", false},
		{"dot segment", "/v1/../x", "application/json", `{"model":"m"}`, epGeneric, 400, false, "", false},
		{"too large", "/v1/chat/completions", "application/json", `{"model":"` + strings.Repeat("x", 128) + `"}`, epChat, 413, false, "", false},
		{"no model", "/v1/chat/completions", "application/json", `{}`, epChat, 400, false, "", false},
		{"generic without model passes on", "/v1/files", "application/json", `{}`, epGeneric, 0, true, "", false},
		{"generic with a non-string model", "/v1/x", "application/json", `{"model":1}`, epGeneric, 400, false, "", false},
		{"audio needs multipart", "/v1/audio/transcriptions", "application/json", `{"model":"m"}`, epAudio, 400, false, "", false},
		{"multipart", "/v1/audio/transcriptions", "multipart/form-data; boundary=b",
			"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--b--\r\n", epAudio, 0, false, "whisper", false},
		{"bad model name", "/v1/chat/completions", "application/json", `{"model":"a\u0000b"}`, epChat, 400, false, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodPost, "http://gw"+tt.path, strings.NewReader(tt.body))
			r.URL.Path = tt.path // kept as sent: the server does not clean it
			r.Header.Set("Content-Type", tt.ct)
			req, pass, e := g.sniff(apiRequest{r: r, ep: tt.ep})
			if pass != tt.pass {
				t.Fatalf("pass = %v, want %v", pass, tt.pass)
			}
			switch {
			case tt.status != 0 && (e == nil || e.status != tt.status):
				t.Fatalf("error %+v, want status %d", e, tt.status)
			case tt.status == 0 && e != nil:
				t.Fatalf("error %+v", e)
			}
			if tt.status == 0 && (req.info.Model != tt.model || req.stream != tt.stream) {
				t.Errorf("model %q stream %v, want %q %v", req.info.Model, req.stream, tt.model, tt.stream)
			}
			if (tt.pass || tt.status == 0) && string(req.body) != tt.body {
				t.Errorf("body %q, want the caller's", req.body)
			}
		})
	}
}

// roundTripFunc is a transport made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func answerWith(status int, contentType, body string) roundTripFunc {
	return func(r *http.Request) (*http.Response, error) {
		h := http.Header{"Content-Type": {contentType}}
		return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)), Request: r}, nil
	}
}

// unsized makes rt's answers of unknown length.
func unsized(rt roundTripFunc) roundTripFunc {
	return func(r *http.Request) (*http.Response, error) {
		resp, err := rt(r)
		if resp != nil {
			resp.ContentLength = -1
		}
		return resp, err
	}
}

func TestAttempt(t *testing.T) {
	refused := errors.New("connection refused")
	for _, tt := range []struct {
		name     string
		rt       roundTripFunc
		stream   bool
		gone     bool // the caller's context is cancelled first
		kind     outcomeKind
		failKind failureKind
		body     string
	}{
		{"connect failure", func(*http.Request) (*http.Response, error) { return nil, refused }, false, false, outFailed, failConnect, ""},
		{"caller gone", func(*http.Request) (*http.Response, error) { return nil, context.Canceled }, false, true, outGone, failNone, ""},
		{"header timeout", func(r *http.Request) (*http.Response, error) {
			<-r.Context().Done()
			return nil, r.Context().Err()
		}, false, false, outFailed, failTimeout, ""},
		{"retryable status", answerWith(503, "application/json", `{"error":"busy"}`), false, false, outFailed, failUpstream, `{"error":"busy"}`},
		{"final error status", answerWith(400, "application/json", `{"error":"bad"}`), false, false, outBuffered, failNone, `{"error":"bad"}`},
		{"buffered", answerWith(200, "application/json", `{"ok":1}`), false, false, outBuffered, failNone, `{"ok":1}`},
		{"declared large", answerWith(200, "application/json", strings.Repeat("x", 100)), false, false, outLarge, failNone, ""},
		{"large", unsized(answerWith(200, "application/json", strings.Repeat("x", 100))), false, false, outLarge, failNone, ""},
		{"stream", answerWith(200, "text/event-stream", "data: {}\n\n"), true, false, outStream, failNone, ""},
		{"failed stream is buffered", answerWith(400, "text/event-stream", "data: {}\n\n"), true, false, outBuffered, failNone, "data: {}\n\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base, _ := url.Parse("http://a.invalid/v1")
			uc := &upstreamClient{Client: &router.Client{Name: "a"}, baseURL: base, transport: &sharedTransport{RoundTripper: tt.rt}, state: new(router.ClientState)}
			// Only the header-timeout case waits for its timer; the others get one that a slow,
			// loaded machine cannot reach before the fake transport answers.
			timeout := time.Minute
			if tt.failKind == failTimeout {
				timeout = 50 * time.Millisecond
			}
			g := &generation{headerTimeout: timeout, firstByteTimout: timeout, maxBuffered: 64}
			r, _ := http.NewRequest(http.MethodPost, "http://gw/v1/chat/completions", nil)
			req := &apiRequest{r: r, ep: epChat, upPath: "/chat/completions", stream: tt.stream}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.gone {
				cancel()
			}
			out := attempt(ctx, newStopper(), g, req, &attemptSpec{uc: uc, body: []byte(`{}`)}, zap.NewNop())
			defer out.release()
			if out.kind != tt.kind || out.failure.kind != tt.failKind {
				t.Fatalf("outcome %d failure %d (%v), want %d %d", out.kind, out.failure.kind, out.failure.err, tt.kind, tt.failKind)
			}
			if got := string(out.body) + string(out.failure.body); tt.body != "" && got != tt.body {
				t.Errorf("body %q, want %q", got, tt.body)
			}
			if tt.kind == outLarge && out.resp.ContentLength < 0 && len(out.body) != 65 {
				t.Errorf("large answer: head of %d bytes, want max_buffered_response+1", len(out.body))
			}
			if n := uc.state.InFlight.Load(); n != 1 {
				t.Errorf("in flight %d during the outcome, want 1", n)
			}
		})
	}
}

func TestCopyAnswers(t *testing.T) {
	uc := &upstreamClient{Client: &router.Client{Name: "a"}}
	spec := &attemptSpec{uc: uc}
	resp := func(status int, ct, body string) *http.Response {
		return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {ct}}, Body: io.NopCloser(strings.NewReader(body))}
	}

	t.Run("buffered", func(t *testing.T) {
		w := httptest.NewRecorder()
		req := &apiRequest{r: httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil), ep: epChat}
		body := `{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`
		ans := writeBuffered(delivery{w: w, tried: []string{"x", "a"}, backend: "a"}, req, spec, resp(200, "application/json", body), []byte(body))
		if ans.status != 200 || ans.usage != (sse.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}) || string(ans.response) != body {
			t.Errorf("answer %+v", ans)
		}
		if w.Body.String() != body || w.Header().Get(headerTried) != "x,a" || w.Header().Get(headerBackend) != "a" {
			t.Errorf("caller got %q, headers %v", w.Body.String(), w.Header())
		}
	})

	t.Run("failed stream answered in JSON", func(t *testing.T) {
		w := httptest.NewRecorder()
		req := &apiRequest{r: httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil), ep: epChat, stream: true}
		body := "data: {\"error\":{\"message\":\"bad\"}}\n\n"
		ans := writeBuffered(delivery{w: w}, req, spec, resp(400, "text/event-stream", body), []byte(body))
		if ans.status != 400 || string(ans.response) != `{"error":{"message":"bad"}}` || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("answer %+v, content type %q", ans, w.Header().Get("Content-Type"))
		}
	})

	t.Run("large", func(t *testing.T) {
		w := httptest.NewRecorder()
		g := &generation{maxBuffered: 8}
		ans := relayLarge(context.Background(), delivery{w: w, keepBodies: true, auditMax: 1 << 10}, g,
			resp(200, "application/json", `,"usage":{"prompt_tokens":5,"total_tokens":5}}`), []byte(`{"data":[]`))
		if ans.status != 200 || ans.usage.PromptTokens != 5 || !strings.Contains(ans.err, "max_buffered_response") || ans.partial {
			t.Errorf("answer %+v", ans)
		}
		if w.Body.String() != string(ans.response) {
			t.Errorf("caller got %q, audit keeps %q", w.Body.String(), ans.response)
		}
	})

	t.Run("stream", func(t *testing.T) {
		w := httptest.NewRecorder()
		g := &generation{idleTimeout: time.Minute}
		r, _ := http.NewRequest(http.MethodPost, "http://gw/v1/chat/completions", nil)
		req := &apiRequest{r: r, ep: epChat, stream: true, start: time.Now()}
		body := "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n"
		ans := copyStream(delivery{w: w, stopCtx: context.Background()}, g, req, &attemptSpec{uc: uc, injectedUsage: true},
			resp(200, "text/event-stream", body), nil)
		if ans.status != 200 || ans.usage.TotalTokens != 3 || ans.finishReason != "stop" || ans.partial || ans.ttft <= 0 {
			t.Errorf("answer %+v", ans)
		}
		if got := w.Body.String(); strings.Contains(got, "usage") || !strings.HasSuffix(got, sse.DoneEvent) {
			t.Errorf("caller got %q: want the injected usage chunk consumed and [DONE] added", got)
		}
	})

	t.Run("stream cut", func(t *testing.T) {
		w := httptest.NewRecorder()
		g := &generation{idleTimeout: time.Minute}
		r, _ := http.NewRequest(http.MethodPost, "http://gw/v1/responses", nil)
		req := &apiRequest{r: r, ep: epResponses, stream: true, start: time.Now()}
		body := io.MultiReader(strings.NewReader("event: response.created\ndata: {}\n\n"), iotest.ErrReader(io.ErrUnexpectedEOF))
		ans := copyStream(delivery{w: w, stopCtx: context.Background()}, g, req, spec,
			&http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: io.NopCloser(body)}, nil)
		if !ans.partial || !strings.Contains(ans.err, "interrupted") {
			t.Errorf("answer %+v", ans)
		}
		if !strings.HasSuffix(w.Body.String(), "event: error\n"+`data: {"code":"upstream_error","message":"`+ans.err+`","param":null,"type":"error"}`+"\n\n") {
			t.Errorf("caller got %q, want a Responses error event", w.Body.String())
		}
	})
}

// TestAttemptStopped checks that the process's exit ends an attempt waiting for its answer, as
// if the caller had gone, that release unregisters the attempt, and that an attempt made after
// the exit is cut at once.
func TestAttemptStopped(t *testing.T) {
	var cause error
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		<-r.Context().Done()
		cause = context.Cause(r.Context())
		return nil, r.Context().Err()
	})
	base, _ := url.Parse("http://a.invalid/v1")
	uc := &upstreamClient{Client: &router.Client{Name: "a"}, baseURL: base, transport: &sharedTransport{RoundTripper: rt}, state: new(router.ClientState)}
	g := &generation{headerTimeout: time.Minute, firstByteTimout: time.Minute, maxBuffered: 64}
	r, _ := http.NewRequest(http.MethodPost, "http://gw/v1/chat/completions", nil)
	req := &apiRequest{r: r, ep: epChat, upPath: "/chat/completions"}
	stops := newStopper()
	time.AfterFunc(20*time.Millisecond, stops.stop)
	out := attempt(context.Background(), stops, g, req, &attemptSpec{uc: uc, body: []byte(`{}`)}, zap.NewNop())
	out.release()
	if out.kind != outGone {
		t.Errorf("outcome %d (%v), want outGone", out.kind, out.failure.err)
	}
	if cause != errStopping {
		t.Errorf("attempt cancelled by %v, want %v", cause, errStopping)
	}
	if stops.head != nil {
		t.Error("a released attempt is still registered for the exit")
	}
	// An attempt made after the exit is cut at once.
	cause = nil
	out = attempt(context.Background(), stops, g, req, &attemptSpec{uc: uc, body: []byte(`{}`)}, zap.NewNop())
	out.release()
	if out.kind != outGone || cause != errStopping {
		t.Errorf("attempt after the exit: outcome %d, cancelled by %v; want outGone, %v", out.kind, cause, errStopping)
	}
}

// TestStopper: the exit cancels exactly the attempts registered and not yet removed, whatever
// the order they were removed in, and any registered after it at once.
func TestStopper(t *testing.T) {
	s := newStopper()
	causes := make([]error, 5)
	bodies := make([]*idleBody, 5)
	for i := range bodies {
		bodies[i] = &idleBody{cancel: func(err error) { causes[i] = err }}
		s.add(bodies[i])
	}
	// Unregister the last added (the list's head), one in the middle and the first (its tail).
	for _, i := range []int{4, 2, 0} {
		s.remove(bodies[i])
	}
	s.remove(bodies[2]) // twice: nothing happens
	s.stop()
	for i, want := range []error{nil, errStopping, nil, errStopping, nil} {
		if causes[i] != want {
			t.Errorf("attempt %d cancelled by %v, want %v", i, causes[i], want)
		}
	}
	if s.ctx.Err() == nil {
		t.Error("the stop context is not cancelled")
	}
	var late error
	s.add(&idleBody{cancel: func(err error) { late = err }})
	if late != errStopping {
		t.Errorf("attempt added after the exit cancelled by %v, want %v", late, errStopping)
	}
}

// TestAttemptBodyIdle: a non-streaming answer that keeps coming, a byte at a time, is read to
// its end however long it takes; one that pauses for response_header_timeout fails as a timeout.
func TestAttemptBodyIdle(t *testing.T) {
	const idle = 300 * time.Millisecond
	for _, tc := range []struct {
		name  string
		bytes int           // sent one at a time, every gap
		gap   time.Duration //
		stall bool          // then nothing more, else the end
	}{
		{"trickle longer than the timeout", 40, 30 * time.Millisecond, false},
		{"stall", 3, 30 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				pr, pw := io.Pipe()
				context.AfterFunc(r.Context(), func() { pw.CloseWithError(context.Cause(r.Context())) })
				go func() {
					for range tc.bytes {
						time.Sleep(tc.gap)
						if _, err := pw.Write([]byte("x")); err != nil {
							return
						}
					}
					if !tc.stall {
						pw.Close()
					}
				}()
				return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
					Body: pr, ContentLength: -1, Request: r}, nil
			})
			base, _ := url.Parse("http://a.invalid/v1")
			uc := &upstreamClient{Client: &router.Client{Name: "a"}, baseURL: base, transport: &sharedTransport{RoundTripper: rt}, state: new(router.ClientState)}
			g := &generation{headerTimeout: idle, firstByteTimout: idle, maxBuffered: 1 << 20}
			r, _ := http.NewRequest(http.MethodPost, "http://gw/v1/chat/completions", nil)
			req := &apiRequest{r: r, ep: epChat, upPath: "/chat/completions"}
			start := time.Now()
			out := attempt(context.Background(), newStopper(), g, req, &attemptSpec{uc: uc, body: []byte(`{}`)}, zap.NewNop())
			defer out.release()
			took := time.Since(start)
			if !tc.stall {
				if out.kind != outBuffered || len(out.body) != tc.bytes {
					t.Fatalf("outcome %d (%v), %d bytes; want the whole answer of %d", out.kind, out.failure.err, len(out.body), tc.bytes)
				}
				return
			}
			if out.kind != outFailed || out.failure.kind != failTimeout || !errors.Is(out.failure.err, errBodyStalled) {
				t.Fatalf("outcome %d, failure %d (%v); want a timeout, %v", out.kind, out.failure.kind, out.failure.err, errBodyStalled)
			}
			if sent := time.Duration(tc.bytes) * tc.gap; took < sent+idle {
				t.Errorf("timed out after %v, before the %v pause", took-sent, idle)
			}
		})
	}
}
