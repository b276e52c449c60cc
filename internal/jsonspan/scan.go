package jsonspan

import (
	"bytes"
	"encoding/binary"
)

// This file is the Strict depth: each function validates what it passes over as encoding/json would,
// and its error says where the input first went wrong.

// plainStringByte marks the bytes that may appear in a string without any check: everything but the
// quote, the backslash and the control characters.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// ScanString validates the string that starts at b[i] (a quote) and returns the index just past its
// closing quote, and whether it holds any escape sequence. Bytes of 0x80 and above are not checked:
// invalid UTF-8 is valid JSON to encoding/json, which decodes it to U+FFFD, as Unquote does.
func ScanString(b []byte, i int) (end int, escaped bool, err error) {
	if i >= len(b) || b[i] != '"' {
		return 0, false, SyntaxError(b, i, "string")
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
			return 0, false, SyntaxError(b, i, "end of string")
		}
		switch b[i] {
		case '"':
			return i + 1, escaped, nil
		case '\\':
			escaped = true
			if i+1 >= len(b) {
				return 0, false, SyntaxError(b, i+1, "escape")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return 0, false, SyntaxError(b, len(b), "4 hex digits")
				}
				for j := i + 2; j < i+6; j++ {
					if !isHex(b[j]) {
						return 0, false, SyntaxError(b, j, "hex digit")
					}
				}
				i += 6
			default:
				return 0, false, SyntaxError(b, i+1, "escape")
			}
		default: // a control character
			return 0, false, SyntaxError(b, i, "string character")
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
		return 0, SyntaxError(b, i, "digit")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return 0, SyntaxError(b, i, "digit")
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
			return 0, SyntaxError(b, i, "digit")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, nil
}

// ScanValue validates the JSON value that starts at or after b[i] (after white space) and returns its
// span. What follows the value is not looked at. Nesting is tracked with an explicit stack, so deep
// input cannot exhaust the goroutine stack.
func ScanValue(b []byte, i int) (Span, error) {
	var stackBuf [32]byte
	stack := stackBuf[:0] // '{' or '[' for each open container
	i = SkipSpace(b, i)
	start := i
	var err error
	for {
		// i is at the start of a value.
		if i >= len(b) {
			return Span{}, SyntaxError(b, i, "value")
		}
		switch c := b[i]; c {
		case '{', '[':
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			i = SkipSpace(b, i+1)
			if i < len(b) && b[i] == closer {
				i++
				break // an empty container is a complete value
			}
			stack = append(stack, c)
			if c == '{' {
				if i, err = scanKeyColon(b, i); err != nil {
					return Span{}, err
				}
			}
			i = SkipSpace(b, i)
			continue // parse the first member's or element's value
		case '"':
			if i, _, err = ScanString(b, i); err != nil {
				return Span{}, err
			}
		case 't':
			if i, err = scanLiteral(b, i, "true"); err != nil {
				return Span{}, err
			}
		case 'f':
			if i, err = scanLiteral(b, i, "false"); err != nil {
				return Span{}, err
			}
		case 'n':
			if i, err = scanLiteral(b, i, "null"); err != nil {
				return Span{}, err
			}
		default:
			if i, err = scanNumber(b, i); err != nil {
				return Span{}, err
			}
		}
		// A value ended at i: close containers until one expects another value.
		for {
			if len(stack) == 0 {
				return Span{start, i}, nil
			}
			i = SkipSpace(b, i)
			if i >= len(b) {
				return Span{}, SyntaxError(b, i, "',' or end of container")
			}
			top := stack[len(stack)-1]
			if b[i] == ',' {
				i = SkipSpace(b, i+1)
				if top == '{' {
					if i, err = scanKeyColon(b, i); err != nil {
						return Span{}, err
					}
					i = SkipSpace(b, i)
				}
				break
			}
			if top == '{' && b[i] == '}' || top == '[' && b[i] == ']' {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			return Span{}, SyntaxError(b, i, "',' or end of container")
		}
	}
}

// scanKeyColon validates an object key at b[i] and the colon after it, returning the index past the colon.
func scanKeyColon(b []byte, i int) (int, error) {
	i, _, err := ScanString(b, i)
	if err != nil {
		return 0, err
	}
	i = SkipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return 0, SyntaxError(b, i, "':'")
	}
	return i + 1, nil
}

func scanLiteral(b []byte, i int, lit string) (int, error) {
	if !bytes.HasPrefix(b[i:], []byte(lit)) {
		return 0, SyntaxError(b, i, lit)
	}
	return i + len(lit), nil
}
