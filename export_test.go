package llmgateway

import (
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/llmgw/caddy-llm-gateway/keys"
)

// UseKeyClock creates the process-wide counters of gateway keys with now as their clock, for
// tests that move time instead of waiting for rate-limit windows. Handlers provisioned while the
// test holds them use them; release drops the test's reference. It fails when counters exist
// already (a handler with keys is running).
func UseKeyClock(now func() time.Time) (release func(), err error) {
	_, loaded, err := keyCountersPool.LoadOrNew(keyCountersID, func() (caddy.Destructor, error) {
		return &keyCounters{store: keys.NewMemory(), now: now}, nil
	})
	if err != nil {
		return nil, err
	}
	if loaded {
		_, _ = keyCountersPool.Delete(keyCountersID)
		return nil, fmt.Errorf("gateway key counters exist already")
	}
	return func() { _, _ = keyCountersPool.Delete(keyCountersID) }, nil
}
