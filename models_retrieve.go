package llmgateway

import (
	"bytes"
	"net/http"

	"github.com/goccy/go-json"
)

// modelsPathPrefix starts the path of OpenAI's retrieve-model call, GET /v1/models/{model}.
const modelsPathPrefix = "/v1/models/"

// serveModel answers GET /v1/models/{model} (SPEC §3) with the model's object from the
// aggregated list of serveModels, cache included, and never asks an upstream for the model
// itself: the list is what the gateway serves, and it is already filtered by the clients'
// match rules. id is the model from the decoded path, so ids holding a slash (Hugging Face
// style, as vLLM lists them) work whether the caller escaped it or not.
func (h *Handler) serveModel(w http.ResponseWriter, r *http.Request, g *generation, id string) {
	// serveModels writes the list; keep it here instead of sending it.
	list := &bufferedResponse{header: make(http.Header)}
	h.serveModels(list, r, g)
	if list.status == 0 {
		return // the caller went away while the list was being fetched
	}
	var doc struct {
		Data []json.RawMessage `json:"data"`
	}
	if list.status == http.StatusOK && json.Unmarshal(list.body.Bytes(), &doc) == nil {
		for _, raw := range doc.Data {
			var m struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(raw, &m) == nil && m.ID == id {
				writeJSON(w, http.StatusOK, raw)
				return
			}
		}
	}
	writeJSON(w, http.StatusNotFound, marshalError(errTypeInvalidRequest, errCodeModelNotFound,
		"The model `"+id+"` does not exist or no upstream serves it."))
}

// bufferedResponse is an http.ResponseWriter that keeps what is written to it.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}
