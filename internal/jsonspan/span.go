// Package jsonspan locates JSON values by their byte offsets. It never builds a value: it reports where
// strings, values, object members and array elements start and end, so that a caller can read the few
// members it needs and splice edits into a document while every other byte (unknown members, white
// space, key order, the spelling of numbers and escapes) passes through as it was. It also holds the one
// JSON string escaper and unescaper of the module.
//
// Every function speaks the same vocabulary (SkipSpace, a string's end, a value's end, a walk over an
// object's members or an array's elements) at one of two depths, the Mode:
//
//   - Strict validates as encoding/json does and says where the first error is: ScanString, ScanValue,
//     and the walks in Strict mode. Request bodies go through it, so that a body the gateway accepts and
//     edits is one the upstream's decoder accepts too.
//   - Loose only delimits: StringEnd finds the closing quote, ValueEnd matches brackets, and the walks
//     in Loose mode check the separators but not what lies between them. Upstream answers go through it:
//     there a failed walk only means "leave the input alone", so a transform applies to whatever it can
//     find its members in, as it always has. On valid JSON both depths find the same spans (fuzzed).
package jsonspan

import (
	"errors"
	"fmt"
)

// Span is the half-open byte range [Start, End) of a token or value in a document.
type Span struct{ Start, End int }

// In returns the bytes of s in b, the document it was found in.
func (s Span) In(b []byte) []byte { return b[s.Start:s.End] }

// Mode is how deep a walk looks: see the package documentation.
type Mode uint8

const (
	// Strict validates everything it walks over as encoding/json would.
	Strict Mode = iota
	// Loose delimits values without validating them.
	Loose
)

// ErrSyntax is wrapped by every error of the package.
var ErrSyntax = errors.New("invalid JSON")

// errLoose is the error of a Loose walk that cannot delimit a value. It says no more, so that a failed
// walk over an upstream chunk costs no allocation.
var errLoose = fmt.Errorf("%w: cannot delimit a value", ErrSyntax)

// SyntaxError returns the error for the byte at b[i] (or the end of input) when want was expected. The
// package's own errors are made by it; callers use it for what they check themselves, such as the end
// of input after a value.
func SyntaxError(b []byte, i int, want string) error {
	if i >= len(b) {
		return fmt.Errorf("%w: unexpected end of input, want %s", ErrSyntax, want)
	}
	return fmt.Errorf("%w: unexpected %q at offset %d, want %s", ErrSyntax, b[i], i, want)
}

// isSpace reports whether c is JSON insignificant white space.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// SkipSpace returns the index of the first byte at or after i that is not white space, or len(b).
func SkipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}
