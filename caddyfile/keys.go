package caddyfile

import (
	"math"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/llmgw/caddy-llm-gateway/keys"
)

// unmarshalKeys parses a keys block into kc (see UnmarshalGateway). Errors name the key and the
// field.
func unmarshalKeys(d *caddyfile.Dispenser, kc *keys.Config) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	names := make(map[string]bool, len(kc.Keys))
	for _, k := range kc.Keys {
		names[k.Name] = true
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "file":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			kc.File = v
		case "store":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			// A placeholder ({env.REDIS_URL}) is checked once expanded, at provision.
			if !strings.Contains(v, "{") {
				if _, err := keys.ParseRedisURL(v); err != nil {
					return d.Err(err.Error())
				}
			}
			kc.Store = v
		case "store_failure":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			if v != keys.StoreFailureOpen && v != keys.StoreFailureClosed {
				return d.Errf("store_failure: want open or closed, got %q", v)
			}
			kc.StoreFailure = v
		case "key":
			k, err := unmarshalKey(d)
			if err != nil {
				return err
			}
			if names[k.Name] {
				return d.Errf("key %s: defined twice", k.Name)
			}
			names[k.Name] = true
			kc.Keys = append(kc.Keys, k)
		default:
			return d.Errf("unrecognized keys option %q", opt)
		}
	}
	return nil
}

func unmarshalKey(d *caddyfile.Dispenser) (*keys.Key, error) {
	if !d.NextArg() {
		return nil, d.Err("key needs a name")
	}
	k := &keys.Key{Name: d.Val()}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	count := func(field string) (int64, error) {
		v, err := oneArg(d)
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, d.Errf("key %s: %s: want a whole number >= 0, got %q", k.Name, field, v)
		}
		return n, nil
	}
	var err error
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "secret":
			k.Secret, err = oneArg(d)
		case "hash":
			if k.Hash, err = oneArg(d); err == nil {
				if _, herr := keys.ParseHash(k.Hash); herr != nil {
					err = d.Errf("key %s: %v", k.Name, herr)
				}
			}
		case "models":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.Errf("key %s: models: want at least one model name or pattern", k.Name)
			}
			k.Models = append(k.Models, args...)
		case "rpm":
			k.RPM, err = count(opt)
		case "tpm":
			k.TPM, err = count(opt)
		case "concurrency":
			k.Concurrency, err = count(opt)
		case "budget":
			args := d.RemainingArgs()
			k.Budget = strings.Join(args, " ")
			if _, berr := keys.ParseBudget(k.Budget); berr != nil {
				err = d.Errf("key %s: budget: %v", k.Name, berr)
			}
		case "expires":
			if k.Expires, err = oneArg(d); err == nil {
				if _, eerr := keys.ParseExpires(k.Expires); eerr != nil {
					err = d.Errf("key %s: %v", k.Name, eerr)
				}
			}
		default:
			err = d.Errf("key %s: unrecognized key option %q", k.Name, opt)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := k.Check(); err != nil {
		return nil, d.Err(err.Error())
	}
	return k, nil
}

// unmarshalPrices parses a prices block: one `<model> input <usd> output <usd>` line per model.
func unmarshalPrices(d *caddyfile.Dispenser, prices *[]keys.Price) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		p := keys.Price{Model: d.Val()}
		args := d.RemainingArgs()
		if len(args) != 4 || args[0] != "input" || args[2] != "output" {
			return d.Errf("price %s: want `<model> input <usd> output <usd>`", p.Model)
		}
		for i, dst := range []*float64{&p.Input, &p.Output} {
			v := args[1+2*i]
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
				return d.Errf("price %s: %s: want a number >= 0 (USD per 1M tokens), got %q", p.Model, args[2*i], v)
			}
			*dst = f
		}
		for _, q := range *prices {
			if q.Model == p.Model {
				return d.Errf("price %s: given twice", p.Model)
			}
		}
		*prices = append(*prices, p)
	}
	return nil
}
