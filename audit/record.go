package audit

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/llmgw/caddy-llm-gateway/internal/jsonspan"
)

// TimeLayout is how Record.Time is stored: local time with microseconds, the
// format the origin system wrote (`2026-07-23 11:29:25.123456`). Being
// fixed-width and big-endian, it sorts and compares correctly as text.
const TimeLayout = "2006-01-02 15:04:05.000000"

// Record is one row of the `records` table: one API call. The first thirteen
// fields are the origin's columns, in its order, so its queries keep working;
// the rest are this gateway's additions.
//
// Once a Record is passed to [Writer.Enqueue] it belongs to the writer: the
// caller must not modify it, its Headers or its body slices afterwards.
type Record struct {
	// ID is the `id` column (INTEGER PRIMARY KEY AUTOINCREMENT). SQLite
	// assigns it; the writer ignores any value set here.
	ID int64

	// Time is when the call happened. It is stored in local time using
	// TimeLayout and decides which month's file the row lands in. The zero
	// value means "now", as seen by the writer at Enqueue.
	Time time.Time
	// IP is the client IP as Caddy determined it (honouring trusted_proxies).
	IP string
	// Model is the model name of the payload (the fallback model if one was used).
	Model string
	// Type is the fixed per-endpoint object type, e.g. "chat.completions",
	// "text_completion", "embeddings", "responses", "anthropic.messages".
	Type string
	// CompletionTokens is usage.completion_tokens (or output_tokens), else 0.
	CompletionTokens int64
	// PromptTokens is usage.prompt_tokens (or input_tokens), else 0.
	PromptTokens int64
	// TotalTokens is usage.total_tokens, else 0.
	TotalTokens int64
	// Tool reports whether the upstream request body had a `tools` key.
	Tool bool
	// Multimodal reports whether a chat message had an image_url part.
	Multimodal bool
	// Headers are the caller's request headers. They are encoded to a JSON
	// object of lower-case names at write time, with the configured
	// redact_headers masked and multiple values joined by ", ".
	Headers http.Header
	// Request is the upstream request body as sent. The bodies setting
	// decides whether it is stored whole, truncated or not at all; beyond
	// max_body_size it is cut at Enqueue and ends with the truncation
	// marker (see AppendTruncated).
	Request []byte
	// Response is the body the client received; for a stream of chat,
	// completions, responses or messages, the one response object it
	// amounts to (SPEC §8; see sse.Aggregate and Capped), for other streams
	// the transcript (collected with a BodyBuffer). The bodies setting and
	// max_body_size apply as for Request.
	Response []byte

	// Backend is the name of the client that produced the answer (the last
	// one tried when all failed); empty if none was tried.
	Backend string
	// Status is the HTTP status sent to the caller (0 if none was sent).
	Status int
	// LatencyMs is the time from request start to the end of the response.
	LatencyMs int64
	// TTFTMs is the time to the first byte of a streamed response. It is
	// stored as NULL for non-streamed calls and when negative (no byte sent).
	TTFTMs int64
	// Stream reports whether the caller asked for a streamed response.
	Stream bool
	// Endpoint is the request path served, e.g. "/v1/chat/completions".
	Endpoint string
	// RequestID correlates the row with access logs.
	RequestID string
	// Tried lists the clients tried, in order, comma-separated (the
	// X-LLM-Gateway-Tried response header).
	Tried string
	// Error is a short description of the failure, empty on success.
	Error string
	// Key is the name of the gateway key the call was made with (never the
	// secret); empty, stored as NULL, when the gateway has no keys.
	Key string
	// CostUSD is the call's price in US dollars from the gateway's prices;
	// nil, stored as NULL, when no price names the model.
	CostUSD *float64

	// Release, if not nil, is called once the writer is done with the
	// record: after the transaction its row went into ended (committed or
	// not), or at once when Enqueue refuses it. The producer may then reuse
	// the record and the memory its fields refer to, such as a pooled buffer
	// holding Response: SQLite stores copies of the values. Headers is the
	// exception: the writer may compare later rows' headers with them, so
	// they must not change after Enqueue at all. It is not called
	// for a record lost to a panic in the writer; the garbage collector frees
	// that one.
	Release func()
}

// Body storage policies, the values of App.Bodies.
const (
	BodiesFull     = "full"
	BodiesNone     = "none"
	BodiesTruncate = "truncate"
)

// bodyPolicy decides what is stored of Request and Response.
type bodyPolicy struct {
	mode  string // one of the Bodies* constants
	limit int    // bytes kept for BodiesTruncate
	max   int    // MaxBodySize: bytes kept of any body before the truncation marker; 0: no cap
}

// apply returns the part of b to store; nil means NULL. Bodies reach it
// already capped (see capBody).
func (p bodyPolicy) apply(b []byte) []byte {
	switch p.mode {
	case BodiesNone:
		return nil
	case BodiesTruncate:
		if len(b) <= p.limit {
			return b
		}
		return cutUTF8(b, p.limit)
	default:
		return b
	}
}

// capBody returns b, or when it is longer than limit (and limit > 0) a copy
// of its first limit bytes followed by the truncation marker. It runs as a row is
// queued, so the queue never holds a large body: one oversized row could not
// be inserted at all within the memory SQLite has (wasm), and a full queue of
// them would hold gigabytes. A body within maxMarkerLen of the cap is left
// alone: that is what a body already capped where it was collected (a
// BodyBuffer) looks like.
func capBody(b []byte, limit int) []byte {
	if limit <= 0 || len(b) <= limit+maxMarkerLen {
		return b
	}
	head := cutUTF8(b, limit)
	out := make([]byte, len(head), len(head)+maxMarkerLen)
	copy(out, head)
	return AppendTruncated(out, int64(len(b)))
}

// cutUTF8 returns the first n bytes of b, fewer if that would split a rune,
// so the stored TEXT stays valid UTF-8.
func cutUTF8(b []byte, n int) []byte {
	if n >= len(b) {
		return b
	}
	limit := n
	for n > 0 && n > limit-utf8.UTFMax && !utf8.RuneStart(b[n]) {
		n--
	}
	return b[:n]
}

// The marker that ends a body cut to MaxBodySize, with the body's full size:
// "…[truncated: 134217728 bytes total]". It is plain text after the kept
// bytes, so the row shows at once that the body is incomplete and how large
// it was; a reader can find it as the suffix matching truncatedMarkerPrefix.
const (
	truncatedMarkerPrefix = "…[truncated: "
	truncatedMarkerSuffix = " bytes total]"
	// maxMarkerLen is the longest marker: an int64 has at most 19 digits.
	maxMarkerLen = len(truncatedMarkerPrefix) + 19 + len(truncatedMarkerSuffix)
)

// AppendTruncated appends the truncation marker for a body of total bytes.
func AppendTruncated(dst []byte, total int64) []byte {
	dst = append(dst, truncatedMarkerPrefix...)
	dst = strconv.AppendInt(dst, total, 10)
	return append(dst, truncatedMarkerSuffix...)
}

// Capped returns a body as it is stored when b holds its first bytes and the whole of it is
// total bytes long: b itself when that is all of it and within limit (or limit <= 0), else b
// cut to limit on a UTF-8 boundary and followed by the truncation marker with total. A stream's
// audit object (sse.Aggregate) is built within the limit and stored through it. It may append
// to b in place.
func Capped(b []byte, total int64, limit int) []byte {
	if total <= int64(len(b)) && (limit <= 0 || len(b) <= limit) {
		return b
	}
	total = max(total, int64(len(b)))
	if limit > 0 && len(b) > limit {
		b = cutUTF8(b, limit)
	}
	return AppendTruncated(trimPartialRune(b), total)
}

// BodyBuffer collects a body for the audit log as it is produced, keeping
// its first bytes up to a limit and only counting the rest: a stream's
// transcript costs at most the limit however long the stream runs. The zero
// value keeps nothing; use NewBodyBuffer.
type BodyBuffer struct {
	buf   []byte
	limit int
	total int64
}

// NewBodyBuffer returns a BodyBuffer keeping up to limit bytes (the app's
// MaxBodySize).
func NewBodyBuffer(limit int) *BodyBuffer {
	return &BodyBuffer{limit: limit}
}

// Write keeps what fits of p and counts all of it. It never fails.
func (b *BodyBuffer) Write(p []byte) (int, error) {
	b.total += int64(len(p))
	if room := b.limit - len(b.buf); room > 0 {
		keep := p[:min(len(p), room)]
		if need := len(b.buf) + len(keep); need > cap(b.buf) {
			// Grow by doubling, but never past the limit (append's growth would).
			nb := make([]byte, len(b.buf), min(max(need, 2*cap(b.buf), 512), b.limit))
			copy(nb, b.buf)
			b.buf = nb
		}
		b.buf = append(b.buf, keep...)
	}
	return len(p), nil
}

// Len returns the number of bytes written so far, kept or not.
func (b *BodyBuffer) Len() int64 { return b.total }

// Bytes returns the body: whole if it fit, else the kept bytes (cut on a
// UTF-8 boundary) followed by the truncation marker. Call it once, at the end.
func (b *BodyBuffer) Bytes() []byte {
	if b.total <= int64(len(b.buf)) {
		return b.buf
	}
	return AppendTruncated(trimPartialRune(b.buf), b.total)
}

// trimPartialRune drops a rune cut short at the end of b.
func trimPartialRune(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return b
			}
			return b[:i]
		}
	}
	return b
}

// maskKeep* decide how much of a long secret stays readable: enough to tell
// two keys apart in an audit ("sk-ab…yz"), far too little to use one.
const (
	maskKeepHead = 5
	maskKeepTail = 2
	// maskMinLen is the shortest value shown partially; anything shorter is
	// replaced whole, since head and tail would reveal most of it.
	maskMinLen = 16
	maskFull   = "***"
)

// redactor masks the values of a fixed set of header names.
type redactor struct {
	names []string // lower-case
}

func newRedactor(names []string) redactor {
	r := redactor{names: make([]string, 0, len(names))}
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if n != "" && !slices.Contains(r.names, n) {
			r.names = append(r.names, n)
		}
	}
	return r
}

// redacts reports whether the header name (any case) is masked.
func (r redactor) redacts(name string) bool {
	for _, n := range r.names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// appendMasked appends the masked form of v. An auth scheme ("Bearer sk-…")
// is kept readable so operators still see how the caller authenticated.
func appendMasked(dst []byte, v string) []byte {
	if scheme, cred, ok := strings.Cut(v, " "); ok && isToken(scheme) {
		dst = append(dst, scheme...)
		dst = append(dst, ' ')
		v = strings.TrimLeft(cred, " ")
	}
	if len(v) < maskMinLen {
		return append(dst, maskFull...)
	}
	dst = append(dst, v[:maskKeepHead]...)
	dst = append(dst, "…"...)
	return append(dst, v[len(v)-maskKeepTail:]...)
}

// isToken reports whether s looks like an auth scheme name (RFC 9110 token
// letters only), so "Bearer x" keeps "Bearer" but "a=b; c=d" is masked whole.
func isToken(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// appendHeadersJSON appends h as a JSON object with lower-case names in
// sorted order (stable output for diffing and tests); multiple values are
// joined with ", " and redacted names are masked. Invalid UTF-8 becomes
// U+FFFD (jsonspan.AppendString), so the column stays valid JSON for
// SQLite's json_extract.
// keys and scratch are reusable buffers; the grown keys slice is returned.
func appendHeadersJSON(dst []byte, h http.Header, r redactor, keys []string, scratch *[]byte) ([]byte, []string) {
	keys = keys[:0]
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	val := (*scratch)[:0]
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		// Lower-case the name in place, as the origin's (Rust http) names
		// were: escapes in the encoded form use lower case already.
		start := len(dst)
		dst = jsonspan.AppendString(dst, k)
		for i := start; i < len(dst); i++ {
			if 'A' <= dst[i] && dst[i] <= 'Z' {
				dst[i] += 'a' - 'A'
			}
		}
		dst = append(dst, ':')
		redact := r.redacts(k)
		vs := h[k]
		if len(vs) == 1 && !redact {
			dst = jsonspan.AppendString(dst, vs[0])
			continue
		}
		val = val[:0]
		for j, v := range vs {
			if j > 0 {
				val = append(val, ", "...)
			}
			if redact {
				val = appendMasked(val, v)
			} else {
				val = append(val, v...)
			}
		}
		dst = jsonspan.AppendString(dst, val)
	}
	*scratch = val
	return append(dst, '}'), keys
}
