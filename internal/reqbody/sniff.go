package reqbody

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	json "github.com/goccy/go-json"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"

	"github.com/llmgw/caddy-llm-gateway/router"
)

// Errors of Sniff and MultipartModel. The handler answers all of them with 400.
var (
	// ErrNotJSON reports a body that is not one valid JSON object.
	ErrNotJSON = errors.New("request body is not a JSON object")
	// ErrNoModel reports a request without a model.
	ErrNoModel = errors.New("request has no model")
	// ErrModelNotString reports a model that is present but not a JSON string (null included).
	ErrModelNotString = errors.New("request model is not a string")
	// ErrDuplicateModel reports a model given more than once with different values. Decoders disagree
	// on which one counts (the first, the last, or the one whose key case matches), so the gateway
	// could route and audit one model while the upstream runs another.
	ErrDuplicateModel = errors.New("request gives more than one model")
)

// keyRunes is how many Unicode characters of a prompt form a routing key (SPEC §4).
const keyRunes = 64

// Info is what the gateway needs to know about a JSON request body.
type Info struct {
	// Model is the value of the top-level "model" string.
	Model string
	// ModelPresent reports whether the body has a "model" member at all, so that a caller can tell a
	// body that is not a model call (no model) from a malformed one.
	ModelPresent bool
	// Stream reports "stream": true.
	Stream bool
	// IncludeUsage reports "stream_options": {"include_usage": true}.
	IncludeUsage bool
	// Keys are the deterministic-affinity routing keys; filled only when asked for.
	Keys []Key
}

// Key is one prompt-affinity routing key (SPEC §4 "deterministic"): the router's own type, so
// the keys go to router.Order as they are.
type Key = router.Key

// head is what every request needs. Stream is an interface so that a non-boolean "stream" is not a
// type error; a bool in an interface costs no allocation. StreamOptions is left raw because it is
// optional and its shape is the client's business.
type head struct {
	Model         modelMember     `json:"model"`
	Stream        any             `json:"stream"`
	StreamOptions json.RawMessage `json:"stream_options"`
}

// headKeys adds what the routing keys are computed from; messages stay raw and are walked with
// internal/jsonspan, which decodes only the user messages' text.
type headKeys struct {
	head
	Messages json.RawMessage `json:"messages"`
	Prompt   json.RawMessage `json:"prompt"`
}

// modelMember collects the top-level "model" members of a body. goccy, like encoding/json, calls
// UnmarshalJSON once for every member whose key matches "model" without regard to case, so
// duplicates (and case variants such as "Model", which some upstream decoders fold into "model")
// are seen without another pass over the body.
type modelMember struct {
	raw      []byte // the first value
	conflict bool   // a later value differs from the first
}

// UnmarshalJSON implements json.Unmarshaler.
func (m *modelMember) UnmarshalJSON(b []byte) error {
	if m.raw == nil {
		// goccy hands an Unmarshaler of a type of ours a fresh copy of exactly the value's bytes
		// (as it may keep them), so keeping b costs no second copy. TestSniffOwnsStrings checks it.
		m.raw = b
		return nil
	}
	if !m.conflict && !sameValue(m.raw, b) {
		m.conflict = true
	}
	return nil
}

// sameValue reports whether the JSON values a and b are the same: equal bytes, or strings that are
// equal once unescaped.
func sameValue(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if a[0] != '"' || b[0] != '"' {
		return false
	}
	sa, errA := jsonspan.Unquote(a)
	sb, errB := jsonspan.Unquote(b)
	return errA == nil && errB == nil && sa == sb
}

// Sniff decodes from a JSON request body only the members the gateway routes on: model, stream,
// stream_options.include_usage and, when wantKeys is set, the routing keys of the messages (chat) or
// the prompt (completions). Other members are validated but not decoded.
//
// It fails with ErrNotJSON (wrapped with the reason) for anything but one JSON object, ErrNoModel
// when there is no "model" member, ErrModelNotString when "model" is not a string and
// ErrDuplicateModel when the object has several "model" members (keys compared without regard to
// case) with different values. With ErrNoModel, ErrModelNotString and ErrDuplicateModel the rest of
// the Info is still filled in. The strings of Info do not refer to body, which the caller may reuse.
func Sniff(body []byte, wantKeys bool) (Info, error) {
	if i := jsonspan.SkipSpace(body, 0); i >= len(body) || body[i] != '{' {
		return Info{}, ErrNotJSON
	}
	var (
		h    *head
		info Info
	)
	if wantKeys {
		var hk headKeys
		if err := json.UnmarshalOf(body, &hk); err != nil {
			return Info{}, fmt.Errorf("%w: %v", ErrNotJSON, err)
		}
		h = &hk.head
		// Both are valid JSON: goccy validated the whole body.
		if len(hk.Messages) > 0 {
			info.Keys = chatKeys(hk.Messages)
		} else if len(hk.Prompt) > 0 {
			info.Keys = promptKeys(hk.Prompt)
		}
	} else {
		h = new(head)
		if err := json.UnmarshalOf(body, h); err != nil {
			return Info{}, fmt.Errorf("%w: %v", ErrNotJSON, err)
		}
	}
	info.Stream, _ = h.Stream.(bool)
	info.IncludeUsage = includeUsage(h.StreamOptions)

	raw := h.Model.raw
	if raw == nil {
		return info, ErrNoModel
	}
	info.ModelPresent = true
	if h.Model.conflict {
		return info, ErrDuplicateModel
	}
	if raw[0] != '"' {
		return info, ErrModelNotString
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		// raw is private: the decoder copied it for modelMember.UnmarshalJSON, nothing writes it
		// again, and the string may share it.
		info.Model = unsafe.String(unsafe.SliceData(raw[1:]), len(raw)-2)
	} else {
		m, err := jsonspan.Unquote(raw)
		if err != nil {
			return Info{}, fmt.Errorf("%w: model: %v", ErrNotJSON, err)
		}
		info.Model = m
	}
	return info, nil
}

// includeUsage reports whether raw, the value of stream_options, is an object whose include_usage is true.
func includeUsage(raw json.RawMessage) bool {
	if len(raw) == 0 || raw[0] != '{' {
		return false
	}
	var opts struct {
		IncludeUsage any `json:"include_usage"`
	}
	if err := json.UnmarshalOf(raw, &opts); err != nil {
		return false
	}
	v, _ := opts.IncludeUsage.(bool)
	return v
}

// chatKeys returns one key per user message with non-empty text. Like the origin, which computed its
// keys on trimmed messages, surrounding white space is not part of the text; text parts are trimmed
// one by one and joined without a separator.
func chatKeys(messages []byte) []Key {
	var keys []Key
	// goccy has validated the body: the walk cannot fail.
	elems, _ := jsonspan.NewObjectElems(messages, 0)
	for elems.Next() {
		var role, content jsonspan.Span
		for obj := &elems.Obj; obj.Next(); {
			switch {
			case obj.KeyIs("role"):
				role = obj.Val
			case obj.KeyIs("content"):
				content = obj.Val
			}
		}
		if role.End == 0 || content.End == 0 || !rawStringIs(role.In(messages), "user") {
			continue
		}
		if text := contentText(content.In(messages)); text != "" {
			keys = append(keys, newKey(text))
		}
	}
	return keys
}

// contentText returns the text of a message content: the trimmed string, or the trimmed text parts of
// an array joined together.
func contentText(raw []byte) string {
	switch raw[0] {
	case '"':
		s, _ := jsonspan.Unquote(raw)
		return strings.TrimSpace(s)
	case '[':
		var sb strings.Builder
		parts, _ := jsonspan.NewObjectElems(raw, 0)
		for parts.Next() {
			var typ, text jsonspan.Span
			for obj := &parts.Obj; obj.Next(); {
				switch {
				case obj.KeyIs("type"):
					typ = obj.Val
				case obj.KeyIs("text"):
					text = obj.Val
				}
			}
			if typ.End > 0 && text.End > 0 && rawStringIs(typ.In(raw), "text") && raw[text.Start] == '"' {
				s, _ := jsonspan.Unquote(text.In(raw))
				sb.WriteString(strings.TrimSpace(s))
			}
		}
		return sb.String()
	}
	return ""
}

// promptKeys returns the key of a completions prompt: a string, or the first element of an array of
// strings. A prompt of token ids has no key.
func promptKeys(raw []byte) []Key {
	if raw[0] == '[' {
		arr, _ := jsonspan.NewArray(raw, 0, jsonspan.Strict)
		if !arr.Next() {
			return nil
		}
		raw = arr.Val.In(raw)
	}
	if raw[0] != '"' {
		return nil
	}
	s, _ := jsonspan.Unquote(raw)
	if s = strings.TrimSpace(s); s == "" {
		return nil
	}
	return []Key{newKey(s)}
}

// newKey makes the key of a prompt text: its first keyRunes characters, weighted by its byte length.
func newKey(text string) Key {
	n := 0
	for i := range text {
		if n == keyRunes {
			return Key{Text: text[:i], Weight: len(text)}
		}
		n++
	}
	return Key{Text: text, Weight: len(text)}
}

// rawStringIs reports whether raw is a JSON string whose value is s.
func rawStringIs(raw []byte, s string) bool {
	if len(raw) < 2 || raw[0] != '"' {
		return false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1:len(raw)-1]) == s
	}
	v, err := jsonspan.Unquote(raw)
	return err == nil && v == s
}
