package keys

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"time"
)

// Entry is a compiled key: what admission needs of it.
type Entry struct {
	Name    string
	Limits  Limits
	Expires time.Time // zero: never
	models  []string  // glob patterns; nil: every model
	hash    [sha256.Size]byte
}

// Expired reports whether the key is refused at now.
func (e *Entry) Expired(now time.Time) bool { return !e.Expires.IsZero() && !now.Before(e.Expires) }

// Allows reports whether the key may call model.
func (e *Entry) Allows(model string) bool {
	if e.models == nil {
		return true
	}
	for _, p := range e.models {
		if Match(p, model) {
			return true
		}
	}
	return false
}

// Set is the compiled keys of one configuration, looked up by the SHA-256 of a presented secret.
//
// The map is indexed by the hash, never by the secret: a lookup's timing depends only on the
// hash of what the caller sent, which tells an attacker nothing about any stored secret (finding
// a secret from its hash is a preimage search), so the lookup needs no constant-time scan of
// every key, which would cost O(keys) per call. The found entry's hash is then compared with
// subtle.ConstantTimeCompare so that no byte-wise early exit is ever taken on key material.
type Set struct {
	byHash map[[sha256.Size]byte]*Entry
	byName map[string]*Entry
	prices []Price
}

// Compile builds the set of keys, expanding each secret with expand (nil: as written). Names
// must be unique and every secret must expand to a non-empty value.
func Compile(keys []*Key, prices []Price, expand func(string) string) (*Set, error) {
	s := &Set{
		byHash: make(map[[sha256.Size]byte]*Entry, len(keys)),
		byName: make(map[string]*Entry, len(keys)),
		prices: prices,
	}
	for _, k := range keys {
		if err := k.Check(); err != nil {
			return nil, err
		}
		if s.byName[k.Name] != nil {
			return nil, fmt.Errorf("key %s: defined twice (names are unique across the keys file and inline keys)", k.Name)
		}
		e := &Entry{Name: k.Name, Limits: Limits{RPM: k.RPM, TPM: k.TPM, Concurrency: k.Concurrency}}
		if k.Secret != "" {
			secret := k.Secret
			if expand != nil {
				secret = expand(secret)
			}
			if secret == "" {
				return nil, fmt.Errorf("key %s: secret %q expands to an empty key", k.Name, k.Secret)
			}
			e.hash = sha256.Sum256([]byte(secret))
		} else {
			e.hash, _ = ParseHash(k.Hash) // checked above
		}
		if len(k.Models) > 0 {
			e.models = append([]string(nil), k.Models...)
		}
		if k.Budget != "" {
			b, _ := ParseBudget(k.Budget)
			e.Limits.BudgetTokens, e.Limits.BudgetUSD = b.Tokens, b.USD
		}
		if k.Expires != "" {
			e.Expires, _ = ParseExpires(k.Expires)
		}
		if other := s.byHash[e.hash]; other != nil {
			return nil, fmt.Errorf("key %s: same secret as key %s", k.Name, other.Name)
		}
		s.byHash[e.hash] = e
		s.byName[k.Name] = e
	}
	for i := range prices {
		if err := prices[i].Check(); err != nil {
			return nil, err
		}
	}
	for _, e := range s.byName {
		if e.Limits.BudgetUSD > 0 && len(prices) == 0 {
			return nil, fmt.Errorf("key %s: budget in usd needs prices", e.Name)
		}
	}
	return s, nil
}

// Len is the number of keys.
func (s *Set) Len() int { return len(s.byName) }

// Lookup returns the key whose secret is secret, or nil.
func (s *Set) Lookup(secret string) *Entry {
	if secret == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(secret))
	e := s.byHash[sum]
	if e == nil || subtle.ConstantTimeCompare(e.hash[:], sum[:]) != 1 {
		return nil
	}
	return e
}

// ByName returns the key named name, or nil.
func (s *Set) ByName(name string) *Entry { return s.byName[name] }

// Cost returns the USD cost of a call to model, or ok false when no price names the model.
// Exact names win over patterns; otherwise the first matching pattern in config order applies.
func (s *Set) Cost(model string, prompt, completion int64) (usd float64, ok bool) {
	return PriceCost(s.prices, model, prompt, completion)
}

// PriceCost is Set.Cost over a price list.
func PriceCost(prices []Price, model string, prompt, completion int64) (usd float64, ok bool) {
	var found *Price
	for i := range prices {
		p := &prices[i]
		if p.Model == model {
			found = p
			break
		}
		if found == nil && Match(p.Model, model) {
			found = p
		}
	}
	if found == nil {
		return 0, false
	}
	return (float64(prompt)*found.Input + float64(completion)*found.Output) / 1e6, true
}

// Match reports whether name matches the glob pattern: `*` matches any run of characters
// (slashes included: model names such as meta-llama/Llama-3 have them), `?` any one byte, and
// every other byte itself.
func Match(pattern, name string) bool {
	// The classic linear-time wildcard match with one backtrack point.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
