// Package keys holds the gateway keys of SPEC §12: their configuration (inline or a YAML keys
// file), the compiled set a caller's key is looked up in, model allow-lists, prices, and the
// counter Store behind rate limits, concurrency and monthly budgets. It is pure: no HTTP, no
// Caddy module; the handler wires it in as the admission stage of a call.
package keys

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Config is the `keys` block of an llm_gateway handler.
type Config struct {
	// File is the path of a YAML keys file (`keys:` a list of keys with the fields of Key). It
	// is watched and re-applied on change like the handler's `config`. Default: none.
	File string `json:"file,omitempty"`

	// Keys are the inline keys. Names are unique across these and the file's.
	Keys []*Key `json:"keys,omitempty"`

	// Store is the URL of a Redis (or Valkey) server that keeps the rate windows, open calls
	// and month totals, so that several gateways share them (SPEC §14):
	// redis://[user:password@]host:port/db, or rediss:// for TLS; placeholders such as
	// {env.REDIS_URL} are expanded at provision. Default: none, the counters are in-process.
	Store string `json:"store,omitempty"`

	// StoreFailure is what calls get while the store is unreachable: "open" (default) serves
	// them, counted in-process on each node; "closed" answers 503.
	StoreFailure string `json:"store_failure,omitempty"`
}

// Store failure modes.
const (
	StoreFailureOpen   = "open"
	StoreFailureClosed = "closed"
)

// Key is one gateway key as configured.
type Key struct {
	// Name identifies the key in the audit log, metrics and counters. Required.
	Name string `json:"name"`
	// Secret is the key itself; placeholders such as {env.TEAM_A_KEY} are expanded at
	// provision. Exactly one of Secret and Hash is required.
	Secret string `json:"secret,omitempty"`
	// Hash is "sha256:<64 hex>", the SHA-256 of the secret, so no plaintext is kept at rest.
	Hash string `json:"hash,omitempty"`
	// Models are glob patterns (`*` any run of characters, `?` one) of the models the key may
	// call, as asked for or reached by a model fallback (which is not taken to any other model).
	// Default: every model.
	Models []string `json:"models,omitempty"`
	// RPM is the number of calls admitted per rolling 60 s. 0: no limit.
	RPM int64 `json:"rpm,omitempty"`
	// TPM is the number of tokens (prompt + completion) settled per rolling 60 s above which
	// calls are refused. 0: no limit.
	TPM int64 `json:"tpm,omitempty"`
	// Concurrency is the number of calls open at once, streams included. 0: no limit.
	Concurrency int64 `json:"concurrency,omitempty"`
	// Budget is "<n> tokens monthly" or "<n> usd monthly" (n may end in k, M or G). Empty: none.
	Budget string `json:"budget,omitempty"`
	// Expires is the date (YYYY-MM-DD, local midnight) or RFC 3339 time from which the key is
	// refused. Empty: never.
	Expires string `json:"expires,omitempty"`
}

// Price is what one model costs, in USD per 1M tokens.
type Price struct {
	// Model is a model name or glob pattern.
	Model  string  `json:"model"`
	Input  float64 `json:"input"`
	Output float64 `json:"output"`
}

// Budget is a parsed monthly budget; at most one field is set.
type Budget struct {
	Tokens int64
	USD    float64
}

// ParseBudget parses "<n> tokens|usd monthly". n is a decimal number with an optional suffix
// k (thousand), M (million) or G (billion); a token budget must come out whole.
func ParseBudget(s string) (Budget, error) {
	f := strings.Fields(s)
	if len(f) != 3 || f[2] != "monthly" {
		return Budget{}, fmt.Errorf("want \"<n> tokens monthly\" or \"<n> usd monthly\", got %q", s)
	}
	n, err := parseAmount(f[0])
	if err != nil {
		return Budget{}, err
	}
	switch strings.ToLower(f[1]) {
	case "tokens":
		if n != math.Trunc(n) || n >= 1<<53 {
			return Budget{}, fmt.Errorf("token budget %q must be a whole number below 2^53", f[0])
		}
		return Budget{Tokens: int64(n)}, nil
	case "usd":
		return Budget{USD: n}, nil
	}
	return Budget{}, fmt.Errorf("budget unit %q: want tokens or usd", f[1])
}

// parseAmount parses a positive decimal with an optional k, M or G suffix.
func parseAmount(s string) (float64, error) {
	mult := 1.0
	num := s
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, num = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, num = 1e6, s[:len(s)-1]
	case strings.HasSuffix(s, "G"), strings.HasSuffix(s, "B"):
		mult, num = 1e9, s[:len(s)-1]
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) || n <= 0 || strings.ContainsAny(num, "eExXpP_") {
		return 0, fmt.Errorf("budget amount %q: want a positive number such as 200, 12.5 or 50M", s)
	}
	return n * mult, nil
}

// ParseExpires parses a date (YYYY-MM-DD, midnight local time) or an RFC 3339 time.
func ParseExpires(s string) (time.Time, error) {
	if t, err := time.ParseInLocation("2006-01-02", s, time.Local); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("expires %q: want YYYY-MM-DD or an RFC 3339 time", s)
	}
	return t, nil
}

// ParseHash parses "sha256:<64 hex>".
func ParseHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hexPart) != 2*sha256.Size {
		return h, fmt.Errorf("hash: want sha256:<64 hex digits>")
	}
	if _, err := hex.Decode(h[:], []byte(hexPart)); err != nil {
		return h, fmt.Errorf("hash: want sha256:<64 hex digits>")
	}
	return h, nil
}

// FormatHash formats the SHA-256 of secret as a key's `hash` value.
func FormatHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Check reports the first problem of a key's fields, naming the key and field; placeholders in
// Secret are not expanded yet, so an empty expansion is caught by Compile.
func (k *Key) Check() error {
	if k.Name == "" {
		return fmt.Errorf("key without a name")
	}
	if !validName(k.Name) {
		return fmt.Errorf("key %q: name: want letters, digits, '.', '_' or '-' (at most 64)", k.Name)
	}
	switch {
	case k.Secret == "" && k.Hash == "":
		return fmt.Errorf("key %s: secret or hash is required", k.Name)
	case k.Secret != "" && k.Hash != "":
		return fmt.Errorf("key %s: give secret or hash, not both", k.Name)
	}
	if k.Hash != "" {
		if _, err := ParseHash(k.Hash); err != nil {
			return fmt.Errorf("key %s: %w", k.Name, err)
		}
	}
	for _, m := range k.Models {
		if m == "" {
			return fmt.Errorf("key %s: models: empty pattern", k.Name)
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"rpm", k.RPM}, {"tpm", k.TPM}, {"concurrency", k.Concurrency}} {
		if f.v < 0 {
			return fmt.Errorf("key %s: %s: want a number >= 0, got %d", k.Name, f.name, f.v)
		}
	}
	if k.Budget != "" {
		if _, err := ParseBudget(k.Budget); err != nil {
			return fmt.Errorf("key %s: budget: %w", k.Name, err)
		}
	}
	if k.Expires != "" {
		if _, err := ParseExpires(k.Expires); err != nil {
			return fmt.Errorf("key %s: %w", k.Name, err)
		}
	}
	return nil
}

// validName reports whether s can name a key: it lands in metric labels, the audit log and the
// counters' keys, so it is short and plain.
func validName(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Check reports the first problem of a price.
func (p *Price) Check() error {
	if p.Model == "" {
		return fmt.Errorf("price without a model")
	}
	if p.Input < 0 || p.Output < 0 || math.IsNaN(p.Input) || math.IsNaN(p.Output) || math.IsInf(p.Input, 0) || math.IsInf(p.Output, 0) {
		return fmt.Errorf("price %s: want input and output >= 0", p.Model)
	}
	return nil
}

// Validate checks the inline keys: each key's fields and unique names.
func (c *Config) Validate() error {
	seen := make(map[string]bool, len(c.Keys))
	for _, k := range c.Keys {
		if k == nil {
			return fmt.Errorf("keys: null key")
		}
		if err := k.Check(); err != nil {
			return err
		}
		if seen[k.Name] {
			return fmt.Errorf("key %s: defined twice", k.Name)
		}
		seen[k.Name] = true
	}
	return nil
}
