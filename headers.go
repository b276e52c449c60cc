package llmgateway

import (
	"context"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// newHeaderValue prepares a configured upstream header. A value without request placeholders
// is expanded once, here, with repl (a bare replacer: {env.*} and the other global
// placeholders), and every request shares the result. A value with request placeholders
// ({http.request.header.X-Team}, {http.request.remote.host}, {http.llm.model}…) is kept as
// written and expanded for each request by values.
func newHeaderValue(repl *caddy.Replacer, name, value string) headerValue {
	h := headerValue{name: http.CanonicalHeaderKey(name)}
	if hasRequestPlaceholder(value) {
		h.template = value
		return h
	}
	h.values = []string{repl.ReplaceKnown(value, "")}
	return h
}

// valuesFor returns the header's values for the request whose context is ctx, nil when it has
// none. A value that expands to nothing, or to something no header may carry (a line break
// from a decoded query parameter, say), has none: an invalid header would fail the upstream
// call and count against the client's breaker, for a caller's input.
func (h *headerValue) valuesFor(ctx context.Context) []string {
	if h.template == "" {
		return h.values
	}
	repl, _ := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return nil
	}
	v := repl.ReplaceKnown(h.template, "")
	if v == "" || !validHeaderValue(v) {
		return nil
	}
	return []string{v}
}

// hasRequestPlaceholder reports whether v holds a placeholder other than {env.*}, which only a
// request's replacer can expand. An escaped brace (\{) is no placeholder, but erring on its
// side only costs an expansion per request.
func hasRequestPlaceholder(v string) bool {
	for {
		open := strings.IndexByte(v, '{')
		if open < 0 {
			return false
		}
		end := strings.IndexByte(v[open:], '}')
		if end < 0 {
			return false
		}
		if name := v[open+1 : open+end]; name != "" && !strings.HasPrefix(name, "env.") {
			return true
		}
		v = v[open+end+1:]
	}
}

// validHeaderValue reports whether v may be sent as a header field value (RFC 9110 §5.5):
// no control characters but horizontal tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
