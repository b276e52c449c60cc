package sse

import (
	"strings"
	"testing"
)

// refSplit is the reference for the tag state machine on a whole text: the
// text outside <think>…</think> blocks, and the text inside them.
func refSplit(s string) (content, reasoning string) {
	in := false
	for {
		tag := openTag
		if in {
			tag = closeTag
		}
		before, after, ok := strings.Cut(s, tag)
		if in {
			reasoning += before
		} else {
			content += before
		}
		if !ok {
			return content, reasoning
		}
		s, in = after, !in
	}
}

// runSplit feeds chunks through a Reasoning stream and returns the
// concatenated content and reasoning, flush included.
func runSplit(t *testing.T, chunks []string) (content, reasoning string) {
	t.Helper()
	s := NewThinkingStream(Reasoning)
	for _, c := range chunks {
		out := s.Step(Piece{Content: []byte(c), HasContent: true})
		if !out.HasContent {
			t.Fatalf("Step(%q) dropped content", c)
		}
		if strings.Contains(string(out.Content), openTag) || strings.Contains(string(out.Reasoning), closeTag) {
			t.Fatalf("Step(%q) leaked a tag: %q / %q", c, out.Content, out.Reasoning)
		}
		content += string(out.Content)
		reasoning += string(out.Reasoning)
	}
	f := s.Flush()
	return content + string(f.Content), reasoning + string(f.Reasoning)
}

func TestThinkingStreamSplitEverywhere(t *testing.T) {
	texts := []string{
		"<think>R</think>A",
		"<think>\nlet me see\n</think>\n\nThe answer",
		"pre<think>R1</think>mid<think>R2</think>post",
		"<thinking>not a tag</thinking>",
		"a < b and c <= d </think> stays",
		"<<think>>x<</think>>",
		"<think>unclosed",
		"ends with <thi",
		"<think>R</thi",
		"<think></think>",
		"",
	}
	for _, text := range texts {
		wantC, wantR := refSplit(text)
		t.Run(text, func(t *testing.T) {
			if c, r := runSplit(t, []string{text}); c != wantC || r != wantR {
				t.Fatalf("whole: got %q/%q, want %q/%q", c, r, wantC, wantR)
			}
			for i := 0; i <= len(text); i++ {
				for j := i; j <= len(text); j++ {
					chunks := []string{text[:i], text[i:j], text[j:]}
					if c, r := runSplit(t, chunks); c != wantC || r != wantR {
						t.Fatalf("split %q: got %q/%q, want %q/%q", chunks, c, r, wantC, wantR)
					}
				}
			}
		})
	}
}

func TestThinkingStreamReasoningField(t *testing.T) {
	s := NewThinkingStream(ReasoningContent)
	// A delta with reasoning keeps its content untouched, tags included.
	out := s.Step(Piece{Content: []byte("<think>x"), HasContent: true, Reasoning: []byte("R")})
	if string(out.Content) != "<think>x" || string(out.Reasoning) != "R" {
		t.Fatalf("got %q/%q", out.Content, out.Reasoning)
	}
	// Null content with no reasoning: nothing to do.
	if out := s.Step(Piece{}); out.HasContent || len(out.Reasoning) != 0 {
		t.Fatalf("null content changed: %+v", out)
	}
	if f := s.Flush(); f.HasContent || len(f.Reasoning) != 0 {
		t.Fatalf("nothing held, Flush = %+v", f)
	}
}

func TestThinkingStreamThinkTag(t *testing.T) {
	type in struct{ reasoning, content string }
	tests := []struct {
		name  string
		steps []in
		want  []string // content out per step
		flush string
	}{
		{"reasoning then content",
			[]in{{reasoning: "R1"}, {reasoning: "R2"}, {content: "A"}, {content: "B"}},
			[]string{"<think>R1", "R2", "</think>A", "B"}, ""},
		{"unclosed is closed by flush",
			[]in{{reasoning: "R"}}, []string{"<think>R"}, "</think>"},
		{"both in one delta",
			[]in{{reasoning: "R", content: "A"}}, []string{"<think>R</think>A"}, ""},
		{"empty content does not close",
			[]in{{reasoning: "R"}, {content: ""}, {content: "A"}},
			[]string{"<think>R", "", "</think>A"}, ""},
		{"reasoning again reopens",
			[]in{{reasoning: "R"}, {content: "A"}, {reasoning: "S"}},
			[]string{"<think>R", "</think>A", "<think>S"}, "</think>"},
		{"content with tags passes",
			[]in{{content: "<think>x</think>y"}}, []string{"<think>x</think>y"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewThinkingStream(ThinkTag)
			for i, st := range tt.steps {
				out := s.Step(Piece{Content: []byte(st.content), HasContent: st.content != "" || st.reasoning == "", Reasoning: []byte(st.reasoning)})
				if string(out.Content) != tt.want[i] || len(out.Reasoning) != 0 {
					t.Errorf("step %d: got %q (reasoning %q), want %q", i, out.Content, out.Reasoning, tt.want[i])
				}
			}
			if f := s.Flush(); string(f.Content) != tt.flush {
				t.Errorf("Flush = %q, want %q", f.Content, tt.flush)
			}
		})
	}
}

func TestSplitThink(t *testing.T) {
	tests := []struct{ in, reasoning, remainder string }{
		{"<think>R</think>A", "R", "A"},
		{"<think>\nmulti\nline\n</think>\n\nA", "\nmulti\nline\n", "\n\nA"},
		{"x<think>a</think>y<think></think>z<think>b</think>", "a\nb", "xyz"},
		{"<think>unclosed", "", "<think>unclosed"},
		{"<think>a<think>b</think>c", "a<think>b", "c"},
		{"plain", "", "plain"},
	}
	for _, tt := range tests {
		r, rem := splitThink(nil, nil, []byte(tt.in))
		if string(r) != tt.reasoning || string(rem) != tt.remainder {
			t.Errorf("splitThink(%q) = %q, %q; want %q, %q", tt.in, r, rem, tt.reasoning, tt.remainder)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range []Format{Passthrough, ThinkTag, Reasoning, ReasoningContent} {
		got, err := ParseFormat(f.String())
		if err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %v, %v", f.String(), got, err)
		}
	}
	if f, err := ParseFormat(""); err != nil || f != Passthrough {
		t.Errorf("empty format: %v, %v", f, err)
	}
	if _, err := ParseFormat("think-tag"); err == nil {
		t.Error("ParseFormat accepted an unknown format")
	}
}
