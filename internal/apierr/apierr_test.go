package apierr

import "testing"

func TestBodies(t *testing.T) {
	for _, tc := range []struct{ name, got, want string }{
		{"openai, code and param null", string(OpenAI("invalid_request_error", "", "", "bad <input>")),
			`{"error":{"message":"bad \u003cinput\u003e","type":"invalid_request_error","param":null,"code":null}}`},
		{"openai, code and param set", string(OpenAI("invalid_request_error", "model_not_found", "model", "no \"x\"")),
			`{"error":{"message":"no \"x\"","type":"invalid_request_error","param":"model","code":"model_not_found"}}`},
		{"anthropic", string(Anthropic("not_found_error", "no model")),
			`{"type":"error","error":{"type":"not_found_error","message":"no model"}}`},
	} {
		if tc.got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, tc.got, tc.want)
		}
	}
}
