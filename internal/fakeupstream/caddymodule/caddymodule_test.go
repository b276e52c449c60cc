package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

const (
	modulePath = "github.com/llmgw/caddy-llm-gateway"
	thisPkg    = modulePath + "/internal/fakeupstream/caddymodule"
)

// TestOnlyInDevBinary checks that an xcaddy build, which imports the module's root package,
// gets no fake upstream, while the development binary has it.
func TestOnlyInDevBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	if slices.Contains(deps(modulePath), thisPkg) {
		t.Errorf("%s depends on %s: an xcaddy build would contain the fake upstream", modulePath, thisPkg)
	}
	if !slices.Contains(deps(modulePath+"/cmd/caddy"), thisPkg) {
		t.Errorf("cmd/caddy does not import %s: examples/Caddyfile needs fake_openai", thisPkg)
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // the handler's JSON
	}{
		{`fake_openai`, `{}`},
		{`fake_openai up1`, `{"name":"up1"}`},
		{"fake_openai up1 {\n content \"hi there\"\n chunks 5\n chunk_delay 10ms\n delay 1s\n status 429\n models a b\n}",
			`{"name":"up1","settings":{"status":429,"delay":"1s","chunks":5,"chunk_delay":"10ms","content":"hi there","reasoning":"","think_tags":false,"usage":{"prompt_tokens":0,"completion_tokens":0},"models":["a","b"],"break_after":0,"hangup":false,"no_done":false,"pings":false,"large_event":0,"after_done":0,"linger":false,"headers":null}}`},
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in)); err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		got, _ := json.Marshal(&h)
		if string(got) != tc.want {
			t.Errorf("%q:\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"fake_openai a b", "wrong argument count"},
		{"fake_openai {\n content hi there\n}", "wrong argument count"},
		{"fake_openai {\n chunks 0\n}", "want a number >= 1"},
		{"fake_openai {\n chunks x\n}", "invalid syntax"},
		{"fake_openai {\n status 42\n}", "want an HTTP status code"},
		{"fake_openai {\n delay soon\n}", "delay"},
		{"fake_openai {\n chunk_delay\n}", "wrong argument count"},
		{"fake_openai {\n models\n}", "wrong argument count"},
		{"fake_openai {\n colour red\n}", `unknown subdirective "colour"`},
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}

// TestServesTheAPI runs the directive in Caddy and drives it with the official SDK.
func TestServesTheAPI(t *testing.T) {
	port := freePort(t)
	cf := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n}\nhttp://:%d {\n\tbind 127.0.0.1\n\tfake_openai up1 {\n\t\tchunks 4\n\t\tmodels m1 m2\n\t}\n}\n", port)
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfgJSON, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	client := openai.NewClient(option.WithBaseURL(fmt.Sprintf("http://127.0.0.1:%d/v1/", port)),
		option.WithAPIKey("sk-test"), option.WithMaxRetries(0), option.WithRequestTimeout(30*time.Second))
	ctx := context.Background()
	chat, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	if err != nil || chat.Choices[0].Message.Content != "hello from up1" || chat.Model != "gpt-4o" {
		t.Fatalf("chat: %v %+v", err, chat)
	}

	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil || chunks != 4 || acc.Choices[0].Message.Content != "hello from up1" {
		t.Fatalf("stream: %v, %d chunks, %+v", err, chunks, acc.Choices)
	}

	page, err := client.Models.List(ctx)
	if err != nil || len(page.Data) != 2 || page.Data[0].ID != "m1" {
		t.Fatalf("models: %v %+v", err, page)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
