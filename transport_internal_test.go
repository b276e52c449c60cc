package llmgateway

import (
	"encoding/json"
	"testing"
)

// TestTransportConfig checks the defaults a client's transport config gets: the gateway's read
// buffer for an http transport that sets none, TLS for an https base_url, and nothing the
// operator set overridden.
func TestTransportConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		raw   string
		https bool
		want  string
	}{
		{"none", ``, false, `{"protocol":"http","read_buffer_size":2048}`},
		{"none, https", ``, true, `{"protocol":"http","read_buffer_size":2048,"tls":{}}`},
		{"http block", `{"protocol":"http","versions":["h2c"]}`, false, `{"protocol":"http","read_buffer_size":2048,"versions":["h2c"]}`},
		{"read buffer set", `{"protocol":"http","read_buffer_size":65536}`, false, `{"protocol":"http","read_buffer_size":65536}`},
		{"write buffer set", `{"protocol":"http","write_buffer_size":512}`, false, `{"protocol":"http","read_buffer_size":2048,"write_buffer_size":512}`},
		{"tls kept", `{"protocol":"http","tls":{"insecure_skip_verify":true}}`, true, `{"protocol":"http","read_buffer_size":2048,"tls":{"insecure_skip_verify":true}}`},
		{"all set", `{"protocol":"http","read_buffer_size":1024,"tls":{}}`, true, `{"protocol":"http","read_buffer_size":1024,"tls":{}}`},
		{"other protocol", `{"protocol":"fastcgi","root":"/srv"}`, false, `{"protocol":"fastcgi","root":"/srv"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := transportConfig(json.RawMessage(tc.raw), tc.https)
			if err != nil {
				t.Fatal(err)
			}
			// Compare as values: key order is not part of the contract.
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("%s: %v", got, err)
			}
			if err := json.Unmarshal([]byte(tc.want), &w); err != nil {
				t.Fatal(err)
			}
			gj, _ := json.Marshal(g)
			wj, _ := json.Marshal(w)
			if string(gj) != string(wj) {
				t.Errorf("transportConfig(%s, https=%v) = %s, want %s", tc.raw, tc.https, got, tc.want)
			}
		})
	}
	if _, err := transportConfig(json.RawMessage(`{"protocol":`), false); err == nil {
		t.Error("a malformed transport config was accepted")
	}
}
