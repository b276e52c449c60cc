package jsonspan

import (
	"bytes"
	"encoding/json" // the reference the package is checked against, in tests only
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// valueInputs are documents for the scanner tables and the fuzz seeds: valid and invalid, nested,
// escaped and spaced.
var valueInputs = []string{
	`0`, `-0`, `-0.5e+10`, `1E5`, `01`, `1.`, `.5`, `-`, `1e`, `+1`, `1x`,
	`""`, `"\""`, `"\\"`, `"\/\b\f\n\r\t"`, `"\u00e9\uD83D\uDE00"`, `"\u12"`, `"\x"`, "\"a\x01\"", "\"a\x7f\xff\"",
	`"abcdefghijklmnopqrstuvwxyz\"abcdefgh"`, `"abcdefgh`, `"\\\"`, `"a\\\\"`,
	`true`, `false`, `null`, `tru`, `nul`, `True`,
	`[]`, `[ ]`, `[1,2]`, `[1,]`, `[,1]`, `[1 2]`, `[[[[]]]]`, `[[[[]]]`, `[}`,
	`{}`, `{ }`, `{"a":1}`, `{"a" : {"b":[{"c":"}"}]}}`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{a:1}`, `{"a":1 "b":2}`, `{"a":1]`,
	" \t\n{\"a\" :\r\n1 } ", `{"a":"]}"}`, `{"a\"b":[1,"\\"]}`, `[1] 2`, `{} x`,
}

func TestScanValue(t *testing.T) {
	for _, in := range valueInputs {
		b := []byte(in)
		v, err := ScanValue(b, 0)
		valid := err == nil && SkipSpace(b, v.End) == len(b)
		if valid != json.Valid(b) {
			t.Errorf("ScanValue(%q) valid = %v (err %v), encoding/json says %v", in, valid, err, !valid)
		}
		if err != nil && !errors.Is(err, ErrSyntax) {
			t.Errorf("ScanValue(%q) error %v does not wrap ErrSyntax", in, err)
		}
	}
}

func TestScanValueErrors(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{``, `invalid JSON: unexpected end of input, want value`},
		{`{"a":1,}`, `invalid JSON: unexpected '}' at offset 7, want string`},
		{`[1 2]`, `invalid JSON: unexpected '2' at offset 3, want ',' or end of container`},
		{`"\x"`, `invalid JSON: unexpected 'x' at offset 2, want escape`},
		{`"\u12"`, `invalid JSON: unexpected end of input, want 4 hex digits`},
		{`"\u12x4"`, `invalid JSON: unexpected 'x' at offset 5, want hex digit`},
		{"\"a\x01\"", `invalid JSON: unexpected '\x01' at offset 2, want string character`},
		{`tru`, `invalid JSON: unexpected 't' at offset 0, want true`},
		{`-`, `invalid JSON: unexpected end of input, want digit`},
	} {
		if _, err := ScanValue([]byte(tt.in), 0); err == nil || err.Error() != tt.want {
			t.Errorf("ScanValue(%q) error = %v, want %s", tt.in, err, tt.want)
		}
	}
}

// TestValueEnd checks the Loose end of a value: it agrees with ScanValue wherever encoding/json
// accepts the document, and is -1 where nothing can be delimited.
func TestValueEnd(t *testing.T) {
	for _, in := range valueInputs {
		b := []byte(in)
		i := SkipSpace(b, 0)
		if v, err := ScanValue(b, 0); err == nil && json.Valid(b) {
			if got := ValueEnd(b, i); got != v.End {
				t.Errorf("ValueEnd(%q) = %d, ScanValue ends at %d", in, got, v.End)
			}
		}
	}
	for _, tt := range []struct {
		in   string
		want int
	}{
		{``, -1}, {`,`, -1}, {`]`, -1}, {`"abc`, -1}, {`"a\"`, -1}, {`{"a":"}`, -1}, {`[[]`, -1},
		{`"a\\"x`, 5}, {`{"a" 1 ]x`, 8}, {`tru,`, 3}, {`1x}`, 2}, {`nul`, 3},
	} {
		if got := ValueEnd([]byte(tt.in), 0); got != tt.want {
			t.Errorf("ValueEnd(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestStringEnd(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{`""`, 2}, {`"a"b`, 3}, {`"\""`, 4}, {`"\\"`, 4}, {`"\\\""x`, 6}, {`"a`, -1}, {`a"`, -1}, {``, -1},
		{"\"\x01\"", 3}, // control characters are not looked at
	} {
		if got := StringEnd([]byte(tt.in), 0); got != tt.want {
			t.Errorf("StringEnd(%q) = %d, want %d", tt.in, got, tt.want)
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

// members lists an object's members as "key=value" in walk order, then "!" and the error if any.
func members(b []byte, mode Mode) string {
	var out []string
	obj, err := NewObject(b, 0, mode)
	for obj.Next() {
		out = append(out, string(obj.Key.In(b))+"="+string(obj.Val.In(b)))
	}
	if obj.Err != nil {
		out = append(out, "!")
		if err == nil && obj.Close >= 0 {
			out = append(out, "close set with an error")
		}
	}
	return strings.Join(out, " ")
}

func TestObject(t *testing.T) {
	for _, tt := range []struct{ in, strict, loose string }{
		{`{}`, ``, ``},
		{` { "a" : 1 , "b":[1, {"c":"}"}] ,"d\u0065":"x"} `, `"a"=1 "b"=[1, {"c":"}"}] "d\u0065"="x"`, `"a"=1 "b"=[1, {"c":"}"}] "d\u0065"="x"`},
		{`{"a":tru,"b":2}`, `!`, `"a"=tru "b"=2`},
		{`{"a":[1 2],"b":2}`, `!`, `"a"=[1 2] "b"=2`},
		{"{\"a\x01\":1}", `!`, "\"a\x01\"=1"},
		{`{"a":1,}`, `"a"=1 !`, `"a"=1 !`},
		{`{"a":1 "b":2}`, `"a"=1 !`, `"a"=1 !`},
		{`{"a" 1}`, `!`, `!`},
		{`{"a":}`, `!`, `!`},
		{`{"a":1`, `"a"=1 !`, `"a"=1 !`},
		{`[1]`, `!`, `!`},
		{``, `!`, `!`},
	} {
		if got := members([]byte(tt.in), Strict); got != tt.strict {
			t.Errorf("Strict walk of %q = %q, want %q", tt.in, got, tt.strict)
		}
		if got := members([]byte(tt.in), Loose); got != tt.loose {
			t.Errorf("Loose walk of %q = %q, want %q", tt.in, got, tt.loose)
		}
	}
}

func TestObjectKeyIs(t *testing.T) {
	b := []byte(`{"model":1,"mod\u0065l":2,"x":3}`)
	for _, tt := range []struct {
		mode Mode
		want string
	}{{Strict, "1 2"}, {Loose, "1"}} {
		var got []string
		obj, _ := NewObject(b, 0, tt.mode)
		for obj.Next() {
			if obj.KeyIs("model") {
				got = append(got, string(obj.Val.In(b)))
			}
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("mode %d: model members %q, want %q", tt.mode, got, tt.want)
		}
	}
	if m, ok := FindMember(b, 0, "x"); !ok || string(m.Val.In(b)) != "3" || string(m.RawKey(b)) != "x" {
		t.Errorf("FindMember(x) = %+v, %v", m, ok)
	}
	if _, ok := FindMember(b, 0, "y"); ok {
		t.Errorf("FindMember(y) found a member")
	}
}

func TestArray(t *testing.T) {
	for _, tt := range []struct{ in, strict, loose string }{
		{`[]`, ``, ``},
		{` [ 1 , "a,]" ,{"b":[2]}, [] ] `, `1 "a,]" {"b":[2]} []`, `1 "a,]" {"b":[2]} []`},
		{`[tru, 1]`, `!`, `tru 1`},
		{`[1,]`, `1 !`, `1 !`},
		{`[,1]`, `!`, `!`},
		{`[1 2]`, `1 !`, `1 !`},
		{`{}`, `!`, `!`},
	} {
		for _, mode := range []Mode{Strict, Loose} {
			var out []string
			b := []byte(tt.in)
			arr, _ := NewArray(b, 0, mode)
			for arr.Next() {
				out = append(out, string(arr.Val.In(b)))
			}
			if arr.Err != nil {
				out = append(out, "!")
			}
			want := tt.strict
			if mode == Loose {
				want = tt.loose
			}
			if got := strings.Join(out, " "); got != want {
				t.Errorf("mode %d walk of %q = %q, want %q", mode, tt.in, got, want)
			}
		}
	}
}

func TestObjectElems(t *testing.T) {
	b := []byte(`[{"role":"user","content":"a"}, 1, {"role":"x"}, {}, "s", {"content":"b","role":"user"}]`)
	elems, err := NewObjectElems(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for n := 0; elems.Next(); n++ {
		if n == 1 {
			continue // leave the second object unread: the next Next walks it
		}
		for obj := &elems.Obj; obj.Next(); {
			if obj.KeyIs("content") {
				got = append(got, string(obj.Val.In(b)))
			}
		}
	}
	if elems.Err != nil || strings.Join(got, " ") != `"a" "b"` {
		t.Errorf("contents %q, err %v", got, elems.Err)
	}
	for _, bad := range []string{`[{"a":1}`, `[{"a":1} {}]`, `[{"a":}]`, `[1,]`, `{}`} {
		elems, _ := NewObjectElems([]byte(bad), 0)
		for elems.Next() {
		}
		if elems.Err == nil {
			t.Errorf("NewObjectElems(%q) walk has no error", bad)
		}
	}
}

func TestFindKey(t *testing.T) {
	b := []byte(`{"a":{"usage" : null},"x":"usage","usage":{"n":1}}`)
	var got []string
	for i := FindKey(b, `"usage"`, 0); i >= 0; i = FindKey(b, `"usage"`, i) {
		got = append(got, string(b[i:ValueEnd(b, i)]))
	}
	if strings.Join(got, " ") != `null {"n":1}` {
		t.Errorf("FindKey values %q", got)
	}
}

// stdEscape is the reference escaping: encoding/json without HTML escaping, with \b and \f in the
// \u00XX form this package has always written (both decode alike).
func stdEscape(t testing.TB, s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	var sb strings.Builder
	for i := 0; i < len(out); i++ {
		if out[i] != '\\' {
			sb.WriteByte(out[i])
			continue
		}
		switch out[i+1] {
		case 'b':
			sb.WriteString(`\u0008`)
		case 'f':
			sb.WriteString(`\u000c`)
		default:
			sb.Write(out[i : i+2])
		}
		i++
	}
	return sb.String()
}

func TestAppendString(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{"q\"b\\s/", `"q\"b\\s/"`},
		{"\x00\x1f\n\r\t\b\f\x7f", `"\u0000\u001f\n\r\t\u0008\u000c` + "\x7f\""},
		{"é€😀", `"é€😀"`},
		{"bad\xff\xfeutf8", `"bad\ufffd\ufffdutf8"`},
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`}, // an encoded surrogate is invalid UTF-8
		{"cut\xe2\x82", `"cut\ufffd\ufffd"`},
		{"<>&\u2028\u2029", `"<>&\u2028\u2029"`},
	} {
		if got := string(AppendString([]byte("x"), tt.in)); got != "x"+tt.want {
			t.Errorf("AppendString(%q) = %s, want %s", tt.in, got, tt.want)
		}
		if got := string(AppendString(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("AppendString([]byte %q) = %s, want %s", tt.in, got, tt.want)
		}
		if ref := stdEscape(t, tt.in); ref != tt.want {
			t.Errorf("encoding/json writes %q as %s, the table says %s", tt.in, ref, tt.want)
		}
	}
}

func TestUnquote(t *testing.T) {
	for _, tt := range []struct{ in, want, loose string }{
		{`""`, "", ""},
		{`"plain"`, "plain", "plain"},
		{`"\"\\\/\b\f\n\r\t"`, "\"\\/\b\f\n\r\t", "\"\\/\b\f\n\r\t"},
		{`"\u00e9\uD83D\uDE00\u0000"`, "é😀\x00", "é😀\x00"},
		{`"\ud800A\udc00\ud800\u0041\ud83d"`, "\uFFFDA\uFFFD\uFFFDA\uFFFD", "\uFFFDA\uFFFD\uFFFDA\uFFFD"},
		{"\"raw\xff\"", "raw\xff", "raw\xff"}, // no escape: the bytes as they are
		{"\"\\n\xff\"", "\n\uFFFD", "\n\xff"}, // escaped: decoded as encoding/json does
		{`"bad\x\u12"`, "", `bad\x\u12`},      // invalid escapes: Loose copies them
	} {
		got, err := Unquote([]byte(tt.in))
		if json.Valid([]byte(tt.in)) {
			if err != nil || got != tt.want {
				t.Errorf("Unquote(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
			}
		} else if err == nil {
			t.Errorf("Unquote(%q) accepts an invalid string", tt.in)
		}
		if got := string(AppendUnquoted([]byte("x"), []byte(tt.in))); got != "x"+tt.loose {
			t.Errorf("AppendUnquoted(%q) = %q, want %q", tt.in, got, "x"+tt.loose)
		}
	}
	for _, bad := range []string{``, `"`, `"a`, `a`, `"a"b`, `"a\"`} {
		if _, err := Unquote([]byte(bad)); err == nil {
			t.Errorf("Unquote(%q) accepts it", bad)
		}
	}
}

// TestNoAllocs checks the paths run per chunk or per member: none allocates.
func TestNoAllocs(t *testing.T) {
	doc := []byte(`{"id":"x","choices":[{"index":0,"delta":{"content":"hé\"llo"}}],"usage":null}`)
	dst := make([]byte, 0, 256)
	text := []byte("hé\"llo\u2028\xff")
	allocs := testing.AllocsPerRun(100, func() {
		obj, _ := NewObject(doc, 0, Loose)
		for obj.Next() {
		}
		if m, ok := FindMember(doc, 0, "choices"); ok {
			arr, _ := NewArray(doc, m.Val.Start, Loose)
			arr.Next()
		}
		FindKey(doc, `"usage"`, 0)
		_ = AppendString(dst[:0], text)
		_ = AppendString(dst[:0], "hé\"llo\u2028\xff")
		_ = AppendUnquoted(dst[:0], []byte(`"h\u00e9\"llo"`))
		obj, _ = NewObject(doc, 0, Strict)
		for obj.Next() {
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}

func FuzzScanValue(f *testing.F) {
	for _, s := range valueInputs {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ScanValue(b, 0)
		valid := err == nil && SkipSpace(b, v.End) == len(b)
		if valid != json.Valid(b) {
			t.Fatalf("ScanValue(%q) valid = %v (err %v), encoding/json says %v", b, valid, err, !valid)
		}
		// The first value of a stream ends where encoding/json's decoder says it does.
		var raw json.RawMessage
		dec := json.NewDecoder(bytes.NewReader(b))
		if derr := dec.Decode(&raw); derr == nil {
			if err != nil || v.End != int(dec.InputOffset()) || !bytes.Equal(v.In(b), raw) {
				t.Fatalf("ScanValue(%q) = %v, %v; the decoder reads %q up to %d", b, v, err, raw, dec.InputOffset())
			}
		}
		// Loose agrees with Strict on valid documents, and never overruns on anything else.
		i := SkipSpace(b, 0)
		end := ValueEnd(b, i)
		if valid && end != v.End {
			t.Fatalf("ValueEnd(%q) = %d, ScanValue ends at %d", b, end, v.End)
		}
		if end > len(b) || end >= 0 && end <= i {
			t.Fatalf("ValueEnd(%q) = %d", b, end)
		}
		// So do the walks of a valid object.
		if valid && b[i] == '{' && members(b, Strict) != members(b, Loose) {
			t.Fatalf("walks of %q differ:\nstrict %s\nloose  %s", b, members(b, Strict), members(b, Loose))
		}
		// A valid string unquotes as encoding/json decodes it.
		if valid && b[i] == '"' {
			got, err := Unquote(v.In(b))
			var want string
			if jerr := json.Unmarshal(b, &want); err != nil || jerr != nil {
				t.Fatalf("Unquote(%q): %v, encoding/json: %v", b, err, jerr)
			}
			if _, escaped, _ := ScanString(b, i); !escaped {
				want = string(b[i+1 : v.End-1]) // Unquote leaves a string without escapes as it is
			}
			if got != want {
				t.Fatalf("Unquote(%q) = %q, encoding/json reads %q", b, got, want)
			}
			if utf8.Valid(b) && string(AppendUnquoted(nil, v.In(b))) != want {
				t.Fatalf("AppendUnquoted(%q) = %q, want %q", b, AppendUnquoted(nil, v.In(b)), want)
			}
		}
	})
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "q\"b\\s", "\x00\x1f\x7f\b\f", "héllo\u2028\u2029", "bad\xff\xfe", "\xed\xa0\x80", "<>&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := AppendString(nil, s)
		if want := stdEscape(t, s); string(q) != want {
			t.Fatalf("AppendString(%q) = %s, encoding/json writes %s", s, q, want)
		}
		if qb := AppendString(nil, []byte(s)); !bytes.Equal(qb, q) {
			t.Fatalf("AppendString([]byte %q) = %s, from a string %s", s, qb, q)
		}
		var got string
		if err := json.Unmarshal(q, &got); err != nil || got != strings.ToValidUTF8(s, "\uFFFD") && got != string([]rune(s)) {
			t.Fatalf("AppendString(%q) = %s, decodes to %q, %v", s, q, got, err)
		}
		if back, err := Unquote(q); err != nil || back != got {
			t.Fatalf("Unquote(%s) = %q, %v, want %q", q, back, err, got)
		}
	})
}
