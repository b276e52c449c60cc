package llmgateway_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// getWithKey sends GET path with the caller credential key as a bearer token.
func (g *gateway) getWithKey(path, key string) (int, http.Header, string) {
	g.t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.URL+path, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	return g.do(req)
}

// TestUpstreamURLKeepsBaseQuery checks that every upstream call is built by one URL builder: a
// base_url with a query (Azure's api-version) reaches the upstream as base path + endpoint path
// with the query intact, for /v1/models as for chat, and a caller's query follows the base's.
func TestUpstreamURLKeepsBaseQuery(t *testing.T) {
	up := fake(t, "azure")
	const query = "api-version=2024-02-01"
	gw := startGateway(t, "", gatewaySite("\t\tmodels_cache_ttl 0",
		clientBlock("azure", up.URL()+"?"+query, "match keyword azure")))

	status, _, body := gw.get("/v1/models")
	if status != http.StatusOK || !strings.Contains(body, `"azure-model"`) {
		t.Errorf("GET /v1/models: %d %s; want the upstream's azure-model listed", status, body)
	}
	if last := up.LastRequest(); last.Path != "/v1/models" || last.RawQuery != query {
		t.Errorf("models call reached the upstream as path %q query %q; want /v1/models with %q", last.Path, last.RawQuery, query)
	}

	for _, tc := range []struct{ path, wantQuery string }{
		{"/v1/chat/completions", query},
		{"/v1/chat/completions?trace=on", query + "&trace=on"},
	} {
		status, _, body := gw.post(tc.path, "application/json", `{"model":"azure-model","messages":[{"role":"user","content":"hi"}]}`)
		if status != http.StatusOK {
			t.Errorf("POST %s: %d %s", tc.path, status, body)
		}
		if last := up.LastRequest(); last.Path != "/v1/chat/completions" || last.RawQuery != tc.wantQuery {
			t.Errorf("POST %s reached the upstream as path %q query %q; want /v1/chat/completions with %q",
				tc.path, last.Path, last.RawQuery, tc.wantQuery)
		}
	}
}

// TestModelsCacheKeyedOnSentCredential checks that /v1/models answers are cached on the
// credential each upstream call sends: callers with distinct (junk) keys share one fetch from a
// client that has its own api_key, while a client that passes the caller's key through is asked
// once per caller, so no caller is ever served a list fetched with another caller's key.
func TestModelsCacheKeyedOnSentCredential(t *testing.T) {
	own, pass := fake(t, "mc-own"), fake(t, "mc-pass")
	gw := startGateway(t, "", gatewaySite("",
		clientBlock("mc-own", own.URL(), "api_key sk-operator-key", "match keyword mc-own"),
		clientBlock("mc-pass", pass.URL(), "match keyword mc-pass")))

	const callers = 20
	for i := range callers {
		key := fmt.Sprintf("junk-key-%d", i)
		status, _, body := gw.getWithKey("/v1/models", key)
		if status != http.StatusOK || !strings.Contains(body, `"mc-own-model"`) || !strings.Contains(body, `"mc-pass-model"`) {
			t.Fatalf("GET /v1/models as %s: %d %s; want both clients' models", key, status, body)
		}
		if got := pass.LastRequest().Header.Get("Authorization"); got != "Bearer "+key {
			t.Errorf("pass-through client got Authorization %q; want the caller's %q", got, "Bearer "+key)
		}
	}
	if n := own.Count("/v1/models"); n != 1 {
		t.Errorf("client with its own key was asked for /models %d times by %d callers; want 1", n, callers)
	}
	if got := own.LastRequest().Header.Get("Authorization"); got != "Bearer sk-operator-key" {
		t.Errorf("own-key client got Authorization %q", got)
	}
	if n := pass.Count("/v1/models"); n != callers {
		t.Errorf("pass-through client was asked for /models %d times by %d callers; want one per caller", n, callers)
	}
}
