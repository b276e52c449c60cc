// Command caddy is a Caddy binary with the standard modules and the LLM gateway,
// for development and tests. Production builds use xcaddy (see xcaddy.Dockerfile).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/llmgw/caddy-llm-gateway"
)

func main() {
	caddycmd.Main()
}
