package reqbody

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	json "github.com/goccy/go-json"
)

// This file holds a small validating JSON scanner. It never builds values: it reports the byte spans of
// the members of an object and the elements of an array, so that Apply can splice new bytes in place of
// exactly the values it edits and copy everything else verbatim.

// span is the half-open byte range [start, end) of a JSON token or value in a body.
type span struct{ start, end int }

// errSyntax is wrapped by every syntax error of the scanner.
var errSyntax = errors.New("invalid JSON")

func syntaxErr(b []byte, i int, what string) error {
	if i >= len(b) {
		return fmt.Errorf("%w: unexpected end of input, want %s", errSyntax, what)
	}
	return fmt.Errorf("%w: unexpected %q at offset %d, want %s", errSyntax, b[i], i, what)
}

// isSpace reports whether c is JSON insignificant white space.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// skipSpace returns the index of the first byte at or after i that is not white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// plainStringByte marks the bytes that may appear in a string without any check: everything but the
// quote, the backslash and the control characters.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString validates the string that starts at b[i] (a quote) and returns the index just past its
// closing quote, and whether it holds any escape sequence.
func scanString(b []byte, i int) (end int, escaped bool, err error) {
	if i >= len(b) || b[i] != '"' {
		return 0, false, syntaxErr(b, i, "string")
	}
	i++
	for {
		// Eight bytes at a time while none of them needs a look, then byte by byte.
		for i+8 <= len(b) && plainWord(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plainStringByte[b[i]] {
			i++
		}
		if i >= len(b) {
			return 0, false, syntaxErr(b, i, "end of string")
		}
		switch b[i] {
		case '"':
			return i + 1, escaped, nil
		case '\\':
			escaped = true
			if i+1 >= len(b) {
				return 0, false, syntaxErr(b, i+1, "escape")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return 0, false, syntaxErr(b, len(b), "4 hex digits")
				}
				for j := i + 2; j < i+6; j++ {
					if !isHex(b[j]) {
						return 0, false, syntaxErr(b, j, "hex digit")
					}
				}
				i += 6
			default:
				return 0, false, syntaxErr(b, i+1, "escape")
			}
		default: // a control character
			return 0, false, syntaxErr(b, i, "string character")
		}
	}
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plainWord reports whether none of the eight bytes of w is a quote, a backslash or a control character.
// These are the classic exact SWAR tests for a zero byte (of w xor the quote or backslash repeated) and
// for a byte below 0x20.
func plainWord(w uint64) bool {
	quote := w ^ ('"' * ones)
	backslash := w ^ ('\\' * ones)
	special := (quote - ones) &^ quote
	special |= (backslash - ones) &^ backslash
	special |= (w - 0x20*ones) &^ w
	return special&highs == 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// scanNumber validates the number that starts at b[i] and returns the index just past it.
func scanNumber(b []byte, i int) (int, error) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return 0, syntaxErr(b, i, "digit")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return 0, syntaxErr(b, i, "digit")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return 0, syntaxErr(b, i, "digit")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, nil
}

// scanValue validates the JSON value that starts at or after b[i] (after white space) and returns its
// span. Nesting is tracked with an explicit stack, so deep input cannot exhaust the goroutine stack.
func scanValue(b []byte, i int) (span, error) {
	var stackBuf [32]byte
	stack := stackBuf[:0] // '{' or '[' for each open container
	i = skipSpace(b, i)
	start := i
	var err error
	for {
		// i is at the start of a value.
		if i >= len(b) {
			return span{}, syntaxErr(b, i, "value")
		}
		switch c := b[i]; c {
		case '{', '[':
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			i = skipSpace(b, i+1)
			if i < len(b) && b[i] == closer {
				i++
				break // an empty container is a complete value
			}
			stack = append(stack, c)
			if c == '{' {
				if i, err = scanKeyColon(b, i); err != nil {
					return span{}, err
				}
			}
			i = skipSpace(b, i)
			continue // parse the first member's or element's value
		case '"':
			if i, _, err = scanString(b, i); err != nil {
				return span{}, err
			}
		case 't':
			if i, err = scanLiteral(b, i, "true"); err != nil {
				return span{}, err
			}
		case 'f':
			if i, err = scanLiteral(b, i, "false"); err != nil {
				return span{}, err
			}
		case 'n':
			if i, err = scanLiteral(b, i, "null"); err != nil {
				return span{}, err
			}
		default:
			if i, err = scanNumber(b, i); err != nil {
				return span{}, err
			}
		}
		// A value ended at i: close containers until one expects another value.
		for {
			if len(stack) == 0 {
				return span{start, i}, nil
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return span{}, syntaxErr(b, i, "',' or end of container")
			}
			top := stack[len(stack)-1]
			if b[i] == ',' {
				i = skipSpace(b, i+1)
				if top == '{' {
					if i, err = scanKeyColon(b, i); err != nil {
						return span{}, err
					}
					i = skipSpace(b, i)
				}
				break
			}
			if top == '{' && b[i] == '}' || top == '[' && b[i] == ']' {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			return span{}, syntaxErr(b, i, "',' or end of container")
		}
	}
}

// scanKeyColon validates an object key at b[i] and the colon after it, returning the index past the colon.
func scanKeyColon(b []byte, i int) (int, error) {
	i, _, err := scanString(b, i)
	if err != nil {
		return 0, err
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return 0, syntaxErr(b, i, "':'")
	}
	return i + 1, nil
}

func scanLiteral(b []byte, i int, lit string) (int, error) {
	if !bytes.HasPrefix(b[i:], []byte(lit)) {
		return 0, syntaxErr(b, i, lit)
	}
	return i + len(lit), nil
}

// objectScanner walks the members of one JSON object, validating each value as it goes.
//
//	s, err := newObjectScanner(b, i)
//	for s.next() { use(s.key, s.val) }
//	if s.err != nil { … }
type objectScanner struct {
	b        []byte
	i        int
	n        int  // members seen so far
	key, val span // the current member; key includes its quotes
	escaped  bool // whether the current key holds an escape sequence
	close    int  // index of the closing brace, once next has returned false without error
	err      error
}

// newObjectScanner starts a scan of the object at or after b[i] (after white space).
func newObjectScanner(b []byte, i int) (objectScanner, error) {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '{' {
		return objectScanner{}, syntaxErr(b, i, "'{'")
	}
	return objectScanner{b: b, i: i + 1, close: -1}, nil
}

// next advances to the next member and reports whether there is one.
func (s *objectScanner) next() bool {
	if s.err != nil || s.close >= 0 {
		return false
	}
	b := s.b
	i := skipSpace(b, s.i)
	if s.n > 0 {
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		} else if i < len(b) && b[i] == '}' {
			s.close = i
			return false
		} else {
			s.err = syntaxErr(b, i, "',' or '}'")
			return false
		}
	} else if i < len(b) && b[i] == '}' {
		s.close = i
		return false
	}
	keyStart := i
	i, esc, err := scanString(b, i)
	if err != nil {
		s.err = err
		return false
	}
	s.key, s.escaped = span{keyStart, i}, esc
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		s.err = syntaxErr(b, i, "':'")
		return false
	}
	if s.val, s.err = scanValue(b, i+1); s.err != nil {
		return false
	}
	s.i = s.val.end
	s.n++
	return true
}

// keyIs reports whether the current key, unescaped, equals name.
func (s *objectScanner) keyIs(name string) bool {
	raw := s.b[s.key.start+1 : s.key.end-1]
	if !s.escaped {
		return string(raw) == name
	}
	k, err := unquote(s.b[s.key.start:s.key.end])
	return err == nil && k == name
}

// arrayScanner walks the elements of one JSON array, validating each as it goes.
type arrayScanner struct {
	b   []byte
	i   int
	n   int
	val span
	end bool
	err error
}

// newArrayScanner starts a scan of the array at or after b[i] (after white space).
func newArrayScanner(b []byte, i int) (arrayScanner, error) {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '[' {
		return arrayScanner{}, syntaxErr(b, i, "'['")
	}
	return arrayScanner{b: b, i: i + 1}, nil
}

// next advances to the next element and reports whether there is one.
func (s *arrayScanner) next() bool {
	if s.err != nil || s.end {
		return false
	}
	b := s.b
	i := skipSpace(b, s.i)
	if i < len(b) && b[i] == ']' && s.n == 0 {
		s.end = true
		return false
	}
	if s.n > 0 {
		switch {
		case i < len(b) && b[i] == ',':
			i++
		case i < len(b) && b[i] == ']':
			s.end = true
			return false
		default:
			s.err = syntaxErr(b, i, "',' or ']'")
			return false
		}
	}
	if s.val, s.err = scanValue(b, i); s.err != nil {
		return false
	}
	s.i = s.val.end
	s.n++
	return true
}

// objectElements walks the elements of an array that are objects, giving a scanner of each one
// positioned before its first member:
//
//	elems, err := newObjectElements(b, i)
//	for elems.next() { for elems.obj.next() { … } }
//	if elems.err != nil { … }
//
// Whatever the caller leaves of an object is scanned by the following next, so every element is read
// once, not once to find its end and again to look inside. Other elements are validated and skipped.
type objectElements struct {
	b     []byte
	i     int // after the last element
	n     int // elements seen so far
	obj   objectScanner
	inObj bool // obj is the current element, its end still unknown
	done  bool
	err   error
}

// newObjectElements starts a walk of the array at or after b[i] (after white space).
func newObjectElements(b []byte, i int) (objectElements, error) {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '[' {
		return objectElements{}, syntaxErr(b, i, "'['")
	}
	return objectElements{b: b, i: i + 1}, nil
}

// next advances to the next object element and reports whether there is one.
func (s *objectElements) next() bool {
	b := s.b
	for s.err == nil && !s.done {
		if s.inObj {
			for s.obj.next() {
			}
			if s.err = s.obj.err; s.err != nil {
				return false
			}
			s.i, s.inObj = s.obj.close+1, false
		}
		i := skipSpace(b, s.i)
		if s.n > 0 {
			switch {
			case i < len(b) && b[i] == ',':
				i = skipSpace(b, i+1)
			case i < len(b) && b[i] == ']':
				s.done = true
				return false
			default:
				s.err = syntaxErr(b, i, "',' or ']'")
				return false
			}
		} else if i < len(b) && b[i] == ']' {
			s.done = true
			return false
		}
		s.n++
		if i < len(b) && b[i] == '{' {
			s.obj = objectScanner{b: b, i: i + 1, close: -1}
			s.inObj = true
			return true
		}
		var v span
		if v, s.err = scanValue(b, i); s.err == nil {
			s.i = v.end
		}
	}
	return false
}

// unquote decodes the JSON string raw (with its quotes). A string without escapes costs one copy.
func unquote(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", syntaxErr(raw, 0, "string")
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: %v", errSyntax, err)
	}
	return s, nil
}

const hexDigits = "0123456789abcdef"

// appendQuoted appends s to dst as a JSON string. It escapes only what JSON requires (quote, backslash,
// control characters) and replaces invalid UTF-8 with U+FFFD, so the output is valid for any input.
func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
