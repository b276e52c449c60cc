package router

import (
	"slices"
	"strings"
	"testing"
)

// client builds a test client serving models by the given rules.
func client(name string, priority int, rules ...MatchRule) *Client {
	return &Client{Name: name, BaseURL: "http://" + name + ".invalid/v1", Priority: priority, Match: rules}
}

func keyword(v ...string) MatchRule { return MatchRule{Type: MatchKeyword, Values: v} }
func exact(v ...string) MatchRule   { return MatchRule{Type: MatchExact, Values: v} }
func regex(v ...string) MatchRule   { return MatchRule{Type: MatchRegex, Values: v} }

func mustTable(t testing.TB, clients ...*Client) *Table {
	t.Helper()
	tb, err := NewTable(clients)
	if err != nil {
		t.Fatalf("NewTable: %v", err)
	}
	return tb
}

func TestMatchRule(t *testing.T) {
	tests := []struct {
		name  string
		rule  MatchRule
		model string
		want  bool
	}{
		{"keyword substring", keyword("gpt-4"), "openai/gpt-4o", true},
		{"keyword prefix", keyword("gpt-4"), "gpt-4", true},
		{"keyword case-sensitive", keyword("gpt-4"), "GPT-4", false},
		{"keyword any value", keyword("claude", "qwen"), "qwen3-32b", true},
		{"keyword none", keyword("claude", "qwen"), "llama", false},
		{"exact equal", exact("gpt-4o"), "gpt-4o", true},
		{"exact is not substring", exact("gpt-4"), "gpt-4o", false},
		{"exact case-sensitive", exact("gpt-4o"), "GPT-4o", false},
		{"exact any value", exact("a", "b"), "b", true},
		{"regex unanchored", regex(`4o`), "gpt-4o-mini", true},
		{"regex anchored", regex(`^gpt-4o$`), "gpt-4o-mini", false},
		{"regex alternative value", regex(`^x$`, `^qwen\d`), "qwen3", true},
		{"regex case-insensitive flag", regex(`(?i)^gpt`), "GPT-4", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.rule.Compile(); err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if got := tt.rule.Matches(tt.model); got != tt.want {
				t.Errorf("Matches(%q) = %v, want %v", tt.model, got, tt.want)
			}
		})
	}
}

func TestMatchRuleCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		rule MatchRule
		want string
	}{
		{"no values", MatchRule{Type: MatchKeyword}, "no values"},
		{"unknown type", MatchRule{Type: "prefix", Values: []string{"x"}}, "unknown match type"},
		{"bad regex", regex(`ok`, `(`), "match regex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.rule.Compile()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile() = %v, want error containing %q", err, tt.want)
			}
			// A failed Compile must not leave a state that a second call takes as compiled.
			if err := tt.rule.Compile(); err == nil {
				t.Fatalf("second Compile() succeeded after a failure")
			}
		})
	}
}

func TestNewTableErrors(t *testing.T) {
	tests := []struct {
		name    string
		clients []*Client
		want    string
	}{
		{"duplicate", []*Client{client("a", 1, keyword("x")), client("a", 1, keyword("y"))}, `duplicate client name "a"`},
		{"nil", []*Client{nil}, "nil"},
		{"no name", []*Client{client("", 1, keyword("x"))}, "no name"},
		{"bad rule", []*Client{client("a", 1, regex("["))}, "client a: match regex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTable(tt.clients)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewTable() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestCandidates(t *testing.T) {
	tb := mustTable(t,
		client("kw", 1, keyword("gpt")),
		client("ex", 1, exact("gpt-4o")),
		client("re", 1, regex(`^(gpt|o\d)`)),
		client("multi", 1, exact("llama"), keyword("4o")),
		client("none", 1, exact("never")),
	)
	tests := []struct {
		model string
		want  []string
	}{
		{"gpt-4o", []string{"kw", "ex", "re", "multi"}},
		{"gpt-3.5", []string{"kw", "re"}},
		{"o3", []string{"re"}},
		{"llama", []string{"multi"}},
		{"mistral-4o", []string{"multi"}},
		{"unknown", nil},
		{"", nil},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			prefix := []int{99}
			got := tb.Candidates(tt.model, prefix)
			if got[0] != 99 {
				t.Fatalf("Candidates overwrote dst: %v", got)
			}
			if names := names(tb, got[1:]); !slices.Equal(names, tt.want) {
				t.Errorf("Candidates(%q) = %v, want %v", tt.model, names, tt.want)
			}
		})
	}
}

func TestIndex(t *testing.T) {
	tb := mustTable(t, client("a", 1, keyword("x")), client("b", 1, keyword("y")))
	if i, ok := tb.Index("b"); !ok || i != 1 {
		t.Errorf("Index(b) = %d, %v; want 1, true", i, ok)
	}
	if _, ok := tb.Index("c"); ok {
		t.Errorf("Index(c) found a client")
	}
}

// names maps client indices to names; nil for none, to compare with slices.Equal.
func names(tb *Table, idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, tb.Clients[i].Name)
	}
	return out
}
