package reqbody

import (
	"bytes"
	stdjson "encoding/json" // the reference the edits are checked against, in tests only
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

var fuzzSeeds = []string{
	`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"hi"}]}`,
	`{"model":"m","messages":[{"role":"assistant","content":"<think>a\nb</think> ok"},{"role":"user","content":[{"type":"text","text":"x"}]}]}`,
	`{"model":"m","prompt":["a","b"],"stop":"x","max_tokens":99999,"max_completion_tokens":null}`,
	` { "mod\u0065l" : "m" , "x" : [ 1 , { "y" : "\"}" } ] , "stop" : [ "\u00e9" ] } `,
	`{"model":4,"stream":"yes"}`,
	`{}`,
	`[]`,
	`{"a":1e5,"b":-0.5E-3,"c":true,"d":false,"e":null,"f":{}}`,
	`{"model":"m",}`,
	`{"model":"\ud800"}`,
	"{\"model\":\"m\x01\"}",
	"{\"model\":\"\xff\"}",
	`{"model":"a","Model":"b","model":"a"}`,
	`{"model":"a","mod\u0065l":"\u0061"}`,
}

// isObject reports whether b is one valid JSON object, per encoding/json.
func isObject(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return stdjson.Valid(b) && len(t) > 0 && t[0] == '{'
}

func FuzzSniff(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, wantKeys bool) {
		info, err := Sniff(body, wantKeys)
		if errors.Is(err, ErrNotJSON) != !isObject(body) {
			t.Fatalf("Sniff() error = %v, but encoding/json says object: %v", err, isObject(body))
		}
		if err != nil {
			return
		}
		if CheckModel(info.Model) == nil && (len(info.Model) > MaxModelLen || !utf8.ValidString(info.Model)) {
			t.Fatalf("CheckModel accepts model %q", info.Model)
		}
		// goccy matches keys without regard to case, as encoding/json does into a struct.
		var ref struct {
			Model any `json:"model"`
		}
		if e := stdjson.Unmarshal(body, &ref); e == nil {
			if s, ok := ref.Model.(string); ok && s != info.Model && !strings.ContainsRune(s, '\uFFFD') {
				t.Fatalf("model = %q, encoding/json reads %q", info.Model, s)
			}
		}
		for _, k := range info.Keys {
			if k.Text == "" || k.Weight < len(k.Text) || len([]rune(k.Text)) > keyRunes {
				t.Fatalf("bad key %+v", k)
			}
		}
	})
}

func FuzzApply(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), "real", "a,b", 100, []byte(`{"top_k":5,"model":"x"}`), uint8(3))
		f.Add([]byte(s), "", "", 0, []byte(nil), uint8(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, model, stop string, maxTokens int, extra []byte, flags uint8) {
		e := Edit{Model: model, MaxTokens: maxTokens, StripThink: flags&1 != 0, IncludeUsage: flags&2 != 0}
		if stop != "" {
			e.Stop = strings.Split(stop, ",")
		}
		if flags&4 != 0 {
			e.ExtraBody = extra
		}
		out, err := Apply(body, e)
		if e.isZero() {
			if err != nil || len(out) != len(body) {
				t.Fatalf("zero edit: %q, %v", out, err)
			}
			return
		}
		if !isObject(body) {
			if err == nil {
				t.Fatalf("Apply() accepted invalid input %q", body)
			}
			return
		}
		if errors.Is(err, ErrNotJSON) {
			t.Fatalf("Apply() rejects a valid object: %v", err)
		}
		if err != nil {
			return // ErrInvalidField, or an invalid ExtraBody
		}
		if !stdjson.Valid(out) {
			t.Fatalf("Apply() output is not JSON:\n%s", out)
		}
		if len(out) > 0 && len(body) > 0 && &out[0] != &body[0] && bytes.Equal(out, body) {
			t.Fatalf("Apply() copied a body it did not change")
		}
		var in, got map[string]any
		dec := func(b []byte, v *map[string]any) {
			d := stdjson.NewDecoder(bytes.NewReader(b))
			d.UseNumber()
			if err := d.Decode(v); err != nil {
				t.Fatal(err)
			}
		}
		dec(body, &in)
		dec(out, &got)
		edited := map[string]bool{keyModel: true, keyStop: true, keyMaxTokens: true, keyMaxCompletion: true,
			keyStreamOptions: true, keyMessages: true}
		for k, v := range in {
			if !edited[k] && !reflect.DeepEqual(got[k], v) {
				t.Fatalf("member %q changed from %v to %v", k, v, got[k])
			}
		}
		if e.Model != "" && string([]rune(e.Model)) != got[keyModel] {
			t.Fatalf("model = %v, want %q", got[keyModel], e.Model)
		}
		if e.IncludeUsage {
			if opts, _ := got[keyStreamOptions].(map[string]any); opts["include_usage"] != true {
				t.Fatalf("stream_options = %v", got[keyStreamOptions])
			}
		}
		if len(e.Stop) > 0 {
			list, ok := got[keyStop].([]any)
			if !ok {
				list = []any{got[keyStop]} // a string stop is kept when it is the client's only word
			}
			for i, w := range e.Stop {
				// Invalid UTF-8 comes out as one U+FFFD per byte, as the conversion to runes does.
				if i >= len(list) || list[i] != string([]rune(w)) {
					t.Fatalf("stop = %v, want %q first", got[keyStop], e.Stop)
				}
			}
		}
	})
}
