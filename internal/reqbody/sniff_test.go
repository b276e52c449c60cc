package reqbody

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestSniff(t *testing.T) {
	long := strings.Repeat("é", 70) // 2 bytes each: the key is cut by characters, not bytes
	tests := []struct {
		name     string
		body     string
		wantKeys bool
		want     Info
		err      error
	}{
		{name: "minimal", body: `{"model":"gpt-4o"}`, want: Info{Model: "gpt-4o", ModelPresent: true}},
		{name: "white space", body: " \n\t{ \"model\" :\r\n \"m\" , \"stream\" : true } \n",
			want: Info{Model: "m", ModelPresent: true, Stream: true}},
		{name: "escaped model", body: `{"model":"a\"b\u00e9\\"}`, want: Info{Model: `a"bé\`, ModelPresent: true}},
		{name: "stream false", body: `{"model":"m","stream":false}`, want: Info{Model: "m", ModelPresent: true}},
		{name: "stream not bool", body: `{"model":"m","stream":"true"}`, want: Info{Model: "m", ModelPresent: true}},
		{name: "include usage", body: `{"model":"m","stream":true,"stream_options":{"x":[1],"include_usage":true}}`,
			want: Info{Model: "m", ModelPresent: true, Stream: true, IncludeUsage: true}},
		{name: "include usage false", body: `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`,
			want: Info{Model: "m", ModelPresent: true, Stream: true}},
		{name: "include usage not bool", body: `{"model":"m","stream_options":{"include_usage":"yes"}}`,
			want: Info{Model: "m", ModelPresent: true}},
		{name: "stream options null", body: `{"model":"m","stream_options":null}`, want: Info{Model: "m", ModelPresent: true}},
		{name: "stream options array", body: `{"model":"m","stream_options":[true]}`, want: Info{Model: "m", ModelPresent: true}},
		{name: "no keys unless asked", body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			want: Info{Model: "m", ModelPresent: true}},
		{name: "chat keys", wantKeys: true,
			body: `{"messages":[{"role":"system","content":"sys"},{"role":"user","content":" hello "},` +
				`{"role":"assistant","content":"a"},{"content":[{"type":"text","text":"ab"},{"type":"image_url","image_url":{"url":"x"}},{"text":"cd ","type":"text"}],"role":"user"},` +
				`{"role":"user","content":"   "},{"role":"user","content":null},{"role":"user"},"junk",{"role":"user","content":[]}],"model":"m"}`,
			want: Info{Model: "m", ModelPresent: true, Keys: []Key{{Text: "hello", Weight: 5}, {Text: "abcd", Weight: 4}}}},
		{name: "key cut at 64 characters", wantKeys: true,
			body: `{"model":"m","messages":[{"role":"user","content":"` + long + `"}]}`,
			want: Info{Model: "m", ModelPresent: true, Keys: []Key{{Text: strings.Repeat("é", 64), Weight: 140}}}},
		{name: "escaped role", wantKeys: true, body: `{"model":"m","messages":[{"role":"\u0075ser","content":"x"}]}`,
			want: Info{Model: "m", ModelPresent: true, Keys: []Key{{Text: "x", Weight: 1}}}},
		{name: "prompt string", wantKeys: true, body: `{"model":"m","prompt":"once upon"}`,
			want: Info{Model: "m", ModelPresent: true, Keys: []Key{{Text: "once upon", Weight: 9}}}},
		{name: "prompt array", wantKeys: true, body: `{"model":"m","prompt":["first","second"]}`,
			want: Info{Model: "m", ModelPresent: true, Keys: []Key{{Text: "first", Weight: 5}}}},
		{name: "prompt tokens", wantKeys: true, body: `{"model":"m","prompt":[1,2,3]}`, want: Info{Model: "m", ModelPresent: true}},
		{name: "no messages", wantKeys: true, body: `{"model":"m","input":"x"}`, want: Info{Model: "m", ModelPresent: true}},
		{name: "missing model", body: `{"stream":true}`, want: Info{Stream: true}, err: ErrNoModel},
		{name: "model number", body: `{"model":4}`, want: Info{ModelPresent: true}, err: ErrModelNotString},
		{name: "model null", body: `{"model":null}`, want: Info{ModelPresent: true}, err: ErrModelNotString},
		{name: "model object", body: `{"model":{"a":"b"}}`, want: Info{ModelPresent: true}, err: ErrModelNotString},
		{name: "same model twice", body: `{"model":"m","stream":true,"model":"m"}`, want: Info{Model: "m", ModelPresent: true, Stream: true}},
		{name: "same model, other escapes", body: `{"model":"m","model":"\u006d"}`, want: Info{Model: "m", ModelPresent: true}},
		{name: "two models", body: `{"model":"cheap","model":"expensive"}`, want: Info{ModelPresent: true}, err: ErrDuplicateModel},
		{name: "two models, stream kept", body: `{"model":"a","stream":true,"model":"b"}`, want: Info{ModelPresent: true, Stream: true}, err: ErrDuplicateModel},
		{name: "two models with keys", wantKeys: true, body: `{"model":"a","messages":[{"role":"user","content":"hi"}],"MODEL":"b"}`,
			want: Info{ModelPresent: true, Keys: []Key{{Text: "hi", Weight: 2}}}, err: ErrDuplicateModel},
		{name: "same model with keys", wantKeys: true, body: `{"model":"a","prompt":"p","model":"a"}`,
			want: Info{Model: "a", ModelPresent: true, Keys: []Key{{Text: "p", Weight: 1}}}},
		{name: "case variant", body: `{"model":"cheap","Model":"expensive"}`, want: Info{ModelPresent: true}, err: ErrDuplicateModel},
		{name: "escaped key", body: `{"model":"cheap","mod\u0065l":"expensive"}`, want: Info{ModelPresent: true}, err: ErrDuplicateModel},
		{name: "string and null", body: `{"model":"m","model":null}`, want: Info{ModelPresent: true}, err: ErrDuplicateModel},
		{name: "null first", body: `{"model":null,"model":"m"}`, want: Info{ModelPresent: true}, err: ErrDuplicateModel},
		{name: "nested model is not a duplicate", body: `{"model":"a","metadata":{"model":"b"}}`, want: Info{Model: "a", ModelPresent: true}},
		{name: "array", body: `[{"model":"m"}]`, err: ErrNotJSON},
		{name: "string", body: `"model"`, err: ErrNotJSON},
		{name: "empty", body: ``, err: ErrNotJSON},
		{name: "truncated", body: `{"model":"m"`, err: ErrNotJSON},
		{name: "trailing garbage", body: `{"model":"m"} x`, err: ErrNotJSON},
		{name: "invalid nested value", body: `{"model":"m","tools":[1,]}`, err: ErrNotJSON},
		{name: "invalid messages", wantKeys: true, body: `{"model":"m","messages":[{"role":}]}`, err: ErrNotJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Sniff([]byte(tt.body), tt.wantKeys)
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("Sniff() error = %v, want %v", err, tt.err)
			}
			if got.Model != tt.want.Model || got.ModelPresent != tt.want.ModelPresent || got.Stream != tt.want.Stream ||
				got.IncludeUsage != tt.want.IncludeUsage || !slices.Equal(got.Keys, tt.want.Keys) {
				t.Errorf("Sniff() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestSniffOwnsStrings checks that the strings of Info survive a reuse of the body buffer.
func TestSniffOwnsStrings(t *testing.T) {
	body := []byte(`{"model":"gpt","messages":[{"role":"user","content":"hello"}]}`)
	info, err := Sniff(body, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'x'
	}
	if info.Model != "gpt" || info.Keys[0].Text != "hello" {
		t.Errorf("Info changed with the body: %+v", info)
	}
}

func TestCheckModel(t *testing.T) {
	tests := []struct {
		name, model string
		ok          bool
	}{
		{"plain", "gpt-4o", true},
		{"empty", "", true}, // routed, and answered 404 like any unknown model
		{"path-like", "meta-llama/Llama-3.1-8B-Instruct:latest", true},
		{"non-ASCII", "模型-é", true},
		{"replacement character", "gpt-\uFFFD", true},
		{"at the limit", strings.Repeat("m", MaxModelLen), true},
		{"over the limit", strings.Repeat("m", MaxModelLen+1), false},
		{"invalid UTF-8", "gpt-4o\xff\xfe", false},
		{"truncated rune", "gpt-\xe6\xa8", false},
		{"surrogate bytes", "gpt-\xed\xa0\x80", false},
		{"NUL", "gpt\x00", false},
		{"newline", "gpt\n4", false},
		{"tab", "gpt\t4", false},
		{"DEL", "gpt\x7f", false},
		{"C1 control", "gpt\u0085", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckModel(tt.model)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidModel)) {
				t.Errorf("CheckModel(%q) = %v, want ok %v", tt.model, err, tt.ok)
			}
		})
	}
}
