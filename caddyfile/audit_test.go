package caddyfile_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/llmgw/caddy-llm-gateway/audit"
	gwcaddyfile "github.com/llmgw/caddy-llm-gateway/caddyfile"
)

func TestUnmarshalAudit(t *testing.T) {
	const input = `llm_audit {
		path           logs/record.db
		rotate         off
		check_interval 30s
		bodies         truncate 4KiB
		max_body_size  2MiB
		redact_headers Authorization X-Api-Key
		redact_headers Cookie
		queue_size     100
		batch_size     10
		flush_interval -1s
	}`
	var app audit.App
	if err := gwcaddyfile.UnmarshalAudit(caddyfile.NewTestDispenser(input), &app); err != nil {
		t.Fatal(err)
	}
	if err := app.Validate(); err != nil {
		t.Fatalf("parsed app does not validate: %v", err)
	}
	if app.Path != "logs/record.db" || app.Rotate != audit.RotateOff || app.Bodies != audit.BodiesTruncate || app.TruncateBytes != 4096 {
		t.Errorf("path/rotate/bodies/truncate = %q/%q/%q/%d", app.Path, app.Rotate, app.Bodies, app.TruncateBytes)
	}
	if app.MaxBodySize != 2<<20 {
		t.Errorf("max_body_size = %d", app.MaxBodySize)
	}
	if app.CheckInterval == nil || time.Duration(*app.CheckInterval) != 30*time.Second {
		t.Errorf("check_interval = %v", app.CheckInterval)
	}
	if !slices.Equal(app.RedactHeaders, []string{"Authorization", "X-Api-Key", "Cookie"}) {
		t.Errorf("redact_headers = %q", app.RedactHeaders)
	}
	if app.QueueSize != 100 || app.BatchSize != 10 || time.Duration(app.FlushInterval) != -time.Second {
		t.Errorf("queue_size/batch_size/flush_interval = %d/%d/%v", app.QueueSize, app.BatchSize, app.FlushInterval)
	}
}

func TestUnmarshalAuditBare(t *testing.T) {
	var app audit.App
	if err := gwcaddyfile.UnmarshalAudit(caddyfile.NewTestDispenser("llm_audit"), &app); err != nil {
		t.Fatal(err)
	}
	if app.Path != "" || app.Rotate != "" || app.CheckInterval != nil || app.Bodies != "" {
		t.Errorf("bare llm_audit set fields: %+v", &app)
	}
}

// TestUnmarshalAuditBodiesResets checks that a later bodies line replaces an earlier truncate,
// so the result still validates.
func TestUnmarshalAuditBodiesResets(t *testing.T) {
	var app audit.App
	d := caddyfile.NewTestDispenser("llm_audit {\nbodies truncate 10\nbodies none\n}")
	if err := gwcaddyfile.UnmarshalAudit(d, &app); err != nil {
		t.Fatal(err)
	}
	if app.Bodies != audit.BodiesNone || app.TruncateBytes != 0 {
		t.Errorf("bodies/truncate = %q/%d", app.Bodies, app.TruncateBytes)
	}
	if err := app.Validate(); err != nil {
		t.Error(err)
	}
}

func TestUnmarshalAuditErrors(t *testing.T) {
	block := func(body string) string { return "llm_audit {\n" + body + "\n}" }
	for _, tc := range []struct {
		name, input, want string
	}{
		{"option argument", "llm_audit on", "wrong argument count"},
		{"unknown option", block("retention 30d"), `unrecognized llm_audit option "retention"`},
		{"path missing", block("path"), "wrong argument count"},
		{"path two", block("path a b"), "wrong argument count"},
		{"bad rotate", block("rotate weekly"), `invalid rotate "weekly": want monthly or off`},
		{"zero check_interval", block("check_interval 0"), "must be positive"},
		{"bad check_interval", block("check_interval 60"), `invalid check_interval "60"`},
		{"bodies missing", block("bodies"), "wrong argument count"},
		{"bad bodies", block("bodies some"), `invalid bodies "some"`},
		{"bodies full with size", block("bodies full 10"), "wrong argument count"},
		{"truncate without size", block("bodies truncate"), "bodies truncate needs a size"},
		{"truncate bad size", block("bodies truncate lots"), `invalid bodies truncate size "lots"`},
		{"truncate zero", block("bodies truncate 0"), "out of range"},
		{"truncate huge", block("bodies truncate 3GiB"), "out of range"},
		{"truncate extra", block("bodies truncate 10 20"), "wrong argument count"},
		{"max_body_size missing", block("max_body_size"), "wrong argument count"},
		{"max_body_size bad", block("max_body_size big"), `invalid max_body_size "big"`},
		{"max_body_size zero", block("max_body_size 0"), "out of range"},
		{"max_body_size huge", block("max_body_size 17MiB"), "out of range"},
		{"max_body_size extra", block("max_body_size 1MiB 2MiB"), "wrong argument count"},
		{"redact_headers empty", block("redact_headers"), "wrong argument count"},
		{"queue_size zero", block("queue_size 0"), "invalid queue_size 0: must be >= 1"},
		{"batch_size word", block("batch_size big"), `invalid batch_size "big"`},
		{"flush_interval bad", block("flush_interval soon"), `invalid flush_interval "soon"`},
		{"flush_interval missing", block("flush_interval"), "wrong argument count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var app audit.App
			err := gwcaddyfile.UnmarshalAudit(caddyfile.NewTestDispenser(tc.input), &app)
			if err == nil {
				t.Fatalf("no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}
