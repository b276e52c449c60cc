package sse

import (
	"bytes"
	"fmt"
)

// Format is the shape into which a model's reasoning is normalised.
type Format uint8

// The thinking formats of SPEC §6.
const (
	// Passthrough leaves reasoning as the upstream sent it.
	Passthrough Format = iota
	// ThinkTag puts reasoning inside content, as "<think>R</think>A".
	ThinkTag
	// Reasoning puts reasoning in a "reasoning" field.
	Reasoning
	// ReasoningContent puts reasoning in a "reasoning_content" field.
	ReasoningContent
)

// ParseFormat parses a thinking_format config value; the empty string is
// Passthrough.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "", "passthrough":
		return Passthrough, nil
	case "think_tag":
		return ThinkTag, nil
	case "reasoning":
		return Reasoning, nil
	case "reasoning_content":
		return ReasoningContent, nil
	}
	return Passthrough, fmt.Errorf("unknown thinking format %q (want passthrough, think_tag, reasoning or reasoning_content)", s)
}

// String returns the config spelling of f.
func (f Format) String() string {
	switch f {
	case Passthrough:
		return "passthrough"
	case ThinkTag:
		return "think_tag"
	case Reasoning:
		return "reasoning"
	case ReasoningContent:
		return "reasoning_content"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// field returns the name of the JSON field f targets, or "" when f does not
// target a field.
func (f Format) field() string {
	switch f {
	case Reasoning:
		return "reasoning"
	case ReasoningContent:
		return "reasoning_content"
	}
	return ""
}

const (
	openTag  = "<think>"
	closeTag = "</think>"
)

// Piece is the thinking-related text of one chat delta, unescaped.
type Piece struct {
	// Content is the delta's content text; meaningful when HasContent.
	Content []byte
	// HasContent reports whether content is (or becomes) a string.
	HasContent bool
	// Reasoning is the delta's reasoning text; empty means none.
	Reasoning []byte
}

// ThinkingStream is the state machine that normalises the reasoning of one
// streamed chat choice, delta by delta (behaviour.md §6.2, streaming).
//
// For the Reasoning and ReasoningContent formats, a delta that carries
// reasoning text keeps its content untouched; otherwise its content is
// split on <think> and </think> tags, which may be cut anywhere across
// deltas: text inside tags becomes reasoning, text outside stays content,
// and a trailing fragment that may be the start of a tag is held back until
// the next delta or Flush.
//
// For ThinkTag, reasoning text moves into content, opened by <think> and
// closed by </think> before the next non-empty content; content that
// already carries tags passes through.
//
// Slices in returned Pieces may alias the stream's buffers or the input and
// are valid until the next call.
type ThinkingStream struct {
	format  Format
	inThink bool
	carry   []byte // a held possible tag prefix (Reasoning formats)
	joined  []byte // carry followed by the next delta's text
	content []byte
	reason  []byte
	flushed []byte
}

// NewThinkingStream returns a stream normalising to format f.
func NewThinkingStream(f Format) *ThinkingStream {
	return &ThinkingStream{format: f}
}

// Step normalises one delta.
func (s *ThinkingStream) Step(in Piece) Piece {
	switch s.format {
	case ThinkTag:
		out := s.content[:0]
		if len(in.Reasoning) > 0 {
			if !s.inThink {
				out = append(out, openTag...)
				s.inThink = true
			}
			out = append(out, in.Reasoning...)
		}
		if in.HasContent && len(in.Content) > 0 {
			if s.inThink {
				out = append(out, closeTag...)
				s.inThink = false
			}
			out = append(out, in.Content...)
		}
		s.content = out
		return Piece{Content: out, HasContent: in.HasContent || len(out) > 0}
	case Reasoning, ReasoningContent:
		if len(in.Reasoning) > 0 || !in.HasContent {
			return in
		}
		s.content, s.reason = s.split(s.content[:0], s.reason[:0], in.Content)
		return Piece{Content: s.content, HasContent: true, Reasoning: s.reason}
	}
	return in
}

// split runs text through the tag state machine, appending the text outside
// tags to content and the text inside to reasoning.
func (s *ThinkingStream) split(content, reasoning, text []byte) ([]byte, []byte) {
	if len(s.carry) > 0 {
		// Rare: only after a delta that ended in a fragment such as "<thi".
		s.joined = append(append(s.joined[:0], s.carry...), text...)
		text = s.joined
	}
	for {
		tag := openTag
		if s.inThink {
			tag = closeTag
		}
		i := bytes.Index(text, []byte(tag))
		keep := i
		if i < 0 {
			keep = len(text) - partialSuffix(text, tag)
		}
		if s.inThink {
			reasoning = append(reasoning, text[:keep]...)
		} else {
			content = append(content, text[:keep]...)
		}
		if i < 0 {
			s.carry = append(s.carry[:0], text[keep:]...)
			return content, reasoning
		}
		text = text[i+len(tag):]
		s.inThink = !s.inThink
	}
}

// partialSuffix returns the length of the longest suffix of text that is a
// proper prefix of tag.
func partialSuffix(text []byte, tag string) int {
	for k := min(len(tag)-1, len(text)); k > 0; k-- {
		if string(text[len(text)-k:]) == tag[:k] {
			return k
		}
	}
	return 0
}

// Flush returns what the stream still holds at the end of the choice: a
// held tag fragment (as content or reasoning, by state) for the Reasoning
// formats, the closing </think> for ThinkTag. The zero Piece means nothing.
func (s *ThinkingStream) Flush() Piece {
	switch s.format {
	case ThinkTag:
		if s.inThink {
			s.inThink = false
			return Piece{Content: []byte(closeTag), HasContent: true}
		}
	case Reasoning, ReasoningContent:
		if len(s.carry) == 0 {
			return Piece{}
		}
		s.flushed = append(s.flushed[:0], s.carry...)
		s.carry = s.carry[:0]
		if s.inThink {
			return Piece{Reasoning: s.flushed}
		}
		return Piece{Content: s.flushed, HasContent: true}
	}
	return Piece{}
}

// holding reports whether the stream must see every delta: it is inside a
// think block or holds a tag fragment. When it is not, a delta without
// reasoning and without '<' in its content passes unchanged.
func (s *ThinkingStream) holding() bool {
	return s.inThink || len(s.carry) > 0
}

// splitThink extracts every <think>…</think> block of a complete message
// (behaviour.md §6.2, non-streaming): the non-empty block texts joined by
// "\n", and the text outside the blocks. An unclosed <think> stays in the
// remainder.
func splitThink(reasoning, remainder, text []byte) ([]byte, []byte) {
	for {
		i := bytes.Index(text, []byte(openTag))
		if i < 0 {
			break
		}
		j := bytes.Index(text[i+len(openTag):], []byte(closeTag))
		if j < 0 {
			break
		}
		remainder = append(remainder, text[:i]...)
		if block := text[i+len(openTag) : i+len(openTag)+j]; len(block) > 0 {
			if len(reasoning) > 0 {
				reasoning = append(reasoning, '\n')
			}
			reasoning = append(reasoning, block...)
		}
		text = text[i+len(openTag)+j+len(closeTag):]
	}
	return reasoning, append(remainder, text...)
}
