package llmgateway

// The usage dashboard (SPEC §13) lives in its own package; importing it here
// registers http.handlers.llm_dashboard and its Caddyfile directive wherever
// the gateway is built in.
import _ "github.com/llmgw/caddy-llm-gateway/dashboard"
