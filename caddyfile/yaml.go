package caddyfile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"gopkg.in/yaml.v3"

	"github.com/llmgw/caddy-llm-gateway/router"
)

// LoadYAML reads and parses the origin-format config file at path, expanding ${VAR} from the
// process environment. See ParseYAML.
func LoadYAML(path string) (*router.Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading origin config: %w", err)
	}
	return ParseYAML(data, path, os.Getenv)
}

// ParseYAML parses an origin-format config.yaml (the one with openai_clients) into a Config. It
// returns the warnings found on the way (unknown keys, unset variables, values the origin
// silently ignored), each as "<file>:<line>: <message>". Errors have the same form and name the
// offending key's path, for example
//
//	config.yaml:12: openai_clients[1].priority: want an integer >= 0, got "-1"
//
// The schema is the origin's: load_balancing.strategy, thinking_format, models_cache.ttl_seconds
// (0 disables the cache), health_check {enabled, failure_threshold, cooldown_seconds,
// max_cooldown_seconds, backoff_multiplier}, and the required openai_clients list whose entries
// have name, base_url, api_key, model_match {type, value}, priority, fallback, special_prefix,
// stop, max_tokens, extra_body, thinking_format and headers. On top of it the gateway accepts
// upstream_model, strip_think, inject_usage, model_match type regex, a list of model_match
// entries, a single string for model_match.value and stop, and extra_body as a YAML mapping.
//
// Fields the file leaves out stay unset so the handler's own settings and defaults apply.
//
// In every string value, ${NAME} (NAME made of letters, digits and underscores, not starting
// with a digit) is replaced by getenv(NAME); an empty or unset variable expands to "" and is
// reported as a warning. $${ stands for a literal ${. Any other $ is kept as written.
//
// Where the origin silently accepted a value that could never work, the gateway keeps going
// and warns: an extra_body string that is not a JSON object is skipped, a model_match rule with
// an unknown type or no values is dropped, and a client left without any rule is skipped.
//
// A nil getenv means os.Getenv.
func ParseYAML(data []byte, filename string, getenv func(string) string) (*router.Config, []string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	p := &yamlParser{file: filename, getenv: getenv, budget: maxJSONNodes}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, p.syntaxErr(err)
	}
	cfg, err := p.root(&doc)
	if err != nil {
		return nil, p.warnings, err
	}
	// The checks above already cover every rule of Validate with a line number; this is a net
	// for anything they missed, so a file is never accepted that provisioning would reject.
	if err := cfg.Validate(); err != nil {
		return nil, p.warnings, fmt.Errorf("%s: %w", filename, err)
	}
	return cfg, p.warnings, nil
}

// maxJSONNodes bounds the YAML nodes turned into extra_body JSON per file, so a few aliases
// cannot expand into an enormous body.
const maxJSONNodes = 100_000

// yamlParser walks a yaml.Node tree following the origin schema. Walking nodes instead of
// decoding into structs is what gives every error and warning its line and key path.
type yamlParser struct {
	file     string
	getenv   func(string) string
	warnings []string
	budget   int // nodes left for extra_body conversion
}

// fieldFunc handles the value of one known mapping key; path is the key's full path.
type fieldFunc func(v *yaml.Node, path string) error

func (p *yamlParser) errf(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", p.file, n.Line, fmt.Sprintf(format, args...))
}

func (p *yamlParser) warnf(n *yaml.Node, format string, args ...any) {
	p.warnings = append(p.warnings, fmt.Sprintf("%s:%d: %s", p.file, n.Line, fmt.Sprintf(format, args...)))
}

// syntaxErr rewrites yaml.v3's "yaml: line N: cause" into "<file>:N: cause".
func (p *yamlParser) syntaxErr(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, cause, ok := strings.Cut(rest, ": "); ok {
			if _, err := strconv.Atoi(num); err == nil {
				return fmt.Errorf("%s:%s: %s", p.file, num, cause)
			}
		}
	}
	return fmt.Errorf("%s: %s", p.file, msg)
}

func (p *yamlParser) root(doc *yaml.Node) (*router.Config, error) {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, fmt.Errorf("%s: openai_clients is required", p.file)
	}
	top := resolve(doc.Content[0])
	cfg := new(router.Config)
	var haveClients bool
	err := p.fields(top, "", map[string]fieldFunc{
		"load_balancing": func(v *yaml.Node, path string) error {
			return p.fields(v, path, map[string]fieldFunc{
				"strategy": func(v *yaml.Node, path string) error {
					s, err := p.str(v, path)
					if err != nil {
						return err
					}
					cfg.Strategy = router.Strategy(s)
					if err := cfg.Strategy.Validate(); err != nil {
						return p.errf(v, "%s: %v", path, err)
					}
					return nil
				},
			})
		},
		"thinking_format": func(v *yaml.Node, path string) error {
			f, err := p.thinkingFormat(v, path)
			cfg.ThinkingFormat = f
			return err
		},
		"models_cache": func(v *yaml.Node, path string) error {
			return p.fields(v, path, map[string]fieldFunc{
				"ttl_seconds": func(v *yaml.Node, path string) error {
					d, err := p.seconds(v, path)
					cfg.ModelsCacheTTL = &d
					return err
				},
			})
		},
		"health_check": func(v *yaml.Node, path string) error {
			cfg.HealthCheck = new(router.HealthCheck)
			return p.healthCheck(v, path, cfg.HealthCheck)
		},
		"openai_clients": func(v *yaml.Node, path string) error {
			haveClients = true
			return p.clients(v, path, cfg)
		},
	})
	if err != nil {
		return nil, err
	}
	if !haveClients {
		return nil, p.errf(top, "openai_clients is required")
	}
	return cfg, nil
}

func (p *yamlParser) healthCheck(n *yaml.Node, path string, hc *router.HealthCheck) error {
	return p.fields(n, path, map[string]fieldFunc{
		"enabled": func(v *yaml.Node, path string) error {
			on, err := p.bool(v, path)
			hc.Disabled = !on
			return err
		},
		"failure_threshold": func(v *yaml.Node, path string) error {
			n, err := p.uint32(v, path)
			// The origin normalises 0 to 1; in HealthCheck 0 would mean the default of 3.
			hc.FailureThreshold = max(n, 1)
			return err
		},
		"cooldown_seconds": func(v *yaml.Node, path string) error {
			d, err := p.seconds(v, path)
			hc.Cooldown = d
			return err
		},
		"max_cooldown_seconds": func(v *yaml.Node, path string) error {
			d, err := p.seconds(v, path)
			hc.MaxCooldown = d
			return err
		},
		"backoff_multiplier": func(v *yaml.Node, path string) error {
			f, err := p.float(v, path)
			// The origin turns non-finite values and values below 1 into 1; in HealthCheck 0
			// would mean the default of 2, so the 1 is written out.
			if math.IsInf(f, 0) || !(f >= 1) {
				f = 1
			}
			hc.Backoff = f
			return err
		},
	})
}

func (p *yamlParser) clients(n *yaml.Node, path string, cfg *router.Config) error {
	if n.Kind != yaml.SequenceNode {
		return p.errf(n, "%s: want a list of clients, got %s", path, describe(n))
	}
	names := make(router.ClientNames, len(n.Content))
	for i, item := range n.Content {
		item = resolve(item)
		itemPath := fmt.Sprintf("%s[%d]", path, i)
		c, err := p.client(item, itemPath)
		if err != nil {
			return err
		}
		if c == nil {
			continue
		}
		if err := names.Add(c.Name, len(cfg.Clients)); err != nil {
			return p.errf(item, "%s: %v", itemPath, err)
		}
		cfg.Clients = append(cfg.Clients, c)
	}
	return nil
}

// client parses one openai_clients entry. It returns a nil client, with a warning, for a client
// that could never be chosen in the origin either.
func (p *yamlParser) client(n *yaml.Node, path string) (*router.Client, error) {
	c := new(router.Client)
	var haveMatch bool
	str := func(dst *string) fieldFunc {
		return func(v *yaml.Node, path string) error {
			s, err := p.str(v, path)
			*dst = s
			return err
		}
	}
	boolPtr := func(dst **bool) fieldFunc {
		return func(v *yaml.Node, path string) error {
			b, err := p.bool(v, path)
			*dst = &b
			return err
		}
	}
	err := p.fields(n, path, map[string]fieldFunc{
		"name":     str(&c.Name),
		"base_url": str(&c.BaseURL),
		"api_key": func(v *yaml.Node, path string) error {
			key, err := p.str(v, path)
			if err == nil && key == "" && strings.Contains(v.Value, "${") {
				// Falling back to the caller's key would send callers' credentials to an
				// upstream meant to get the operator's (SPEC §2.4).
				return p.errf(v, "%s: %q expands to an empty key; set the variable, or write api_key: \"\" to pass the caller's key through", path, v.Value)
			}
			c.APIKey = key
			return err
		},
		"fallback":       str(&c.Fallback),
		"upstream_model": str(&c.UpstreamModel),
		"special_prefix": str(&c.SpecialPrefix),
		"strip_think":    boolPtr(&c.StripThink),
		"inject_usage":   boolPtr(&c.InjectUsage),
		"model_match": func(v *yaml.Node, path string) error {
			haveMatch = true
			rules, err := p.modelMatch(v, path)
			c.Match = rules
			return err
		},
		"priority": func(v *yaml.Node, path string) error {
			n, err := p.uint32(v, path)
			c.Priority = n
			return err
		},
		"max_tokens": func(v *yaml.Node, path string) error {
			n, err := p.uint32(v, path)
			c.MaxTokens = n
			return err
		},
		"stop": func(v *yaml.Node, path string) error {
			words, err := p.strList(v, path)
			c.Stop = words
			return err
		},
		"extra_body": func(v *yaml.Node, path string) error {
			body, err := p.extraBody(v, path)
			c.ExtraBody = body
			return err
		},
		"thinking_format": func(v *yaml.Node, path string) error {
			f, err := p.thinkingFormat(v, path)
			c.ThinkingFormat = f
			return err
		},
		"headers": func(v *yaml.Node, path string) error {
			h, err := p.headers(v, path)
			c.Headers = h
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	if c.Name == "" {
		return nil, p.errf(n, "%s: name is required", path)
	}
	if err := router.CheckBaseURL(c.BaseURL); err != nil {
		return nil, p.errf(n, "%s: %v", path, err)
	}
	if !haveMatch {
		return nil, p.errf(n, "%s: model_match is required", path)
	}
	if len(c.Match) == 0 {
		p.warnf(n, "%s: client %q has no usable model_match rule and never matches; skipped", path, c.Name)
		return nil, nil
	}
	return c, nil
}

// modelMatch parses one {type, value} rule or a list of them. Rules the origin accepted but
// that never match are dropped with a warning.
func (p *yamlParser) modelMatch(n *yaml.Node, path string) ([]router.MatchRule, error) {
	if n.Kind == yaml.MappingNode {
		r, err := p.matchRule(n, path)
		if r == nil || err != nil {
			return nil, err
		}
		return []router.MatchRule{*r}, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "%s: want a mapping {type, value} or a list of them, got %s", path, describe(n))
	}
	var rules []router.MatchRule
	for i, item := range n.Content {
		r, err := p.matchRule(resolve(item), fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, err
		}
		if r != nil {
			rules = append(rules, *r)
		}
	}
	return rules, nil
}

func (p *yamlParser) matchRule(n *yaml.Node, path string) (*router.MatchRule, error) {
	r := new(router.MatchRule)
	var haveType, haveValue bool
	err := p.fields(n, path, map[string]fieldFunc{
		"type": func(v *yaml.Node, path string) error {
			haveType = true
			s, err := p.str(v, path)
			r.Type = router.MatchType(s)
			return err
		},
		"value": func(v *yaml.Node, path string) error {
			haveValue = true
			vals, err := p.strList(v, path)
			r.Values = vals
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	if !haveType {
		return nil, p.errf(n, "%s: type is required", path)
	}
	if !haveValue {
		return nil, p.errf(n, "%s: value is required", path)
	}
	switch r.Type {
	case router.MatchKeyword, router.MatchExact, router.MatchRegex:
	default:
		p.warnf(n, "%s: unknown match type %q never matches (want keyword, exact or regex); rule dropped", path, r.Type)
		return nil, nil
	}
	if len(r.Values) == 0 {
		p.warnf(n, "%s: rule without values never matches; rule dropped", path)
		return nil, nil
	}
	if err := r.Compile(); err != nil {
		return nil, p.errf(n, "%s: %v", path, err)
	}
	return r, nil
}

// extraBody accepts a string holding a JSON object, as the origin did, or a YAML mapping.
func (p *yamlParser) extraBody(n *yaml.Node, path string) (json.RawMessage, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		s, err := p.str(n, path)
		if err != nil || strings.TrimSpace(s) == "" {
			return nil, err
		}
		body, err := compactObject(s)
		if err != nil {
			p.warnf(n, "%s: not a valid JSON object (%v), skipping", path, err)
			return nil, nil
		}
		return body, nil
	case yaml.MappingNode:
		var buf bytes.Buffer
		if err := p.writeJSON(&buf, n, path); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	return nil, p.errf(n, "%s: want a JSON object string or a mapping, got %s", path, describe(n))
}

// writeJSON writes the YAML value n as JSON, keeping mapping keys in file order.
func (p *yamlParser) writeJSON(buf *bytes.Buffer, n *yaml.Node, path string) error {
	n = resolve(n)
	if p.budget--; p.budget < 0 {
		return p.errf(n, "%s: value too large", path)
	}
	switch n.Kind {
	case yaml.MappingNode:
		buf.WriteByte('{')
		seen := make(map[string]bool, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := resolve(n.Content[i])
			if k.Kind != yaml.ScalarNode {
				return p.errf(k, "%s: mapping keys must be strings", path)
			}
			if seen[k.Value] {
				return p.errf(k, "%s: duplicate key %q", path, k.Value)
			}
			seen[k.Value] = true
			if i > 0 {
				buf.WriteByte(',')
			}
			writeJSONString(buf, k.Value)
			buf.WriteByte(':')
			if err := p.writeJSON(buf, n.Content[i+1], path+"."+k.Value); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case yaml.SequenceNode:
		buf.WriteByte('[')
		for i, item := range n.Content {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := p.writeJSON(buf, item, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			buf.WriteString("null")
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return p.errf(n, "%s: %v", path, err)
			}
			buf.WriteString(strconv.FormatBool(b))
		case "!!int":
			var i int64
			if err := n.Decode(&i); err != nil {
				return p.errf(n, "%s: integer %s out of range", path, n.Value)
			}
			buf.WriteString(strconv.FormatInt(i, 10))
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
				return p.errf(n, "%s: %s is not a JSON number", path, n.Value)
			}
			buf.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
		default:
			writeJSONString(buf, p.expand(n, n.Value))
		}
	default:
		return p.errf(n, "%s: unsupported value", path)
	}
	return nil
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}

func (p *yamlParser) headers(n *yaml.Node, path string) (map[string]string, error) {
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "%s: want a mapping of header names to values, got %s", path, describe(n))
	}
	h := make(map[string]string, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			return nil, p.errf(k, "%s: header names must be non-empty strings", path)
		}
		for name := range h {
			if strings.EqualFold(name, k.Value) {
				return nil, p.errf(k, "%s: header %q set twice", path, k.Value)
			}
		}
		s, err := p.str(v, path+"."+k.Value)
		if err != nil {
			return nil, err
		}
		h[k.Value] = s
	}
	return h, nil
}

// fields walks the mapping n, calling the handler of each known key and warning about every
// unknown one. A null value counts as absent, as it did for the origin's optional fields.
func (p *yamlParser) fields(n *yaml.Node, path string, known map[string]fieldFunc) error {
	if n.Kind != yaml.MappingNode {
		what := path
		if what == "" {
			what = "top level"
		}
		return p.errf(n, "%s: want a mapping, got %s", what, describe(n))
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		keyPath := k.Value
		if path != "" {
			keyPath = path + "." + k.Value
		}
		if seen[k.Value] {
			return p.errf(k, "%s: duplicate key", keyPath)
		}
		seen[k.Value] = true
		fn, ok := known[k.Value]
		if !ok || k.Kind != yaml.ScalarNode {
			p.warnf(k, "unknown key %s (ignored)", keyPath)
			continue
		}
		if isNull(v) {
			continue
		}
		if err := fn(v, keyPath); err != nil {
			return err
		}
	}
	return nil
}

// str returns a scalar as the string it was written as, with ${VAR} expanded. Numbers and
// booleans are accepted as text, so api_key: 0123 keeps its leading zero.
func (p *yamlParser) str(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		return "", p.errf(n, "%s: want a string, got %s", path, describe(n))
	}
	return p.expand(n, n.Value), nil
}

// strList accepts a list of strings or a single string.
func (p *yamlParser) strList(n *yaml.Node, path string) ([]string, error) {
	if n.Kind == yaml.ScalarNode {
		s, err := p.str(n, path)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "%s: want a list of strings, got %s", path, describe(n))
	}
	list := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		s, err := p.str(resolve(item), fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, err
		}
		list = append(list, s)
	}
	return list, nil
}

// uint32 accepts the origin's u32 fields: integers from 0 to 2^32-1.
func (p *yamlParser) uint32(n *yaml.Node, path string) (int, error) {
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil || v < 0 || v > math.MaxUint32 {
		return 0, p.errf(n, "%s: want an integer from 0 to %d, got %s", path, uint32(math.MaxUint32), describe(n))
	}
	return int(v), nil
}

// seconds accepts a whole number of seconds.
func (p *yamlParser) seconds(n *yaml.Node, path string) (caddy.Duration, error) {
	const most = math.MaxInt64 / int64(time.Second)
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil || v < 0 || v > most {
		return 0, p.errf(n, "%s: want a whole number of seconds >= 0, got %s", path, describe(n))
	}
	return caddy.Duration(time.Duration(v) * time.Second), nil
}

func (p *yamlParser) float(n *yaml.Node, path string) (float64, error) {
	var f float64
	tag := n.ShortTag()
	if n.Kind != yaml.ScalarNode || (tag != "!!int" && tag != "!!float") || n.Decode(&f) != nil {
		return 0, p.errf(n, "%s: want a number, got %s", path, describe(n))
	}
	return f, nil
}

func (p *yamlParser) bool(n *yaml.Node, path string) (bool, error) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		return false, p.errf(n, "%s: want true or false, got %s", path, describe(n))
	}
	return b, nil
}

func (p *yamlParser) thinkingFormat(n *yaml.Node, path string) (router.ThinkingFormat, error) {
	s, err := p.str(n, path)
	if err != nil {
		return "", err
	}
	f := router.ThinkingFormat(s)
	if err := f.Validate(); err != nil {
		return "", p.errf(n, "%s: %v", path, err)
	}
	return f, nil
}

// expand replaces ${NAME} in s with the variable's value; $${ is a literal ${.
func (p *yamlParser) expand(n *yaml.Node, s string) string {
	if !strings.Contains(s, "${") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			break
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 || !isEnvName(s[i+2:i+2+end]) {
			b.WriteString(s[:i+2])
			s = s[i+2:]
			continue
		}
		name := s[i+2 : i+2+end]
		val := p.getenv(name)
		if val == "" {
			p.warnf(n, "${%s} is empty or not set; expanded to \"\"", name)
		}
		b.WriteString(s[:i])
		b.WriteString(val)
		s = s[i+2+end+1:]
	}
	b.WriteString(s)
	return b.String()
}

func isEnvName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a node's value for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "null"
		}
		return strconv.Quote(n.Value)
	}
	return "nothing"
}
