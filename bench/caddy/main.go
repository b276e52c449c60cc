// Command caddy is the benchmark's fallback Caddy binary: the standard modules
// plus the gateway's (llm_gateway and llm_audit). The benchmark builds
// cmd/caddy first and uses this only when that binary lacks the gateway's
// modules, so that both proxies under test are always one and the same binary.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/llmgw/caddy-llm-gateway"
	_ "github.com/llmgw/caddy-llm-gateway/audit"
)

func main() {
	caddycmd.Main()
}
