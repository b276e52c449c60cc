// Package apierr encodes the error bodies the gateway's handlers answer themselves, in the
// shapes the SDKs parse into their typed errors: OpenAI's everywhere, Anthropic's on the
// Messages API.
package apierr

import "github.com/goccy/go-json"

// Body is OpenAI's error shape: {"error":{"message":…,"type":…,"param":…,"code":…}}.
type Body struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// OpenAI encodes an OpenAI-shaped error body; an empty code or param is null.
func OpenAI(typ, code, param, message string) []byte {
	var b Body
	b.Error.Message, b.Error.Type = message, typ
	if param != "" {
		b.Error.Param = &param
	}
	if code != "" {
		b.Error.Code = &code
	}
	out, _ := json.Marshal(&b) // cannot fail: only strings
	return out
}

// anthropicBody is Anthropic's error shape: {"type":"error","error":{"type":…,"message":…}}.
type anthropicBody struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// Anthropic encodes an Anthropic-shaped error body.
func Anthropic(typ, message string) []byte {
	b := anthropicBody{Type: "error"}
	b.Error.Type, b.Error.Message = typ, message
	out, _ := json.Marshal(&b) // cannot fail: only strings
	return out
}
