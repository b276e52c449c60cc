package fakeupstream

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-json"
)

// apiRequest holds the request fields the fake looks at; goccy skips the
// rest without materialising it.
type apiRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Input          json.RawMessage   `json:"input"`           // embeddings
	EncodingFormat string            `json:"encoding_format"` // embeddings: float or base64
	Documents      []json.RawMessage `json:"documents"`       // rerank
}

func (x *exchange) route(body []byte) {
	path, ok := strings.CutPrefix(x.r.URL.Path, "/v1/")
	if !ok {
		x.invalid(http.StatusNotFound, "no route for "+x.r.Method+" "+x.r.URL.Path)
		return
	}
	want := http.MethodPost
	id, retrieve := strings.CutPrefix(path, "models/")
	if path == "models" || retrieve {
		want = http.MethodGet
	}
	if x.r.Method != want {
		switch path {
		case "chat/completions", "completions", "embeddings", "audio/transcriptions",
			"audio/translations", "models", "responses", "messages", "rerank":
			x.invalid(http.StatusMethodNotAllowed, "use "+want+" for "+x.r.URL.Path)
		default:
			x.invalid(http.StatusNotFound, "no route for "+x.r.Method+" "+x.r.URL.Path)
		}
		return
	}
	switch {
	case path == "models":
		x.writeJSON(x.p.status, x.p.models)
	case retrieve:
		x.retrieveModel(id)
	case path == "audio/transcriptions" || path == "audio/translations":
		x.audio(body)
	default:
		var req apiRequest
		if err := json.Unmarshal(body, &req); err != nil {
			x.invalid(http.StatusBadRequest, "invalid JSON body: "+err.Error())
			return
		}
		x.api(path, &req)
	}
}

// api answers the JSON endpoints.
func (x *exchange) api(path string, req *apiRequest) {
	if req.Model == "" {
		switch path {
		case "chat/completions", "completions", "embeddings", "responses", "messages", "rerank":
			x.invalid(http.StatusBadRequest, "you must provide a model parameter")
			return
		}
	}
	switch path {
	case "chat/completions":
		if req.Stream {
			x.chatStream(req)
		} else {
			x.chat(req)
		}
	case "completions":
		if req.Stream {
			x.completionsStream(req)
		} else {
			x.completions(req)
		}
	case "responses":
		if req.Stream {
			x.responsesStream(req)
		} else {
			x.writeJSON(x.p.status, x.appendResponse(x.buf[:0], req.Model, true, DefaultCompletionTokens))
		}
	case "messages":
		if req.Stream {
			x.messagesStream(req)
		} else {
			x.message(req)
		}
	case "embeddings":
		x.embeddings(req)
	case "rerank":
		x.rerank(req)
	default:
		x.echo(req)
	}
}

// appendID appends prefix and the answer's id, the same for every chunk.
func (x *exchange) appendID(b []byte, prefix string) []byte {
	if x.id == 0 {
		x.id = x.s.seq.Add(1)
		x.created = time.Now().Unix()
	}
	return strconv.AppendUint(append(b, prefix...), x.id, 10)
}

// appendHead opens an OpenAI object: {"id":…,"object":…,"created":…,"model":…
func (x *exchange) appendHead(b []byte, idPrefix, object, model string) []byte {
	b = x.appendID(append(b, `{"id":"`...), idPrefix)
	b = append(append(append(b, `","object":"`...), object...), `","created":`...)
	b = strconv.AppendInt(b, x.created, 10)
	return appendQuoted(append(b, `,"model":`...), model)
}

func (x *exchange) chat(req *apiRequest) {
	p := x.p
	b := x.appendHead(x.buf[:0], "chatcmpl-", "chat.completion", req.Model)
	b = append(b, `,"system_fingerprint":"fp_fake","choices":[{"index":0,"message":{"role":"assistant","content":`...)
	b = append(b, p.chatContent...)
	if p.reasoning != nil {
		b = append(append(b, `,"reasoning_content":`...), p.reasoning...)
	}
	b = append(b, `},"logprobs":null,"finish_reason":"stop"}],"usage":`...)
	b = p.appendUsage(b, DefaultCompletionTokens)
	x.buf = append(b, '}')
	x.writeJSON(p.status, x.buf)
}

func (x *exchange) chatStream(req *apiRequest) {
	p := x.p
	if !x.beginStream() {
		return
	}
	includeUsage := req.StreamOptions.IncludeUsage
	// Every chunk starts with the same head: build it once and append each
	// chunk's tail to it.
	b := x.appendHead(append(x.buf[:0], "data: "...), "chatcmpl-", "chat.completion.chunk", req.Model)
	b = append(b, `,"system_fingerprint":"fp_fake","choices":[`...)
	head := len(b)
	defer func() { x.buf = b }()
	last := len(p.chatPieces) - 1
	for i, pc := range p.chatPieces {
		b = append(b[:head], `{"index":0,"delta":{`...)
		if i == 0 {
			b = append(b, `"role":"assistant",`...)
		}
		if pc.reasoning {
			b = append(b, `"content":null,"reasoning_content":`...)
		} else {
			b = append(b, `"content":`...)
		}
		b = append(b, pc.text...)
		if i == last && len(p.toolDeltas) == 0 {
			b = append(b, `},"logprobs":null,"finish_reason":"stop"}]`...)
		} else {
			b = append(b, `},"logprobs":null,"finish_reason":null}]`...)
		}
		if includeUsage {
			b = append(b, `,"usage":null`...)
		}
		b = append(b, "}\n\n"...)
		if !x.chunk(i, b) {
			return
		}
	}
	for j, d := range p.toolDeltas {
		b = append(append(b[:head], `{"index":0,"delta":`...), d...)
		if j == len(p.toolDeltas)-1 {
			b = append(b, `,"logprobs":null,"finish_reason":"tool_calls"}]`...)
		} else {
			b = append(b, `,"logprobs":null,"finish_reason":null}]`...)
		}
		if includeUsage {
			b = append(b, `,"usage":null`...)
		}
		b = append(b, "}\n\n"...)
		if !x.chunk(len(p.chatPieces)+j, b) {
			return
		}
	}
	if includeUsage && !x.emit(x.appendUsageChunk(b[:head], len(p.chatPieces)+len(p.toolDeltas))) {
		return
	}
	x.endStream(true)
}

// appendUsageChunk completes a chunk head (ending in `"choices":[`) into the
// usage-only chunk sent for stream_options.include_usage.
func (x *exchange) appendUsageChunk(b []byte, sent int) []byte {
	b = append(b, `],"usage":`...)
	b = x.p.appendUsage(b, sent)
	return append(b, "}\n\n"...)
}

func (x *exchange) completions(req *apiRequest) {
	p := x.p
	b := x.appendHead(x.buf[:0], "cmpl-", "text_completion", req.Model)
	b = append(b, `,"choices":[{"text":`...)
	b = append(b, p.content...)
	b = append(b, `,"index":0,"logprobs":null,"finish_reason":"stop"}],"usage":`...)
	b = p.appendUsage(b, DefaultCompletionTokens)
	x.buf = append(b, '}')
	x.writeJSON(p.status, x.buf)
}

func (x *exchange) completionsStream(req *apiRequest) {
	p := x.p
	if !x.beginStream() {
		return
	}
	includeUsage := req.StreamOptions.IncludeUsage
	b := x.appendHead(append(x.buf[:0], "data: "...), "cmpl-", "text_completion", req.Model)
	b = append(b, `,"choices":[`...)
	head := len(b)
	defer func() { x.buf = b }()
	last := len(p.pieces) - 1
	for i, t := range p.pieces {
		b = append(append(b[:head], `{"text":`...), t...)
		if i == last {
			b = append(b, `,"index":0,"logprobs":null,"finish_reason":"stop"}]`...)
		} else {
			b = append(b, `,"index":0,"logprobs":null,"finish_reason":null}]`...)
		}
		if includeUsage {
			b = append(b, `,"usage":null`...)
		}
		b = append(b, "}\n\n"...)
		if !x.chunk(i, b) {
			return
		}
	}
	if includeUsage && !x.emit(x.appendUsageChunk(b[:head], len(p.pieces))) {
		return
	}
	x.endStream(true)
}

// retrieveModel answers GET /v1/models/{id} as OpenAI does: the model's object, or
// 404 model_not_found.
func (x *exchange) retrieveModel(id string) {
	if obj, ok := x.p.model[id]; ok {
		x.writeJSON(x.p.status, obj)
		return
	}
	b := appendQuoted(append(x.buf[:0], `{"error":{"message":`...), "The model '"+id+"' does not exist")
	x.buf = append(b, `,"type":"invalid_request_error","param":"model","code":"model_not_found"}}`...)
	x.writeJSON(http.StatusNotFound, x.buf)
}

// embeddingVector is the fixed vector of every input, and embeddingBase64 the
// same vector as OpenAI encodes it for encoding_format "base64": the
// little-endian float32 values, in standard base64. The SDKs for Node and
// Python ask for base64 by default and decode it themselves.
const embeddingVector = `[0.0023064255,-0.009327292,0.015797347,-0.0077780345]`

var embeddingBase64 = func() string {
	var vec []float32
	if err := json.Unmarshal([]byte(embeddingVector), &vec); err != nil {
		panic(err)
	}
	b := make([]byte, 0, 4*len(vec))
	for _, f := range vec {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return `"` + base64.StdEncoding.EncodeToString(b) + `"`
}()

func (x *exchange) embeddings(req *apiRequest) {
	vector := embeddingVector
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		vector = embeddingBase64
	default:
		x.invalid(http.StatusBadRequest, "invalid encoding_format "+strconv.Quote(req.EncodingFormat)+": want float or base64")
		return
	}
	inputs := 1
	if in := bytes.TrimSpace(req.Input); len(in) > 0 && in[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(in, &items); err != nil {
			x.invalid(http.StatusBadRequest, "invalid input: "+err.Error())
			return
		}
		// A list of strings or of token arrays is a batch; a list of
		// numbers is a single tokenised input.
		if len(items) > 0 && (items[0][0] == '"' || items[0][0] == '[') {
			inputs = len(items)
		}
	}
	b := append(x.buf[:0], `{"object":"list","data":[`...)
	for i := range inputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(append(append(b, `,"embedding":`...), vector...), '}')
	}
	b = appendQuoted(append(b, `],"model":`...), req.Model)
	prompt, _ := x.p.usage(0)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	x.buf = append(b, "}}"...)
	x.writeJSON(x.p.status, x.buf)
}

func (x *exchange) rerank(req *apiRequest) {
	b := x.appendID(append(x.buf[:0], `{"id":"`...), "rerank-")
	b = appendQuoted(append(b, `","model":`...), req.Model)
	b = append(b, `,"results":[`...)
	score := 0.9
	for i := range req.Documents {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"relevance_score":`...)
		b = strconv.AppendFloat(b, score, 'f', -1, 64)
		b = append(b, '}')
		score /= 2
	}
	prompt, _ := x.p.usage(0)
	b = append(b, `],"usage":{"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	x.buf = append(b, "}}"...)
	x.writeJSON(x.p.status, x.buf)
}

// echo answers any other /v1 endpoint, so routing of images, moderations,
// /score, /classify… can be tested.
func (x *exchange) echo(req *apiRequest) {
	b := appendQuoted(append(x.buf[:0], `{"object":"echo","backend":`...), x.s.name)
	b = appendQuoted(append(b, `,"path":`...), x.r.URL.Path)
	b = appendQuoted(append(b, `,"model":`...), req.Model)
	x.buf = append(b, '}')
	x.writeJSON(x.p.status, x.buf)
}

// audio answers transcriptions and translations: multipart with a model
// field (anywhere, also after the file) and a file.
func (x *exchange) audio(body []byte) {
	mediaType, params, err := mime.ParseMediaType(x.r.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/form-data" || params["boundary"] == "" {
		x.invalid(http.StatusBadRequest, "expected a multipart/form-data body")
		return
	}
	var model string
	var file bool
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			x.invalid(http.StatusBadRequest, "reading multipart body: "+err.Error())
			return
		}
		switch part.FormName() {
		case "model":
			v, err := io.ReadAll(io.LimitReader(part, 1024))
			if err != nil {
				x.invalid(http.StatusBadRequest, "reading model field: "+err.Error())
				return
			}
			model = string(v)
		case "file":
			if _, err := io.Copy(io.Discard, part); err != nil {
				x.invalid(http.StatusBadRequest, "reading file: "+err.Error())
				return
			}
			file = true
		}
	}
	switch {
	case model == "":
		x.invalid(http.StatusBadRequest, "you must provide a model parameter")
	case !file:
		x.invalid(http.StatusBadRequest, "you must provide a file")
	default:
		x.buf = append(append(append(x.buf[:0], `{"text":`...), x.p.content...), '}')
		x.writeJSON(x.p.status, x.buf)
	}
}
