package sse

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// This file holds the small JSON toolkit the transforms are built on. The
// transforms edit a few fields of upstream JSON and must keep everything
// else byte for byte, in order, so instead of decoding into maps they locate
// spans with a scanner and splice. The scanner is lenient: it finds
// structure, it does not validate. Every caller treats a failed scan as
// "leave the input alone".

// skipWS returns the index of the first non-whitespace byte at or after i.
func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the JSON string starting at b[i]
// (which must be '"'), or -1 if it is not terminated.
func stringEnd(b []byte, i int) int {
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

// valueEnd returns the index just past the JSON value starting at b[i], or
// -1 if none can be delimited.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := stringEnd(b, j)
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

// member is one "key": value pair of an object, as offsets into the
// scanned buffer.
type member struct {
	key      []byte // raw key, without quotes and unescaped
	start    int    // offset of the key's opening quote
	valStart int
	valEnd   int
}

// value returns the raw bytes of the member's value.
func (m member) value(b []byte) []byte { return b[m.valStart:m.valEnd] }

// objIter walks the members of one JSON object.
type objIter struct {
	b     []byte
	i     int
	end   int // offset just past the closing '}', set when done
	first bool
	bad   bool
}

// newObjIter starts an iterator on the object that begins at b[start].
func newObjIter(b []byte, start int) objIter {
	if start >= len(b) || b[start] != '{' {
		return objIter{b: b, bad: true}
	}
	return objIter{b: b, i: start + 1, first: true}
}

// next returns the next member; ok is false at the end of the object or on
// malformed input (then it.bad is set).
func (it *objIter) next() (m member, ok bool) {
	if it.bad || it.end > 0 {
		return member{}, false
	}
	b := it.b
	i := skipWS(b, it.i)
	if i < len(b) && b[i] == '}' {
		it.end = i + 1
		return member{}, false
	}
	if !it.first {
		if i >= len(b) || b[i] != ',' {
			it.bad = true
			return member{}, false
		}
		i = skipWS(b, i+1)
	}
	it.first = false
	if i >= len(b) || b[i] != '"' {
		it.bad = true
		return member{}, false
	}
	ke := stringEnd(b, i)
	if ke < 0 {
		it.bad = true
		return member{}, false
	}
	m.start = i
	m.key = b[i+1 : ke-1]
	i = skipWS(b, ke)
	if i >= len(b) || b[i] != ':' {
		it.bad = true
		return member{}, false
	}
	i = skipWS(b, i+1)
	ve := valueEnd(b, i)
	if ve < 0 {
		it.bad = true
		return member{}, false
	}
	m.valStart, m.valEnd = i, ve
	it.i = ve
	return m, true
}

// findMember returns the member named key of the object at b[start].
func findMember(b []byte, start int, key string) (member, bool) {
	it := newObjIter(b, start)
	for {
		m, ok := it.next()
		if !ok {
			return member{}, false
		}
		if string(m.key) == key {
			return m, true
		}
	}
}

// firstElement returns the span of the first element of the array at
// b[start]; ok is false for an empty or malformed array.
func firstElement(b []byte, start int) (s, e int, ok bool) {
	if start >= len(b) || b[start] != '[' {
		return 0, 0, false
	}
	s = skipWS(b, start+1)
	if s >= len(b) || b[s] == ']' {
		return 0, 0, false
	}
	e = valueEnd(b, s)
	return s, e, e > 0
}

// isEmptyArray reports whether v is `[]`, with any whitespace inside.
func isEmptyArray(v []byte) bool {
	if len(v) < 2 || v[0] != '[' {
		return false
	}
	i := skipWS(v, 1)
	return i == len(v)-1 && v[i] == ']'
}

// findKey returns the offset of the value of the first occurrence of the
// object key pat (given with its quotes) at or after from, or -1.
//
// It is the fast path's substitute for parsing: an unescaped `"key"`
// followed by a colon can only be an object key, because quotes inside JSON
// strings are always escaped. It does not tell at which depth the key sits,
// so callers use it only as a hint or confirm with the scanner.
func findKey(b []byte, pat string, from int) int {
	// Search from the first letter: JSON is full of quotes, and a
	// pattern starting with one defeats bytes.Index's first-byte skip.
	body := pat[1:]
	for from < len(b) {
		i := bytes.Index(b[from:], []byte(body))
		if i < 0 {
			return -1
		}
		i += from
		if i > 0 && b[i-1] == '"' {
			j := skipWS(b, i+len(body))
			if j < len(b) && b[j] == ':' {
				return skipWS(b, j+1)
			}
		}
		from = i + 1
	}
	return -1
}

// hasTextKey reports whether pat occurs as a key whose value is a non-empty
// string.
func hasTextKey(b []byte, pat string) bool {
	for i := findKey(b, pat, 0); i >= 0; i = findKey(b, pat, i) {
		if i+1 < len(b) && b[i] == '"' && b[i+1] != '"' {
			return true
		}
	}
	return false
}

// hasNonNullKey reports whether pat occurs as a key whose value is not null.
func hasNonNullKey(b []byte, pat string) bool {
	for i := findKey(b, pat, 0); i >= 0; i = findKey(b, pat, i) {
		if i < len(b) && !bytes.HasPrefix(b[i:], []byte("null")) {
			return true
		}
	}
	return false
}

// isString reports whether the raw JSON value v is a string.
func isString(v []byte) bool { return len(v) >= 2 && v[0] == '"' }

// appendUnquote appends the text of the raw JSON string v (with its quotes)
// to dst. Invalid escapes are copied through verbatim rather than failing:
// the result only feeds text transforms, and upstream JSON is trusted to be
// well formed.
func appendUnquote(dst, v []byte) []byte {
	if len(v) < 2 {
		return dst
	}
	s := v[1 : len(v)-1]
	for len(s) > 0 {
		i := bytes.IndexByte(s, '\\')
		if i < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:i]...)
		s = s[i:]
		if len(s) < 2 {
			return append(dst, s...)
		}
		switch c := s[1]; c {
		case '"', '\\', '/':
			dst = append(dst, c)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(s[2:])
			if !ok {
				dst = append(dst, s[:2]...)
				s = s[2:]
				continue
			}
			n := 6
			if utf16.IsSurrogate(r) {
				r2, ok2 := rune(-1), false
				if len(s) >= 12 && s[6] == '\\' && s[7] == 'u' {
					r2, ok2 = hex4(s[8:])
				}
				if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
					r, n = dec, 12
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
			s = s[n:]
			continue
		default:
			dst = append(dst, s[:2]...)
		}
		s = s[2:]
	}
	return dst
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// appendQuote appends s as a JSON string, quotes included.
func appendQuote(dst, s []byte) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, s)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// appendEscaped appends the JSON escaping of s without quotes. Invalid UTF-8
// becomes U+FFFD so that the output is always valid JSON; U+2028 and U+2029
// are escaped because some JavaScript consumers treat them as line breaks.
func appendEscaped(dst, s []byte) []byte {
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
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// parseInt reads a JSON number as an int64, truncating any fraction or
// exponent-free decimal part ("12.0" is 12). It does not allocate.
func parseInt(v []byte) (int64, bool) {
	neg := false
	if len(v) > 0 && v[0] == '-' {
		neg, v = true, v[1:]
	}
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return 0, false
	}
	var n int64
	i := 0
	for ; i < len(v) && '0' <= v[i] && v[i] <= '9'; i++ {
		if n > (1<<63-1)/10 {
			return 0, false
		}
		n = n*10 + int64(v[i]-'0')
	}
	if i < len(v) && v[i] != '.' {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}
