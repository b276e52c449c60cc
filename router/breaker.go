package router

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// State is the externally visible state of a Breaker.
type State uint8

// Breaker states.
const (
	// Closed lets every attempt through.
	Closed State = iota
	// Open blocks every attempt until the cooldown has elapsed.
	Open
	// HalfOpen is an open breaker whose cooldown elapsed: one probe attempt at a time may go.
	HalfOpen
)

// String returns the state's name as /health reports it.
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return "unknown"
}

// MarshalText makes a State encode as its name in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ClientState is the runtime state of one client. The handler keeps one per client name and
// base_url in a pool shared across config generations, so a reload neither forgets an open
// breaker nor resets in-flight counts of requests still running on the old config.
type ClientState struct {
	Breaker  Breaker
	InFlight atomic.Int64
}

// Breaker is the passive circuit breaker of one client (SPEC §4, the origin's LATEST semantics):
// after FailureThreshold consecutive failures it opens for Cooldown; once that elapsed it lets
// exactly one probe through at a time; a success closes it, and each failed probe re-opens it with
// the cooldown multiplied by Backoff, up to MaxCooldown.
//
// The Policy is passed to every call instead of being stored, so a reload that changes the health
// check settings applies to breakers that carry over. The zero value is a closed breaker. It is
// safe for concurrent use; every method takes one short, normally uncontended lock.
type Breaker struct {
	mu       sync.Mutex
	failures int       // consecutive failures while closed
	level    int       // failed probes since the breaker opened: the backoff exponent
	open     bool      // opened and not yet closed by a success
	probing  bool      // the half-open probe is in flight
	openedAt time.Time // when it opened or last re-opened
}

// Allow reports whether an attempt may go to the client at now. probe is true when the attempt
// is the single half-open probe; its caller must then report Success, Failure or Abandon, or no
// other probe will ever be let through.
func (b *Breaker) Allow(p Policy, now time.Time) (ok, probe bool) {
	if !p.Enabled {
		return true, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.open:
		return true, false
	case b.probing, now.Sub(b.openedAt) < b.cooldown(p):
		return false, false
	}
	b.probing = true
	return true, true
}

// Success records an attempt with a final (non-retryable) outcome: it closes the breaker and
// resets the backoff. A late success of an attempt let through before the breaker opened closes
// it too: the client evidently works.
func (b *Breaker) Success() {
	b.mu.Lock()
	b.failures, b.level, b.open, b.probing = 0, 0, false, false
	b.mu.Unlock()
}

// Failure records an attempt with a retryable outcome at now. While closed it counts towards the
// threshold and opens the breaker on reaching it. A failure while the probe is in flight is the
// probe's: it re-opens the breaker for a cooldown one backoff step longer. A failure while open
// with no probe out comes from an attempt let through before the breaker opened; it changes
// nothing, so stragglers neither extend the cooldown nor raise the backoff.
func (b *Breaker) Failure(p Policy, now time.Time) {
	if !p.Enabled {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.probing:
		b.probing = false
		if b.cooldown(p) < p.MaxCooldown {
			b.level++ // stop counting once capped; the exponent has no further effect
		}
		b.openedAt = now
	case b.open:
	default:
		b.failures++
		if b.failures >= p.FailureThreshold {
			b.open, b.level, b.openedAt = true, 0, now
		}
	}
}

// Abandon records that the probe's attempt ended without a verdict, for instance because the
// caller went away before the upstream answered: the breaker stays as it was and the next Allow
// may send another probe. Call it only for an attempt that Allow marked as the probe.
func (b *Breaker) Abandon() {
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

// State reports the breaker's state at now. An open breaker whose cooldown elapsed, or whose
// probe is in flight, reports HalfOpen.
func (b *Breaker) State(p Policy, now time.Time) State {
	if !p.Enabled {
		return Closed
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.open:
		return Closed
	case b.probing, now.Sub(b.openedAt) >= b.cooldown(p):
		return HalfOpen
	}
	return Open
}

// RetryAfter returns how long until the cooldown ends, or 0 if the breaker is not open or the
// cooldown already elapsed (a probe may still be in flight; callers building a Retry-After header
// should round up to at least a second).
func (b *Breaker) RetryAfter(p Policy, now time.Time) time.Duration {
	if !p.Enabled {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return 0
	}
	return max(b.openedAt.Add(b.cooldown(p)).Sub(now), 0)
}

// cooldown is Cooldown × Backoff^level, capped at MaxCooldown. b.mu must be held.
func (b *Breaker) cooldown(p Policy) time.Duration {
	d := float64(p.Cooldown) * math.Pow(p.Backoff, float64(b.level))
	if !(d < float64(p.MaxCooldown)) { // also catches +Inf and NaN
		return p.MaxCooldown
	}
	return time.Duration(d)
}
