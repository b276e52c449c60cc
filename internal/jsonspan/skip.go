package jsonspan

import "bytes"

// This file is the Loose depth: each function finds where something ends without validating what is
// in between, and answers -1 where it cannot tell.

// StringEnd returns the index just past the string that starts at b[i] (a quote), or -1 if b[i] is not
// a quote or the string is not terminated. Only the closing quote is looked for: escapes and control
// characters are not checked.
func StringEnd(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return -1
		}
		q := j + k
		// The quote is escaped when an odd number of backslashes precede it.
		n := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		j = q + 1
	}
}

// ValueEnd returns the index just past the value that starts at b[i] (not white space), or -1 if none
// can be delimited there. Objects and arrays end at their matching bracket, strings skipped; a number
// or literal ends at the first delimiter. Nothing is validated: `{"a" 1 ]` ends where it seems to.
func ValueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return StringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := StringEnd(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	case ',', ':', '}', ']':
		return -1
	default: // number, true, false, null
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ':', ' ', '\t', '\n', '\r', '"', '{', '[':
				if j == i {
					return -1
				}
				return j
			}
			j++
		}
		return j
	}
}

// FindKey returns the offset of the value (after white space) of the first occurrence of the object key
// quoted (given with its quotes, as written, escapes not decoded) at or after from, or -1.
//
// It is a substitute for walking when most documents lack the key: an unescaped `"key"` followed by a
// colon can only be an object key, because quotes inside JSON strings are escaped. It does not tell at
// which depth the key sits, so callers use it as a hint or confirm with a walk.
func FindKey(b []byte, quoted string, from int) int {
	// Search from the first letter: JSON is full of quotes, and a pattern starting with one defeats
	// bytes.Index's first-byte skip.
	body := quoted[1:]
	for from < len(b) {
		i := bytes.Index(b[from:], []byte(body))
		if i < 0 {
			return -1
		}
		i += from
		if i > 0 && b[i-1] == '"' {
			j := SkipSpace(b, i+len(body))
			if j < len(b) && b[j] == ':' {
				return SkipSpace(b, j+1)
			}
		}
		from = i + 1
	}
	return -1
}
