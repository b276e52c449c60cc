package caddyfile

import (
	"math"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/dustin/go-humanize"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

// UnmarshalAudit parses the llm_audit global option into app. d must be positioned on (or just
// before) the option name. Options left out keep their zero value, so the app's defaults apply.
// Syntax:
//
//	llm_audit {
//		path           <file>                  # default: $RECD_PATH without "sqlite:", else ./logs/record.db
//		rotate         monthly|off
//		check_interval <duration>              # > 0
//		bodies         full|none|truncate <size>
//		max_body_size  <size>                  # per stored body, default 1MiB, at most 16MiB
//		redact_headers <names...>              # repeatable, appends; replaces the default list
//		queue_size     <n>
//		batch_size     <n>
//		flush_interval <duration>              # negative commits every row at once
//	}
//
// A bare "llm_audit" turns auditing on with every default.
func UnmarshalAudit(d *caddyfile.Dispenser, app *audit.App) error {
	if d.Val() == "" {
		d.Next() // a fresh dispenser starts before the option name
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "path":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			app.Path = v

		case "rotate":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			if v != audit.RotateMonthly && v != audit.RotateOff {
				return d.Errf("invalid rotate %q: want %s or %s", v, audit.RotateMonthly, audit.RotateOff)
			}
			app.Rotate = v

		case "check_interval":
			dur, err := durationArg(d, false)
			if err != nil {
				return err
			}
			app.CheckInterval = &dur

		case "bodies":
			if !d.NextArg() {
				return d.ArgErr()
			}
			mode := d.Val()
			app.TruncateBytes = 0
			switch mode {
			case audit.BodiesFull, audit.BodiesNone:
			case audit.BodiesTruncate:
				if !d.NextArg() {
					return d.Errf("bodies truncate needs a size, such as 4KiB")
				}
				size, err := humanize.ParseBytes(d.Val())
				if err != nil {
					return d.Errf("invalid bodies truncate size %q: %v", d.Val(), err)
				}
				if size == 0 || size > math.MaxInt32 {
					return d.Errf("bodies truncate size %q out of range (want 1 byte to 2GiB)", d.Val())
				}
				app.TruncateBytes = int(size)
			default:
				return d.Errf("invalid bodies %q: want %s, %s or %s <size>", mode, audit.BodiesFull, audit.BodiesNone, audit.BodiesTruncate)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			app.Bodies = mode

		case "max_body_size":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			size, err := humanize.ParseBytes(v)
			if err != nil {
				return d.Errf("invalid max_body_size %q: %v", v, err)
			}
			if size == 0 || size > audit.MaxBodySizeLimit {
				return d.Errf("max_body_size %q out of range (want 1 byte to 16MiB)", v)
			}
			app.MaxBodySize = int(size)

		case "redact_headers":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.ArgErr()
			}
			app.RedactHeaders = append(app.RedactHeaders, names...)

		case "queue_size":
			n, err := intArg(d, 1)
			if err != nil {
				return err
			}
			app.QueueSize = n

		case "batch_size":
			n, err := intArg(d, 1)
			if err != nil {
				return err
			}
			app.BatchSize = n

		case "flush_interval":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return d.Errf("invalid flush_interval %q: %v", v, err)
			}
			app.FlushInterval = caddy.Duration(dur)

		default:
			return d.Errf("unrecognized llm_audit option %q", opt)
		}
	}
	return nil
}

// ParseAuditOption is the llm_audit global option for httpcaddyfile.RegisterGlobalOption: it
// parses the option with UnmarshalAudit and returns the llm_audit app's JSON.
func ParseAuditOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("llm_audit is specified more than once")
	}
	app := new(audit.App)
	if err := UnmarshalAudit(d, app); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "llm_audit", Value: caddyconfig.JSON(app, nil)}, nil
}
