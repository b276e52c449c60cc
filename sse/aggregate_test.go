package sse

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// aggEvent is one event fed to an Aggregate: name and data.
type aggEvent struct{ name, data string }

func chunks(data ...string) []aggEvent {
	evs := make([]aggEvent, len(data))
	for i, d := range data {
		evs[i] = aggEvent{data: d}
	}
	return evs
}

// jsonEqual reports whether a and b are the same JSON value.
func jsonEqual(t *testing.T, got, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Errorf("aggregate is not JSON: %v\n%s", err, got)
		return false
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want: %v", err)
	}
	return reflect.DeepEqual(g, w)
}

func TestAggregate(t *testing.T) {
	tests := []struct {
		name   string
		kind   AggregateKind
		events []aggEvent
		want   string
	}{
		{
			name: "chat content and usage",
			kind: AggregateChat,
			events: chunks(
				`{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}`,
				`{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}`,
				`{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"lo \"w\"\n\ud83d"},"finish_reason":null}]}`,
				`{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"\ude00"},"finish_reason":"stop"}]}`,
				`{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`,
			),
			want: `{"id":"c1","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"w\"\n😀"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`,
		},
		{
			name: "chat reasoning as carried",
			kind: AggregateChat,
			events: chunks(
				`{"id":"c2","model":"m","choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"think "}}]}`,
				`{"id":"c2","model":"m","choices":[{"index":0,"delta":{"reasoning_content":"more","reasoning":"r"}}]}`,
				`{"id":"c2","model":"m","choices":[{"index":0,"delta":{"content":"answer"},"finish_reason":"stop"}]}`,
			),
			want: `{"id":"c2","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"answer","reasoning":"r","reasoning_content":"think more"},"finish_reason":"stop"}],"usage":null}`,
		},
		{
			name: "chat tool calls merged by index",
			kind: AggregateChat,
			events: chunks(
				`{"id":"c3","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}`,
				`{"id":"c3","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}`,
				`{"id":"c3","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"get_time","arguments":"{}"}}]}}]}`,
				`{"id":"c3","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}}]}`,
				`{"id":"c3","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
			),
			want: `{"id":"c3","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","tool_calls":[` +
				`{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},` +
				`{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":null}`,
		},
		{
			name: "chat several choices, index after delta",
			kind: AggregateChat,
			events: chunks(
				`{"id":"c4","choices":[{"delta":{"content":"b"},"index":1},{"index":0,"delta":{"content":"a"}}]}`,
				`{"id":"c4","choices":[{"index":1,"delta":{"content":"B"},"finish_reason":"length"}]}`,
			),
			want: `{"id":"c4","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":null},{"index":1,"message":{"role":"assistant","content":"bB"},"finish_reason":"length"}],"usage":null}`,
		},
		{
			name:   "chat nothing useful",
			kind:   AggregateChat,
			events: chunks(`not json`, `{"choices":"x"}`, `[1,2]`),
			want:   `{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant"},"finish_reason":null}],"usage":null}`,
		},
		{
			name: "completions",
			kind: AggregateCompletion,
			events: chunks(
				`{"id":"t1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"Once","finish_reason":null}]}`,
				`{"id":"t1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":" upon","finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`,
			),
			want: `{"id":"t1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"Once upon","finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`,
		},
		{
			name: "responses completed",
			kind: AggregateResponses,
			events: []aggEvent{
				{"response.created", `{"type":"response.created","response":{"id":"r1","object":"response","status":"in_progress","output":[]}}`},
				{"response.output_text.delta", `{"type":"response.output_text.delta","delta":"Hi"}`},
				{"response.completed", `{"type":"response.completed","response":{"id":"r1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":2,"output_tokens":1,"total_tokens":3}}}`},
				{"response.output_text.delta", `{"type":"response.output_text.delta","delta":"late"}`},
			},
			want: `{"id":"r1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":2,"output_tokens":1,"total_tokens":3}}`,
		},
		{
			name: "responses cut",
			kind: AggregateResponses,
			events: []aggEvent{
				{"response.created", `{"type":"response.created","response":{"id":"r2","object":"response","status":"in_progress","output":[],"usage":null}}`},
				{"response.output_text.delta", `{"type":"response.output_text.delta","delta":"Hel"}`},
				{"response.output_text.delta", `{"type":"response.output_text.delta","delta":"lo"}`},
			},
			want: `{"id":"r2","object":"response","status":"in_progress","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello"}]}],"usage":null}`,
		},
		{
			name:   "responses nothing",
			kind:   AggregateResponses,
			events: chunks(`{"type":"error"}`),
			want:   `{"object":"response","output":[],"usage":{"input_tokens":0,"output_tokens":0,"total_tokens":0}}`,
		},
		{
			name: "messages with input_tokens kept",
			kind: AggregateMessages,
			events: chunks(
				`{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}`,
				`{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}`,
				`{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}`,
				`{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}`,
				`{"type":"content_block_stop","index":0}`,
				`{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}`,
				`{"type":"ping"}`,
				`{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}`,
				`{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"!"}}`,
				`{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"tu_1","name":"get","input":{}}}`,
				`{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}`,
				`{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"1}"}}`,
				`{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":15}}`,
				`{"type":"message_stop"}`,
				`{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"late"}}`,
			),
			want: `{"id":"msg_1","type":"message","role":"assistant","model":"claude","stop_reason":"tool_use","stop_sequence":null,"content":[` +
				`{"type":"thinking","signature":"sig","thinking":"hmm"},{"type":"text","text":"Hello!"},{"type":"tool_use","id":"tu_1","name":"get","input":{"a":1}}],` +
				`"usage":{"input_tokens":25,"output_tokens":15}}`,
		},
		{
			name: "messages cut mid tool input",
			kind: AggregateMessages,
			events: chunks(
				`{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","content":[],"model":"claude","usage":{"input_tokens":5,"output_tokens":1}}}`,
				`{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"tu","name":"f","input":{}}}`,
				`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}`,
			),
			want: `{"id":"msg_2","type":"message","role":"assistant","model":"claude","content":[{"type":"tool_use","id":"tu","name":"f","input":{},"partial_json":"{\"a\":"}],"usage":{"input_tokens":5,"output_tokens":1}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAggregate(tc.kind, 1<<20)
			for _, ev := range tc.events {
				a.Add([]byte(ev.name), []byte(ev.data))
			}
			got := string(a.AppendJSON(nil))
			if !jsonEqual(t, got, tc.want) {
				t.Errorf("aggregate\n got %s\nwant %s", got, tc.want)
			}
			if a.Dropped() != 0 {
				t.Errorf("Dropped %d, want 0", a.Dropped())
			}
		})
	}
}

// TestAggregateLimit checks that what is kept stays within the limit however long the stream,
// and that what is left out is counted.
func TestAggregateLimit(t *testing.T) {
	const limit = 1000
	a := NewAggregate(AggregateChat, limit)
	piece := strings.Repeat("x", 90)
	for i := range 1000 {
		a.Add(nil, []byte(`{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"`+piece+`"}}]}`))
		if i%10 == 0 { // many tool calls and choices, too: each costs its share
			a.Add(nil, []byte(`{"choices":[{"index":`+itoa(i)+`,"delta":{"tool_calls":[{"index":`+itoa(i)+`,"function":{"arguments":"a"}}]}}]}`))
		}
	}
	if a.used > limit {
		t.Errorf("kept %d bytes, over the limit %d", a.used, limit)
	}
	out := a.AppendJSON(nil)
	if len(out) > 2*limit {
		t.Errorf("object of %d bytes for a limit of %d", len(out), limit)
	}
	if a.Dropped() < 80000 {
		t.Errorf("Dropped %d, want about the 90 KB left out", a.Dropped())
	}
}

func itoa(n int) string { return string(appendInt(nil, n)) }

// TestAggregateReplaceDoesNotGrow checks that values replaced on every event (finish_reason,
// the usage, a message_delta) are charged once, not per event.
func TestAggregateReplaceDoesNotGrow(t *testing.T) {
	a := NewAggregate(AggregateChat, 4096)
	for range 10000 {
		a.Add(nil, []byte(`{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`))
	}
	if a.Dropped() != 0 {
		t.Errorf("Dropped %d after replacing the same values", a.Dropped())
	}
	m := NewAggregate(AggregateMessages, 4096)
	m.Add(nil, []byte(`{"type":"message_start","message":{"id":"x","usage":{"input_tokens":1}}}`))
	for range 10000 {
		m.Add(nil, []byte(`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":12345}}`))
	}
	if m.Dropped() != 0 {
		t.Errorf("messages: Dropped %d after replacing the same values", m.Dropped())
	}
}

func BenchmarkAggregateChat(b *testing.B) {
	chunk := []byte(`{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"hello world "},"finish_reason":null}]}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(chunk)) * 64)
	for b.Loop() {
		a := NewAggregate(AggregateChat, 1<<20)
		for range 64 {
			a.Add(nil, chunk)
		}
		_ = a.AppendJSON(make([]byte, 0, 1024))
	}
}

// FuzzAggregate feeds arbitrary event sequences (one event per line of the input) to an
// Aggregate of each kind: it must never panic, never keep more than its limit, and, when every
// event was valid JSON and nothing was left out, build valid JSON.
func FuzzAggregate(f *testing.F) {
	for _, s := range []string{
		"\x01\x00" + `{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"hi","tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}`,
		"\x02\x00" + `{"id":"t","choices":[{"index":0,"text":"x"}]}` + "\n" + `{"choices":[{"index":3,"text":"y","finish_reason":"length"}]}`,
		"\x03\x00" + `{"type":"response.created","response":{"id":"r","output":[]}}` + "\n" + `{"type":"response.output_text.delta","delta":"d"}`,
		"\x04\x00" + `{"type":"message_start","message":{"id":"m","usage":{"input_tokens":1}}}` + "\n" +
			`{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","input":{}}}` + "\n" +
			`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{}"}}` + "\n" +
			`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}`,
		"\x01\x10" + `{"choices":[{"index":99999999,"delta":{"content":"\ud83d"}}]}` + "\n" + `{"choices":[{"index":-1}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		kind := AggregateKind(in[0]%4 + 1)
		limit := int(in[1]) * 16 // 0: no limit
		a := NewAggregate(kind, limit)
		valid := true
		for _, ev := range bytes.Split(in[2:], []byte("\n")) {
			valid = valid && json.Valid(ev)
			a.Add(nil, ev)
		}
		if limit > 0 && a.used > limit {
			t.Fatalf("kept %d bytes, over the limit %d", a.used, limit)
		}
		out := a.AppendJSON(nil)
		if valid && a.Dropped() == 0 && !json.Valid(out) {
			t.Fatalf("valid events gave invalid JSON:\n%s", out)
		}
	})
}
