package llmgateway

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// TestYAMLApplyLeavesConfigContextAlone applies YAML edits on another goroutine, as the watcher
// does, while the Context the handler was provisioned with is cancelled, as Caddy does when it
// unloads a config: cancelling walks the modules loaded into that Context, so a watcher loading
// transports into it races the unload. Run under -race. It is the deterministic twin of
// TestYAMLWatchRacesReload, which shows the same through real reloads.
func TestYAMLApplyLeavesConfigContextAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	yamlFor := func(i int) []byte {
		// A new client name every time, so every apply loads a transport.
		return fmt.Appendf(nil, "openai_clients:\n  - name: c%d\n    base_url: http://127.0.0.1:1/v1\n    model_match: {type: keyword, value: [gpt]}\n", i)
	}
	if err := os.WriteFile(path, yamlFor(0), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	h := &Handler{}
	h.Config.Config = path
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	h.watcher.close() // this test is the watcher
	h.watcher = nil
	h.logger = zap.NewNop()

	first := make(chan struct{})
	var once sync.Once
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer once.Do(func() { close(first) })
		for i := 1; ; i++ {
			if !h.applyYAML(path, yamlFor(i)) {
				t.Error("apply failed")
				return
			}
			once.Do(func() { close(first) })
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	// Cancel after the first apply, while the next ones run: waiting orders only the first
	// before the cancel, so the later ones race it if they share state with the Context.
	<-first
	cancel()
	close(stop)
	<-done
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
}
