// Package sse reads and writes server-sent events and applies the
// gateway's response transforms (SPEC §6) to OpenAI-style chat and
// completion responses: the special_prefix, thinking-format normalisation,
// and usage and finish-reason capture for the audit log; and it rebuilds
// the response object a stream amounts to, which the audit log stores
// (Aggregate).
//
// It is pure: it works on io.Reader and byte slices and knows nothing of
// HTTP handlers or Caddy. A streaming proxy uses it like this:
//
//	r := sse.NewReader(upstream.Body)
//	t := sse.NewChunkTransformer(opts)
//	for {
//		ev, err := r.Next()
//		// on io.EOF: write t.Flush() and sse.DoneEvent if [DONE] never came;
//		// on another error: write sse.ErrorChunk(msg) and stop.
//		switch {
//		case ev.Comment: // forward or drop
//		case sse.IsPing(ev.Name, ev.Data): buf = sse.AppendComment(buf, []byte("keepalive"))
//		case sse.IsDone(ev.Data): // write t.Flush() if non-nil, then sse.DoneEvent
//		default:
//			if out, ok := t.Transform(ev.Data); ok {
//				buf = sse.AppendEvent(buf, nil, out)
//			}
//		}
//		if r.Buffered() == 0 { /* write buf and flush */ }
//	}
//
// The hot path forwards the upstream bytes untouched: a chunk is parsed
// only when a transform may apply to it, and then only the edited fields
// are rewritten; every other field keeps its bytes and its position.
// Nothing in the package allocates per event in the common case.
package sse
