package reqbody

import (
	stdjson "encoding/json"
	"math/rand/v2"
	"testing"
)

func TestScanValue(t *testing.T) {
	inputs := []string{
		`0`, `-0`, `-0.5e+10`, `1E5`, `01`, `1.`, `.5`, `-`, `1e`, `+1`,
		`""`, `"\""`, `"\\"`, `"\/\b\f\n\r\t"`, `"\u00e9\uD83D\uDE00"`, `"\u12"`, `"\x"`, "\"a\x01\"", "\"a\x7f\xff\"",
		`"abcdefghijklmnopqrstuvwxyz\"abcdefgh"`, `"abcdefgh`,
		`true`, `false`, `null`, `tru`, `nul`, `True`,
		`[]`, `[ ]`, `[1,2]`, `[1,]`, `[,1]`, `[1 2]`, `[[[[]]]]`, `[[[[]]]`, `[}`,
		`{}`, `{ }`, `{"a":1}`, `{"a" : {"b":[{"c":"}"}]}}`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{a:1}`, `{"a":1 "b":2}`, `{"a":1]`,
		" \t\n{\"a\" :\r\n1 } ",
	}
	for _, in := range inputs {
		b := []byte(in)
		v, err := scanValue(b, 0)
		valid := err == nil && skipSpace(b, v.end) == len(b)
		if valid != stdjson.Valid(b) {
			t.Errorf("scanValue(%q) valid = %v (err %v), encoding/json says %v", in, valid, err, !valid)
		}
	}
}

// TestPlainWord checks the eight-byte test against the byte table for every byte value at every
// position, and for random words.
func TestPlainWord(t *testing.T) {
	want := func(w uint64) bool {
		for k := 0; k < 8; k++ {
			if !plainStringByte[byte(w>>(8*k))] {
				return false
			}
		}
		return true
	}
	const filler = 0x6161616161616161 // "aaaaaaaa"
	for k := 0; k < 8; k++ {
		for c := 0; c < 256; c++ {
			w := filler&^(0xff<<(8*k)) | uint64(c)<<(8*k)
			if plainWord(w) != want(w) {
				t.Fatalf("plainWord(%#x) = %v", w, plainWord(w))
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		w := r.Uint64()
		if plainWord(w) != want(w) {
			t.Fatalf("plainWord(%#x) = %v", w, plainWord(w))
		}
	}
}

func TestAppendQuoted(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\s", "\x00\x1f\n\r\t", "é€😀", "bad\xff\xfeutf8", "<>&\u2028"} {
		out := appendQuoted(nil, s)
		var got string
		if err := stdjson.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendQuoted(%q) = %s: %v", s, out, err)
		}
		if want := string([]rune(s)); got != want {
			t.Errorf("appendQuoted(%q) decodes to %q, want %q", s, got, want)
		}
	}
}
