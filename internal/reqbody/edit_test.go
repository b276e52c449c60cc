package reqbody

import (
	"errors"
	"testing"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"
)

func TestApply(t *testing.T) {
	tests := []struct {
		name string
		body string
		edit Edit
		want string // "" with same: the input itself is returned
		same bool
		err  error
	}{
		// model
		{name: "model replaced, rest kept", body: `{"z":1, "model" : "a" ,"x-vendor":{"k":[1,"}"]}}`, edit: Edit{Model: "b"},
			want: `{"z":1, "model" : "b" ,"x-vendor":{"k":[1,"}"]}}`},
		{name: "model escaped", body: `{"model":"a"}`, edit: Edit{Model: "q\"\n\\<é>"}, want: `{"model":"q\"\n\\<é>"}`},
		{name: "model escaped as everywhere", body: `{"model":"a"}`, edit: Edit{Model: "x\xff\u2028"}, want: `{"model":"x\ufffd\u2028"}`},
		{name: "model same", body: `{"model":"a","n":2}`, edit: Edit{Model: "a"}, same: true},
		{name: "model added", body: `{"n":2}`, edit: Edit{Model: "a"}, want: `{"n":2,"model":"a"}`},
		{name: "model escaped key", body: `{"mod\u0065l":"a"}`, edit: Edit{Model: "b"}, want: `{"mod\u0065l":"b"}`},
		{name: "model every duplicate", body: `{"model":"a","model":"c"}`, edit: Edit{Model: "b"}, want: `{"model":"b","model":"b"}`},
		{name: "nested model untouched", body: `{"meta":{"model":"x"},"model":"a"}`, edit: Edit{Model: "b"},
			want: `{"meta":{"model":"x"},"model":"b"}`},

		// stop
		{name: "stop merged", body: `{"stop":["b","x","a"],"seed":1}`, edit: Edit{Stop: []string{"a", "b"}},
			want: `{"stop":["a","b","x"],"seed":1}`},
		{name: "stop string", body: `{"stop":"x"}`, edit: Edit{Stop: []string{"a"}}, want: `{"stop":["a","x"]}`},
		{name: "stop string already first", body: `{"stop":"a"}`, edit: Edit{Stop: []string{"a"}}, same: true},
		{name: "stop already merged", body: `{"stop":["a","b","x"]}`, edit: Edit{Stop: []string{"a", "b"}}, same: true},
		{name: "stop request duplicates", body: `{"stop":["x","x"]}`, edit: Edit{Stop: []string{"a"}}, want: `{"stop":["a","x"]}`},
		{name: "stop null", body: `{"stop":null}`, edit: Edit{Stop: []string{"a"}}, want: `{"stop":["a"]}`},
		{name: "stop added", body: `{"model":"m"}`, edit: Edit{Stop: []string{"</s>", "\n"}}, want: `{"model":"m","stop":["</s>","\n"]}`},
		{name: "stop escaped word", body: `{"stop":["\u0061"]}`, edit: Edit{Stop: []string{"a"}}, same: true},
		{name: "stop number", body: `{"stop":3}`, edit: Edit{Stop: []string{"a"}}, err: ErrInvalidField},
		{name: "stop array of numbers", body: `{"stop":["a",3]}`, edit: Edit{Stop: []string{"a"}}, err: ErrInvalidField},

		// max tokens
		{name: "max tokens capped", body: `{"max_tokens":5000,"n":1}`, edit: Edit{MaxTokens: 1000}, want: `{"max_tokens":1000,"n":1}`},
		{name: "max tokens below cap", body: `{"max_tokens":10}`, edit: Edit{MaxTokens: 1000}, same: true},
		{name: "max tokens equal cap", body: `{"max_tokens":1000}`, edit: Edit{MaxTokens: 1000}, same: true},
		{name: "max tokens float", body: `{"max_tokens":1e4}`, edit: Edit{MaxTokens: 1000}, want: `{"max_tokens":1000}`},
		{name: "max tokens huge", body: `{"max_tokens":123456789012345678901234}`, edit: Edit{MaxTokens: 1000}, want: `{"max_tokens":1000}`},
		{name: "max tokens overflow", body: `{"max_tokens":1e400}`, edit: Edit{MaxTokens: 1000}, want: `{"max_tokens":1000}`},
		{name: "max tokens tiny", body: `{"max_tokens":1e-400}`, edit: Edit{MaxTokens: 1000}, same: true},
		{name: "max tokens negative", body: `{"max_tokens":-1}`, edit: Edit{MaxTokens: 1000}, same: true},
		{name: "max tokens null", body: `{"max_tokens":null}`, edit: Edit{MaxTokens: 1000}, want: `{"max_tokens":1000}`},
		{name: "max tokens added", body: `{"model":"m"}`, edit: Edit{MaxTokens: 1000}, want: `{"model":"m","max_tokens":1000}`},
		{name: "max completion tokens capped, none added", body: `{"max_completion_tokens":4096}`, edit: Edit{MaxTokens: 1000},
			want: `{"max_completion_tokens":1000}`},
		{name: "max completion tokens below", body: `{"max_completion_tokens":5}`, edit: Edit{MaxTokens: 1000}, same: true},
		{name: "both token fields capped", body: `{"max_tokens":2000,"max_completion_tokens":3000}`, edit: Edit{MaxTokens: 1000},
			want: `{"max_tokens":1000,"max_completion_tokens":1000}`},
		{name: "max tokens string", body: `{"max_tokens":"5"}`, edit: Edit{MaxTokens: 1000}, err: ErrInvalidField},

		// extra_body
		{name: "extra added where absent", body: `{"model":"m","top_k":1}`, edit: Edit{ExtraBody: []byte(` {"top_k": 50, "chat_template_kwargs" : {"enable_thinking":false}} `)},
			want: `{"model":"m","top_k":1,"chat_template_kwargs":{"enable_thinking":false}}`},
		{name: "extra all present", body: `{"top_k":1}`, edit: Edit{ExtraBody: []byte(`{"top_k":2}`)}, same: true},
		{name: "extra escaped key present", body: `{"top\u005fk":1}`, edit: Edit{ExtraBody: []byte(`{"top_k":2}`)}, same: true},
		{name: "extra own duplicate", body: `{}`, edit: Edit{ExtraBody: []byte(`{"a":1,"a":2}`)}, want: `{"a":1}`},
		{name: "extra after edits", body: `{"model":"m"}`, edit: Edit{MaxTokens: 10, ExtraBody: []byte(`{"max_tokens":5,"seed":7}`)},
			want: `{"model":"m","max_tokens":10,"seed":7}`},
		{name: "extra into empty object", body: "{\n}", edit: Edit{ExtraBody: []byte(`{"a":1,"b":[2]}`)}, want: "{\n\"a\":1,\"b\":[2]}"},
		{name: "extra not an object", body: `{}`, edit: Edit{ExtraBody: []byte(`[1]`)}, err: jsonspan.ErrSyntax},
		{name: "extra trailing data", body: `{}`, edit: Edit{ExtraBody: []byte(`{"a":1} 2`)}, err: jsonspan.ErrSyntax},
		{name: "extra invalid member", body: `{}`, edit: Edit{ExtraBody: []byte(`{"a":01}`)}, err: jsonspan.ErrSyntax},

		// strip think
		{name: "think stripped", body: `{"messages":[{"role":"user","content":"<think>keep</think>q"},` +
			`{"role":"assistant","content":"<think>a\nb</think>\n\nanswer <think>x</think> end "},{"role":"assistant","content":[{"type":"text","text":"<think>x</think>"}]}],"n":1}`,
			edit: Edit{StripThink: true},
			want: `{"messages":[{"role":"user","content":"<think>keep</think>q"},` +
				`{"role":"assistant","content":"answer  end"},{"role":"assistant","content":[{"type":"text","text":"<think>x</think>"}]}],"n":1}`},
		{name: "think role after content", body: `{"messages":[{"content":"<think>t</think>ok","role":"assistant"}]}`, edit: Edit{StripThink: true},
			want: `{"messages":[{"content":"ok","role":"assistant"}]}`},
		{name: "think escaped tags", body: `{"messages":[{"role":"assistant","content":"\u003cthink\u003et\u003c/think\u003eok"}]}`, edit: Edit{StripThink: true},
			want: `{"messages":[{"role":"assistant","content":"ok"}]}`},
		{name: "think none", body: `{"messages":[{"role":"assistant","content":"  plain  "}]}`, edit: Edit{StripThink: true}, same: true},
		{name: "think unclosed", body: `{"messages":[{"role":"assistant","content":"<think>open"}]}`, edit: Edit{StripThink: true}, same: true},
		{name: "think escape without tags", body: `{"messages":[{"role":"assistant","content":"a\nb"}]}`, edit: Edit{StripThink: true}, same: true},
		{name: "think shortest match", body: `{"messages":[{"role":"assistant","content":"<think>a</think>b<think>c</think>d"}]}`, edit: Edit{StripThink: true},
			want: `{"messages":[{"role":"assistant","content":"bd"}]}`},
		{name: "think messages not array", body: `{"messages":"x"}`, edit: Edit{StripThink: true}, same: true},

		// include usage
		{name: "usage added", body: `{"model":"m","stream":true}`, edit: Edit{IncludeUsage: true},
			want: `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{name: "usage already", body: `{"stream_options":{"include_usage":true}}`, edit: Edit{IncludeUsage: true}, same: true},
		{name: "usage false", body: `{"stream_options":{"include_usage":false,"continuous_usage_stats":true}}`, edit: Edit{IncludeUsage: true},
			want: `{"stream_options":{"include_usage":true,"continuous_usage_stats":true}}`},
		{name: "usage other options", body: `{"stream_options":{"continuous_usage_stats":true} }`, edit: Edit{IncludeUsage: true},
			want: `{"stream_options":{"continuous_usage_stats":true,"include_usage":true} }`},
		{name: "usage empty options", body: `{"stream_options":{ }}`, edit: Edit{IncludeUsage: true},
			want: `{"stream_options":{ "include_usage":true}}`},
		{name: "usage null options", body: `{"stream_options":null}`, edit: Edit{IncludeUsage: true},
			want: `{"stream_options":{"include_usage":true}}`},
		{name: "usage options string", body: `{"stream_options":"x"}`, edit: Edit{IncludeUsage: true}, err: ErrInvalidField},

		// all together, with the tail in edit order
		{name: "everything", body: "{\"model\":\"alias\",\"messages\":[],\"tools\":[{\"type\":\"function\"}],\"x\":null}\n",
			edit: Edit{Model: "real", Stop: []string{"s"}, MaxTokens: 8, ExtraBody: []byte(`{"x":1,"y":2}`), StripThink: true, IncludeUsage: true},
			want: "{\"model\":\"real\",\"messages\":[],\"tools\":[{\"type\":\"function\"}],\"x\":null,\"max_tokens\":8,\"stop\":[\"s\"],\"stream_options\":{\"include_usage\":true},\"y\":2}\n"},

		// the zero edit does not even look at the body
		{name: "zero edit", body: `not json`, edit: Edit{}, same: true},
		{name: "not an object", body: `[]`, edit: Edit{Model: "m"}, err: ErrNotJSON},
		{name: "invalid", body: `{"model":"m",}`, edit: Edit{Model: "m"}, err: ErrNotJSON},
		{name: "trailing data", body: `{"model":"m"}{}`, edit: Edit{Model: "m"}, err: ErrNotJSON},
		{name: "invalid after edited member", body: `{"model":"m","x":tru}`, edit: Edit{Model: "n"}, err: ErrNotJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.body)
			out, err := Apply(in, tt.edit)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Apply() error = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply() error = %v", err)
			}
			if tt.same {
				if len(out) != len(in) || &out[0] != &in[0] {
					t.Fatalf("Apply() = %s, want the input slice itself", out)
				}
				return
			}
			if string(out) != tt.want {
				t.Errorf("Apply() =\n%s\nwant\n%s", out, tt.want)
			}
			if string(in) != tt.body {
				t.Errorf("Apply() modified its input: %s", in)
			}
		})
	}
}
