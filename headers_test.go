package llmgateway_test

import (
	"context"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestClientHeaderPlaceholders checks that a client's header values are expanded for each
// request: request placeholders from the request at hand, {env.*} as configured.
func TestClientHeaderPlaceholders(t *testing.T) {
	t.Setenv("LLMGW_TEST_ORG", "7")
	up := fake(t, "alpha")
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("alpha", up.URL(), "match keyword gpt",
			"header X-Team {http.request.header.X-Team}",
			"header X-Caller {http.request.remote.host}",
			"header X-Model {http.llm.model}",
			"header X-Org org-{env.LLMGW_TEST_ORG}",
			"header X-Static plain")))
	ctx := context.Background()
	chat := func(opts ...option.RequestOption) {
		t.Helper()
		client := gw.client(opts...)
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-4o",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		if err != nil {
			t.Fatalf("chat: %v", err)
		}
	}

	for _, team := range []string{"blue", "red"} {
		chat(option.WithHeader("X-Team", team))
		h := up.LastRequest().Header
		for name, want := range map[string]string{
			"X-Team": team, "X-Caller": "127.0.0.1", "X-Model": "gpt-4o", "X-Org": "org-7", "X-Static": "plain",
		} {
			if got := h.Get(name); got != want {
				t.Errorf("team %s: upstream %s = %q, want %q", team, name, got, want)
			}
		}
	}

	// Without the caller's X-Team the configured header has no value and is not sent.
	chat()
	if v, ok := up.LastRequest().Header["X-Team"]; ok {
		t.Errorf("upstream X-Team = %q, want none", v)
	}

	// The models list is fetched with the caller's request's values too.
	green := gw.client(option.WithHeader("X-Team", "green"))
	if _, err := green.Models.List(ctx); err != nil {
		t.Fatalf("models: %v", err)
	}
	if r := up.LastRequest(); r.Path != "/v1/models" || r.Header.Get("X-Team") != "green" {
		t.Errorf("models fetch %s: X-Team = %q, want green", r.Path, r.Header.Get("X-Team"))
	}
}
