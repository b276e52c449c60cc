// Package caddyfile turns the gateway's two configuration formats into the router config types:
// the llm_gateway directive and llm_audit global option of a Caddyfile, and the origin system's
// config.yaml. It only parses and checks syntax and values; merging the two sources, expanding
// {env.*} placeholders and running the config are the handler's job.
package caddyfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"

	// Registers http.reverse_proxy.transport.http, the module a client's transport block is
	// handed to.
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/llmgw/caddy-llm-gateway/keys"
	"github.com/llmgw/caddy-llm-gateway/router"
)

// UnmarshalGateway parses an llm_gateway directive into cfg. d must be positioned on (or just
// before) the directive name. Clients are appended to cfg.Clients; every other option overwrites
// the field it names. Syntax:
//
//	llm_gateway {
//		config                    <path to origin config.yaml>
//		strategy                  random|deterministic|least_connections
//		thinking_format           passthrough|think_tag|reasoning|reasoning_content
//		models_cache_ttl          <duration>      # 0 disables the /v1/models cache
//		max_request_body          <size>          # 32MiB, 10MB, 1048576, ...
//		response_header_timeout   <duration>      # non-stream calls; default 10m
//		max_buffered_response     <size>          # larger non-stream answers pass through; default 4MiB
//		max_fallback_hops         <n>             # 0 disables model fallback
//		stream_first_byte_timeout <duration>
//		stream_idle_timeout       <duration>      # default 5m
//		access_log_filtered                       # the site's log filters X-Api-Key, Api-Key
//		health_check {
//			failure_threshold <n>
//			cooldown          <duration>
//			max_cooldown      <duration>
//			backoff           <factor>           # below 1 means 1
//			enabled           on|off
//			disabled                            # same as "enabled off"
//		}
//		client <name> {
//			base_url        <url>                 # required
//			api_key         <key>                 # e.g. {env.OPENAI_API_KEY}
//			match           keyword|exact|regex <values...>   # required, repeatable
//			priority        <weight>
//			fallback        <model or client name>
//			upstream_model  <model>
//			special_prefix  <text>
//			stop            <words...>            # repeatable, appends
//			max_tokens      <n>
//			extra_body      <json object>         # quote it with backticks
//			thinking_format passthrough|think_tag|reasoning|reasoning_content
//			strip_think     on|off
//			inject_usage    on|off
//			header          <name> <value>        # repeatable; placeholders expanded per request
//			transport       <module> {            # e.g. http; Caddy's reverse_proxy transport block
//				...
//			}
//		}
//		keys {                                # gateway keys (SPEC §12); without it the gateway is open
//			file <path>                         # YAML keys file (`keys:` list), watched like config
//			store redis://[user:pw@]host:port/db  # shared counters for several nodes (§14); rediss:// for TLS
//			store_failure open|closed           # store unreachable: serve counting per node (default), or 503
//			key <name> {                        # repeatable; names unique across the file and here
//				secret      <key>                 # e.g. {env.TEAM_A_KEY}; or:
//				hash        sha256:<64 hex>       # the key's SHA-256 (caddy llm-keys hash)
//				models      <globs...>            # * and ?; repeatable, appends; default every model
//				rpm         <n>                   # calls per rolling 60 s; 0 or unset: no limit
//				tpm         <n>                   # tokens per rolling 60 s
//				concurrency <n>                   # calls open at once, streams included
//				budget      <n> tokens|usd monthly  # n like 50M, 1.5k, 200
//				expires     <YYYY-MM-DD or RFC 3339>
//			}
//		}
//		prices {                              # USD per 1M tokens; exact names or globs
//			<model> input <usd> output <usd>
//		}
//	}
//
// In special_prefix and stop, the escapes \n, \r, \t and \\ stand for a newline, carriage return,
// tab and backslash, because the Caddyfile lexer keeps backslashes in quoted tokens and stop words
// such as "\n\n" are common. Placeholders like {env.OPENAI_API_KEY} are kept verbatim and expanded
// when the handler is provisioned, so secrets never land in the adapted JSON.
//
// Every client must have a base_url and at least one match rule, and client names must be unique.
// A config this function accepts passes router.Config.Validate.
func UnmarshalGateway(d *caddyfile.Dispenser, cfg *router.Config) error {
	if d.Val() == "" {
		d.Next() // a fresh dispenser starts before the directive name
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	names := make(router.ClientNames, len(cfg.Clients))
	for i, c := range cfg.Clients {
		names[c.Name] = i
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "config":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			cfg.Config = v

		case "strategy":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			s := router.Strategy(v)
			if err := s.Validate(); err != nil {
				return d.Err(err.Error())
			}
			cfg.Strategy = s

		case "thinking_format":
			f, err := thinkingFormatArg(d)
			if err != nil {
				return err
			}
			cfg.ThinkingFormat = f

		case "models_cache_ttl":
			dur, err := durationArg(d, true)
			if err != nil {
				return err
			}
			cfg.ModelsCacheTTL = &dur

		case "max_request_body":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			size, err := humanize.ParseBytes(v)
			if err != nil {
				return d.Errf("invalid max_request_body %q: %v", v, err)
			}
			if size == 0 || size > math.MaxInt64 {
				return d.Errf("max_request_body %q out of range (want more than 0 bytes)", v)
			}
			cfg.MaxRequestBody = int64(size)

		case "max_buffered_response":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			size, err := humanize.ParseBytes(v)
			if err != nil {
				return d.Errf("invalid max_buffered_response %q: %v", v, err)
			}
			if size == 0 || size > math.MaxInt64 {
				return d.Errf("max_buffered_response %q out of range (want more than 0 bytes)", v)
			}
			cfg.MaxBufferedResponse = int64(size)

		case "response_header_timeout":
			dur, err := durationArg(d, false)
			if err != nil {
				return err
			}
			cfg.ResponseHeaderTimeout = dur

		case "max_fallback_hops":
			n, err := intArg(d, 0)
			if err != nil {
				return err
			}
			cfg.MaxFallbackHops = &n

		case "stream_first_byte_timeout":
			dur, err := durationArg(d, false)
			if err != nil {
				return err
			}
			cfg.StreamFirstByteTimeout = dur

		case "stream_idle_timeout":
			dur, err := durationArg(d, false)
			if err != nil {
				return err
			}
			cfg.StreamIdleTimeout = dur

		case "access_log_filtered":
			if d.NextArg() {
				return d.ArgErr()
			}
			cfg.AccessLogFiltered = true

		case "health_check":
			if cfg.HealthCheck == nil {
				cfg.HealthCheck = new(router.HealthCheck)
			}
			if err := unmarshalHealthCheck(d, cfg.HealthCheck); err != nil {
				return err
			}

		case "keys":
			if cfg.Keys == nil {
				cfg.Keys = new(keys.Config)
			}
			if err := unmarshalKeys(d, cfg.Keys); err != nil {
				return err
			}

		case "prices":
			if err := unmarshalPrices(d, &cfg.Prices); err != nil {
				return err
			}

		case "client":
			c, err := unmarshalClient(d, names, len(cfg.Clients))
			if err != nil {
				return err
			}
			cfg.Clients = append(cfg.Clients, c)

		default:
			return d.Errf("unrecognized llm_gateway option %q", opt)
		}
	}
	return nil
}

func unmarshalHealthCheck(d *caddyfile.Dispenser, hc *router.HealthCheck) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "failure_threshold":
			n, err := intArg(d, 1)
			if err != nil {
				return err
			}
			hc.FailureThreshold = n

		case "cooldown":
			dur, err := durationArg(d, false)
			if err != nil {
				return err
			}
			hc.Cooldown = dur

		case "max_cooldown":
			dur, err := durationArg(d, false)
			if err != nil {
				return err
			}
			hc.MaxCooldown = dur

		case "backoff":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil && !errors.Is(err, strconv.ErrRange) {
				return d.Errf("invalid backoff %q: want a number", v)
			}
			// One rule with JSON and the origin's YAML: below 1, or not finite, means 1. The 1 is
			// written out, as 0 would mean the default of 2.
			if math.IsInf(f, 0) || !(f >= 1) {
				f = 1
			}
			hc.Backoff = f

		case "enabled":
			on, err := onOffArg(d)
			if err != nil {
				return err
			}
			hc.Disabled = !on

		case "disabled":
			if d.NextArg() {
				return d.ArgErr()
			}
			hc.Disabled = true

		default:
			return d.Errf("unrecognized health_check option %q", opt)
		}
	}
	return nil
}

// unmarshalClient parses a client block, the client at index i; names holds the names taken so
// far and gets this one.
func unmarshalClient(d *caddyfile.Dispenser, names router.ClientNames, i int) (*router.Client, error) {
	c := new(router.Client)
	if !d.NextArg() {
		return nil, d.Err("client needs a name")
	}
	c.Name = d.Val()
	if err := names.Add(c.Name, i); err != nil {
		return nil, d.Err(err.Error())
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "base_url":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			if err := router.CheckBaseURL(v); err != nil {
				return nil, d.Errf("client %s: %v", c.Name, err)
			}
			c.BaseURL = v

		case "api_key":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			c.APIKey = v

		case "match":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			rule := router.MatchRule{Type: router.MatchType(d.Val()), Values: d.RemainingArgs()}
			if len(rule.Values) == 0 {
				return nil, d.Errf("client %s: match %s needs at least one value", c.Name, rule.Type)
			}
			if err := rule.Compile(); err != nil {
				return nil, d.Errf("client %s: %v", c.Name, err)
			}
			c.Match = append(c.Match, rule)

		case "priority":
			n, err := intArg(d, 0)
			if err != nil {
				return nil, err
			}
			c.Priority = n

		case "fallback":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			c.Fallback = v

		case "upstream_model":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			c.UpstreamModel = v

		case "special_prefix":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			c.SpecialPrefix = unescape.Replace(v)

		case "stop":
			words := d.RemainingArgs()
			if len(words) == 0 {
				return nil, d.ArgErr()
			}
			for _, w := range words {
				c.Stop = append(c.Stop, unescape.Replace(w))
			}

		case "max_tokens":
			n, err := intArg(d, 0)
			if err != nil {
				return nil, err
			}
			c.MaxTokens = n

		case "extra_body":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			v := d.Val()
			if d.NextArg() {
				return nil, d.Errf("client %s: extra_body takes one JSON object; quote it with backticks", c.Name)
			}
			body, err := compactObject(v)
			if err != nil {
				return nil, d.Errf("client %s: extra_body: %v", c.Name, err)
			}
			c.ExtraBody = body

		case "thinking_format":
			f, err := thinkingFormatArg(d)
			if err != nil {
				return nil, err
			}
			c.ThinkingFormat = f

		case "strip_think":
			on, err := onOffArg(d)
			if err != nil {
				return nil, err
			}
			c.StripThink = &on

		case "inject_usage":
			on, err := onOffArg(d)
			if err != nil {
				return nil, err
			}
			c.InjectUsage = &on

		case "header":
			var name, value string
			if !d.AllArgs(&name, &value) {
				return nil, d.ArgErr()
			}
			for k := range c.Headers {
				if strings.EqualFold(k, name) {
					return nil, d.Errf("client %s: header %q set twice", c.Name, name)
				}
			}
			if c.Headers == nil {
				c.Headers = make(map[string]string)
			}
			c.Headers[name] = value

		case "transport":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			if c.TransportRaw != nil {
				return nil, d.Errf("client %s: transport already specified", c.Name)
			}
			name := d.Val()
			modID := "http.reverse_proxy.transport." + name
			unm, err := caddyfile.UnmarshalModule(d, modID)
			if err != nil {
				return nil, err
			}
			if _, ok := unm.(http.RoundTripper); !ok {
				return nil, d.Errf("module %s (%T) is not a RoundTripper", modID, unm)
			}
			c.TransportRaw = caddyconfig.JSONModuleObject(unm, "protocol", name, nil)

		default:
			return nil, d.Errf("unrecognized client option %q", opt)
		}
	}
	// Checked here rather than left to Validate so the error points at the client in the
	// Caddyfile.
	if err := router.CheckBaseURL(c.BaseURL); err != nil {
		return nil, d.Errf("client %s: %v", c.Name, err)
	}
	if len(c.Match) == 0 {
		return nil, d.Errf("client %s: at least one match rule is required", c.Name)
	}
	return c, nil
}

// unescape turns the escapes documented on UnmarshalGateway into the characters they stand for.
// A strings.Replacer is immutable and safe for concurrent use.
var unescape = strings.NewReplacer(`\\`, `\`, `\n`, "\n", `\r`, "\r", `\t`, "\t")

// oneArg returns the single argument of the current option.
func oneArg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

// intArg returns the single integer argument of the current option, which must be >= lowest.
func intArg(d *caddyfile.Dispenser, lowest int) (int, error) {
	opt := d.Val()
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, d.Errf("invalid %s %q: want an integer", opt, v)
	}
	if n < lowest {
		return 0, d.Errf("invalid %s %d: must be >= %d", opt, n, lowest)
	}
	return n, nil
}

// durationArg returns the single duration argument of the current option. Negative durations
// are rejected, and zero unless zeroOK.
func durationArg(d *caddyfile.Dispenser, zeroOK bool) (caddy.Duration, error) {
	opt := d.Val()
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("invalid %s %q: %v", opt, v, err)
	}
	if dur < 0 && zeroOK {
		return 0, d.Errf("invalid %s %q: must not be negative", opt, v)
	}
	if dur < 0 || (dur == 0 && !zeroOK) {
		return 0, d.Errf("invalid %s %q: must be positive", opt, v)
	}
	return caddy.Duration(dur), nil
}

// onOffArg returns the single on|off argument of the current option.
func onOffArg(d *caddyfile.Dispenser) (bool, error) {
	opt := d.Val()
	v, err := oneArg(d)
	if err != nil {
		return false, err
	}
	switch v {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, d.Errf("invalid %s %q: want on or off", opt, v)
}

func thinkingFormatArg(d *caddyfile.Dispenser) (router.ThinkingFormat, error) {
	v, err := oneArg(d)
	if err != nil {
		return "", err
	}
	f := router.ThinkingFormat(v)
	if err := f.Validate(); err != nil {
		return "", d.Err(err.Error())
	}
	return f, nil
}

// compactObject checks that s is one JSON object and returns it compacted.
func compactObject(s string) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if buf.Len() == 0 || buf.Bytes()[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	return buf.Bytes(), nil
}
