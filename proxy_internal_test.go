package llmgateway

import (
	"net/http"
	"testing"
)

// TestGatewayHeaderKeysCanonical checks the canonical keys setGatewayHeaders sets the headers by.
func TestGatewayHeaderKeysCanonical(t *testing.T) {
	for name, canonical := range map[string]string{headerTried: canonicalTried, headerBackend: canonicalBackend} {
		if got := http.CanonicalHeaderKey(name); got != canonical {
			t.Errorf("CanonicalHeaderKey(%q) = %q, the constant says %q", name, got, canonical)
		}
	}
}
