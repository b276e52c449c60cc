package router

import (
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// testPolicy: threshold 2, cooldown 10s, doubling, capped at 35s.
var testPolicy = (&HealthCheck{
	FailureThreshold: 2,
	Cooldown:         caddy.Duration(10 * time.Second),
	MaxCooldown:      caddy.Duration(35 * time.Second),
	Backoff:          2,
}).Policy()

// step is one action on a breaker at a time offset from t0, followed by the checks.
type step struct {
	at     time.Duration
	do     string        // "allow", "success", "failure", "abandon", or "" to only check
	ok     bool          // for allow
	probe  bool          // for allow
	state  State         // checked after every step
	retry  time.Duration // checked after every step
	policy *Policy       // nil: testPolicy
}

func TestBreaker(t *testing.T) {
	disabled := testPolicy
	disabled.Enabled = false
	// Opens the breaker at t=0 (two failures).
	opened := []step{
		{at: 0, do: "failure", state: Closed},
		{at: 0, do: "failure", state: Open, retry: 10 * time.Second},
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"zero value is closed", []step{
			{do: "allow", ok: true, state: Closed},
		}},
		{"opens at the threshold", append(opened,
			step{at: time.Second, do: "allow", ok: false, state: Open, retry: 9 * time.Second},
		)},
		{"a success resets the consecutive count", []step{
			{do: "failure", state: Closed},
			{do: "success", state: Closed},
			{do: "failure", state: Closed},
			{do: "allow", ok: true, state: Closed},
		}},
		{"blocked during cooldown, one probe after it", append(opened,
			step{at: 9999 * time.Millisecond, do: "allow", ok: false, state: Open, retry: time.Millisecond},
			step{at: 10 * time.Second, state: HalfOpen},
			step{at: 10 * time.Second, do: "allow", ok: true, probe: true, state: HalfOpen},
			step{at: 10 * time.Second, do: "allow", ok: false, state: HalfOpen},
			step{at: 60 * time.Second, do: "allow", ok: false, state: HalfOpen},
		)},
		{"a successful probe closes", append(opened,
			step{at: 10 * time.Second, do: "allow", ok: true, probe: true, state: HalfOpen},
			step{at: 11 * time.Second, do: "success", state: Closed},
			step{at: 11 * time.Second, do: "allow", ok: true, state: Closed},
			step{at: 11 * time.Second, do: "allow", ok: true, state: Closed},
		)},
		{"failed probes back off up to the cap", append(opened,
			step{at: 10 * time.Second, do: "allow", ok: true, probe: true, state: HalfOpen},
			step{at: 10 * time.Second, do: "failure", state: Open, retry: 20 * time.Second},
			step{at: 29 * time.Second, do: "allow", ok: false, state: Open, retry: time.Second},
			step{at: 30 * time.Second, do: "allow", ok: true, probe: true, state: HalfOpen},
			step{at: 30 * time.Second, do: "failure", state: Open, retry: 35 * time.Second}, // 40s capped
			step{at: 65 * time.Second, do: "allow", ok: true, probe: true, state: HalfOpen},
			step{at: 65 * time.Second, do: "failure", state: Open, retry: 35 * time.Second},
		)},
		{"success after backoff restarts from the base cooldown", append(opened,
			step{at: 10 * time.Second, do: "allow", ok: true, probe: true, state: HalfOpen},
			step{at: 10 * time.Second, do: "failure", state: Open, retry: 20 * time.Second},
			step{at: 30 * time.Second, do: "allow", ok: true, probe: true, state: HalfOpen},
			step{at: 30 * time.Second, do: "success", state: Closed},
			step{at: 30 * time.Second, do: "failure", state: Closed},
			step{at: 30 * time.Second, do: "failure", state: Open, retry: 10 * time.Second},
		)},
		{"abandon lets another probe through", append(opened,
			step{at: 10 * time.Second, do: "allow", ok: true, probe: true, state: HalfOpen},
			step{at: 10 * time.Second, do: "allow", ok: false, state: HalfOpen},
			step{at: 12 * time.Second, do: "abandon", state: HalfOpen},
			step{at: 12 * time.Second, do: "allow", ok: true, probe: true, state: HalfOpen},
			step{at: 12 * time.Second, do: "failure", state: Open, retry: 20 * time.Second},
		)},
		{"stragglers while open change nothing", append(opened,
			step{at: 5 * time.Second, do: "failure", state: Open, retry: 5 * time.Second},
			step{at: 10 * time.Second, do: "failure", state: HalfOpen},
			step{at: 10 * time.Second, do: "allow", ok: true, probe: true, state: HalfOpen},
		)},
		{"disabled policy always allows and reports closed", []step{
			{do: "failure", policy: &disabled},
			{do: "failure", policy: &disabled},
			{do: "failure", policy: &disabled},
			{do: "allow", ok: true, state: Closed, policy: &disabled},
			{do: "allow", ok: true, state: Closed}, // failures were not counted
		}},
		{"disabling an open breaker lets everything through", append(opened,
			step{at: time.Second, do: "allow", ok: true, state: Closed, policy: &disabled},
			step{at: time.Second, do: "allow", ok: false, state: Open, retry: 9 * time.Second},
		)},
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Breaker
			for n, s := range tt.steps {
				p := testPolicy
				if s.policy != nil {
					p = *s.policy
				}
				now := t0.Add(s.at)
				switch s.do {
				case "allow":
					if ok, probe := b.Allow(p, now); ok != s.ok || probe != s.probe {
						t.Fatalf("step %d: Allow = %v, %v; want %v, %v", n, ok, probe, s.ok, s.probe)
					}
				case "success":
					b.Success()
				case "failure":
					b.Failure(p, now)
				case "abandon":
					b.Abandon()
				}
				if got := b.State(p, now); got != s.state {
					t.Fatalf("step %d: State = %v, want %v", n, got, s.state)
				}
				if got := b.RetryAfter(p, now); got != s.retry {
					t.Fatalf("step %d: RetryAfter = %v, want %v", n, got, s.retry)
				}
			}
		})
	}
}

// TestBreakerSingleProbe races many requests at an elapsed cooldown: exactly one may probe.
func TestBreakerSingleProbe(t *testing.T) {
	var b Breaker
	t0 := time.Now()
	b.Failure(testPolicy, t0)
	b.Failure(testPolicy, t0)
	now := t0.Add(time.Minute)

	const n = 64
	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		mu     sync.Mutex
		probes int
	)
	for range n {
		wg.Go(func() {
			<-start
			if ok, probe := b.Allow(testPolicy, now); ok {
				if !probe {
					t.Error("allowed without being the probe")
				}
				mu.Lock()
				probes++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if probes != 1 {
		t.Fatalf("%d probes let through, want 1", probes)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Closed: "closed", Open: "open", HalfOpen: "half_open", 9: "unknown"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", s, got, want)
		}
		if got, _ := s.MarshalText(); string(got) != want {
			t.Errorf("State(%d).MarshalText() = %q, want %q", s, got, want)
		}
	}
}

func TestPolicyDefaults(t *testing.T) {
	tests := []struct {
		name string
		hc   *HealthCheck
		want Policy
	}{
		{"nil", nil, Policy{true, 3, 30 * time.Second, 5 * time.Minute, 2}},
		{"disabled", &HealthCheck{Disabled: true}, Policy{false, 3, 30 * time.Second, 5 * time.Minute, 2}},
		{"max below cooldown is raised", &HealthCheck{Cooldown: caddy.Duration(10 * time.Minute)}, Policy{true, 3, 10 * time.Minute, 10 * time.Minute, 2}},
		{"backoff below 1 is 1", &HealthCheck{Backoff: 0.5}, Policy{true, 3, 30 * time.Second, 5 * time.Minute, 1}},
		{"negative backoff is 1", &HealthCheck{Backoff: -3}, Policy{true, 3, 30 * time.Second, 5 * time.Minute, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.hc.Policy(); got != tt.want {
				t.Errorf("Policy() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func BenchmarkBreakerAllow(b *testing.B) {
	var br Breaker
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := br.Allow(testPolicy, now); !ok {
			b.Fatal("closed breaker blocked")
		}
		br.Success()
	}
}
