// Package reqbody reads what the gateway needs from a request body and applies the request transforms
// of SPEC §5 without re-encoding the body.
//
// Sniff decodes only the members routing depends on (model, stream, stream_options.include_usage and,
// for the deterministic strategy, the user prompts) with a partial goccy/go-json decode: every other
// member is validated but never materialised, so a 2 KB chat request costs about a microsecond.
//
// Apply edits by splicing bytes. A Strict walk of internal/jsonspan validates the top-level object and
// reports the byte span of each member's key and value; it never builds a value. Each edit that changes
// something records a splice, "replace body[start:end] with these bytes", and the new member values it
// generates are the only JSON ever encoded. The output is then the input copied around the splices, with added
// members written just before the closing brace. Everything else (unknown vendor fields, tools,
// white space, key order, the exact spelling of numbers and escapes) passes through byte for byte, which
// the origin, re-serialising a whitelist of fields, did not do. When no edit changes anything, Apply
// returns its input slice, so the common case forwards the client's bytes untouched.
//
// The same idea carries over to multipart/form-data (audio endpoints): the parts are located by their
// boundary delimiters, and only the bytes of the model field's value are replaced.
package reqbody
