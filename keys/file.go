package keys

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ParseFile parses a YAML keys file:
//
//	keys:
//	  - name: team-a
//	    secret: ${TEAM_A_KEY}          # or hash: sha256:<64 hex>
//	    models: [gpt-4o*, text-embedding-*]
//	    rpm: 600
//	    tpm: 200000
//	    concurrency: 20
//	    budget: 50M tokens monthly
//	    expires: 2027-01-01
//
// Errors are "<file>:<line>: keys[i].<field> (key <name>): <problem>". A secret is kept as
// written: the handler expands its placeholders, as for inline keys.
func ParseFile(data []byte, file string) ([]*Key, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%s: %s", file, strings.Join(te.Errors, "; "))
		}
		// yaml.v3 syntax errors read "yaml: line N: …".
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			if i := strings.IndexByte(rest, ':'); i > 0 {
				return nil, fmt.Errorf("%s:%s: %s", file, rest[:i], strings.TrimSpace(rest[i+1:]))
			}
		}
		return nil, fmt.Errorf("%s: %s", file, msg)
	}
	if len(doc.Content) == 0 {
		return nil, nil // an empty file: no keys
	}
	root := doc.Content[0]
	errf := func(n *yaml.Node, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s", file, n.Line, fmt.Sprintf(format, args...))
	}
	if root.Kind != yaml.MappingNode {
		return nil, errf(root, "want a mapping with a keys list")
	}
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != "keys" {
			return nil, errf(k, "unknown field %q (want keys)", k.Value)
		}
		list = v
	}
	if list == nil || list.Tag == "!!null" {
		return nil, nil
	}
	if list.Kind != yaml.SequenceNode {
		return nil, errf(list, "keys: want a list")
	}
	var out []*Key
	seen := make(map[string]int)
	for i, n := range list.Content {
		path := "keys[" + strconv.Itoa(i) + "]"
		if n.Kind != yaml.MappingNode {
			return nil, errf(n, "%s: want a mapping", path)
		}
		k := new(Key)
		// The name first, so every later error can name the key.
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == "name" {
				k.Name = n.Content[j+1].Value
			}
		}
		who := path
		if k.Name != "" {
			who = path + " (key " + k.Name + ")"
		}
		for j := 0; j+1 < len(n.Content); j += 2 {
			f, v := n.Content[j], n.Content[j+1]
			scalar := func() (string, error) {
				if v.Kind != yaml.ScalarNode {
					return "", errf(v, "%s: %s: want a single value", who, f.Value)
				}
				return v.Value, nil
			}
			integer := func() (int64, error) {
				s, err := scalar()
				if err != nil {
					return 0, err
				}
				x, perr := strconv.ParseInt(s, 10, 64)
				if perr != nil || x < 0 {
					return 0, errf(v, "%s: %s: want a whole number >= 0, got %q", who, f.Value, s)
				}
				return x, nil
			}
			var err error
			switch f.Value {
			case "name":
				_, err = scalar()
			case "secret":
				k.Secret, err = scalar()
			case "hash":
				k.Hash, err = scalar()
				if err == nil {
					if _, herr := ParseHash(k.Hash); herr != nil {
						err = errf(v, "%s: %v", who, herr)
					}
				}
			case "models":
				switch v.Kind {
				case yaml.ScalarNode:
					k.Models = strings.Fields(v.Value)
				case yaml.SequenceNode:
					for _, m := range v.Content {
						if m.Kind != yaml.ScalarNode || m.Value == "" {
							return nil, errf(m, "%s: models: want model names or patterns", who)
						}
						k.Models = append(k.Models, m.Value)
					}
				default:
					err = errf(v, "%s: models: want a list of patterns", who)
				}
			case "rpm":
				k.RPM, err = integer()
			case "tpm":
				k.TPM, err = integer()
			case "concurrency":
				k.Concurrency, err = integer()
			case "budget":
				if k.Budget, err = scalar(); err == nil {
					if _, berr := ParseBudget(k.Budget); berr != nil {
						err = errf(v, "%s: budget: %v", who, berr)
					}
				}
			case "expires":
				if k.Expires, err = scalar(); err == nil {
					if _, eerr := ParseExpires(k.Expires); eerr != nil {
						err = errf(v, "%s: %v", who, eerr)
					}
				}
			default:
				err = errf(f, "%s: unknown field %q", who, f.Value)
			}
			if err != nil {
				return nil, err
			}
		}
		if err := k.Check(); err != nil {
			return nil, errf(n, "%s: %v", path, err)
		}
		if line, dup := seen[k.Name]; dup {
			return nil, errf(n, "%s: key %s defined twice (first on line %d)", path, k.Name, line)
		}
		seen[k.Name] = n.Line
		out = append(out, k)
	}
	return out, nil
}
