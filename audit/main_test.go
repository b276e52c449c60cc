package audit

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a writer goroutine outlives its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
