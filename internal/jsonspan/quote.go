package jsonspan

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// Text is what the escaper takes: a string or a byte slice, encoded without conversion.
type Text interface{ ~string | ~[]byte }

// AppendString appends s to dst as a JSON string, quotes included. See AppendEscaped.
func AppendString[T Text](dst []byte, s T) []byte {
	dst = append(dst, '"')
	dst = AppendEscaped(dst, s)
	return append(dst, '"')
}

// escapeByte marks the bytes AppendEscaped cannot copy as they are: the quote, the backslash, the
// control characters, and every byte of 0x80 and above, whose sequence must be checked.
var escapeByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// AppendEscaped appends the JSON escaping of s to dst, without quotes, for splicing text into a string
// that is already open. The output is what encoding/json writes with HTML escaping off, so it is valid
// JSON for any input:
//
//   - the quote and the backslash are escaped, and control characters as \n, \r, \t or \u00XX (\b and
//     \f too, which encoding/json writes in their short forms: both decode alike);
//   - each byte of invalid UTF-8 becomes \ufffd;
//   - U+2028 and U+2029 become \u2028 and \u2029, because JavaScript consumers of the JSON (an SSE
//     stream read by a browser) may take them for line breaks;
//   - <, > and & are not escaped: nothing the gateway writes is embedded in HTML, and the callers'
//     outputs have always spelled them as they are.
func AppendEscaped[T Text](dst []byte, s T) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if !escapeByte[c] {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			// At most utf8.UTFMax bytes: the conversion of a byte slice is done on the stack.
			r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
			switch {
			case r == utf8.RuneError && size == 1:
				dst = append(dst, s[start:i]...)
				dst = append(dst, `\ufffd`...)
			case r == '\u2028' || r == '\u2029':
				dst = append(dst, s[start:i]...)
				dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			default:
				i += size
				continue
			}
			i += size
			start = i
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
	}
	return append(dst, s[start:]...)
}

// Unquote returns the text of the JSON string raw (quotes included), which it validates as ScanString
// does. A string without escapes is its bytes as they are; one with escapes is decoded as encoding/json
// decodes it, invalid UTF-8 and unpaired surrogates becoming U+FFFD.
func Unquote(raw []byte) (string, error) {
	end, escaped, err := ScanString(raw, 0)
	if err != nil {
		return "", err
	}
	if end != len(raw) {
		return "", SyntaxError(raw, end, "end of string")
	}
	inner := raw[1 : len(raw)-1]
	if !escaped {
		return string(inner), nil
	}
	text := appendUnescaped(make([]byte, 0, len(inner)), inner, true)
	// text is private and never written again: the string may share it, which saves a copy.
	return unsafe.String(unsafe.SliceData(text), len(text)), nil
}

// AppendUnquoted appends the text of the JSON string raw (quotes included) to dst without validating
// it, for Loose callers: escapes are decoded as Unquote decodes them, but an invalid escape is copied
// as it is, and so are all other bytes, invalid UTF-8 included.
func AppendUnquoted(dst, raw []byte) []byte {
	if len(raw) < 2 {
		return dst
	}
	return appendUnescaped(dst, raw[1:len(raw)-1], false)
}

// appendUnescaped appends s, the inside of a string, with its escapes decoded. With fixUTF8, invalid
// UTF-8 outside the escapes becomes U+FFFD, one per byte, as encoding/json does.
func appendUnescaped(dst, s []byte, fixUTF8 bool) []byte {
	for len(s) > 0 {
		i := bytes.IndexByte(s, '\\')
		if i < 0 {
			i = len(s)
		}
		if fixUTF8 {
			dst = appendValidUTF8(dst, s[:i])
		} else {
			dst = append(dst, s[:i]...)
		}
		s = s[i:]
		if len(s) == 0 {
			return dst
		}
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

// appendValidUTF8 appends s with each byte of invalid UTF-8 replaced by U+FFFD.
func appendValidUTF8(dst, s []byte) []byte {
	if utf8.Valid(s) {
		return append(dst, s...)
	}
	for len(s) > 0 {
		r, size := utf8.DecodeRune(s)
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, r)
		} else {
			dst = append(dst, s[:size]...)
		}
		s = s[size:]
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
