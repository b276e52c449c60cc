package llmgateway_test

import (
	"os"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// runAsCaddyEnv makes the test binary run as the caddy command instead of running tests. The
// binary has every module cmd/caddy has (the standard ones, the gateway, fake_openai), so a
// test that needs Caddy as a process of its own (a signal, a process exit) runs this binary
// rather than building ./cmd/caddy, which costs minutes on a cold build cache.
const runAsCaddyEnv = "LLMGW_TEST_RUN_AS_CADDY"

func TestMain(m *testing.M) {
	if os.Getenv(runAsCaddyEnv) == "1" {
		caddycmd.Main() // exits the process
		return
	}
	os.Exit(m.Run())
}

// caddyBinary returns a binary that runs as the caddy command when started with
// runAsCaddyEnv=1 in its environment (as startCaddyProcess does): this test binary.
func caddyBinary(t *testing.T) string {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatalf("locating the test binary: %v", err)
	}
	return bin
}
