// Command caddy is a Caddy binary with the standard modules, the LLM gateway and the fake
// OpenAI upstream (http.handlers.fake_openai, which examples/Caddyfile serves), for development
// and tests. Production builds use xcaddy (see xcaddy.Dockerfile) and have no fake upstream.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/llmgw/caddy-llm-gateway"
	_ "github.com/llmgw/caddy-llm-gateway/internal/fakeupstream/caddymodule"
)

func main() {
	caddycmd.Main()
}
