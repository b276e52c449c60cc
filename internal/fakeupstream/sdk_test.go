package fakeupstream

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"testing"

	"github.com/goccy/go-json"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
)

// sdkClient returns the official SDK's client for s, on c's transport (closed by start).
func sdkClient(s *Server, c *http.Client) openai.Client {
	return openai.NewClient(option.WithBaseURL(s.URL()+"/"), option.WithAPIKey("k"),
		option.WithHTTPClient(c), option.WithMaxRetries(0))
}

// TestSDKResponsesStreamAccumulates streams a Responses answer with the official SDK and
// rebuilds it the way the SDKs' stream helpers do (the Node SDK's finalResponse): an output
// item must be announced before its content part, and the part before the text deltas that
// fill it, or the accumulator throws ("missing output at index 0").
func TestSDKResponsesStreamAccumulates(t *testing.T) {
	s, c := start(t, "s")
	s.Update(func(set *Settings) { set.Chunks = 4 })
	client := sdkClient(s, c)
	stream := client.Responses.NewStreaming(context.Background(), responses.ResponseNewParams{
		Model: "gpt-4o",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")},
	})
	var (
		output    [][]string // per output item, the text of each content part
		completed *responses.Response
		lastSeq   int64 = -1
	)
	for stream.Next() {
		ev := stream.Current()
		if ev.SequenceNumber != lastSeq+1 {
			t.Errorf("%s: sequence_number %d after %d", ev.Type, ev.SequenceNumber, lastSeq)
		}
		lastSeq = ev.SequenceNumber
		switch ev := ev.AsAny().(type) {
		case responses.ResponseOutputItemAddedEvent:
			if int(ev.OutputIndex) != len(output) || ev.Item.Type != "message" || ev.Item.Status != "in_progress" {
				t.Fatalf("output_item.added %+v with %d items", ev, len(output))
			}
			output = append(output, nil)
		case responses.ResponseContentPartAddedEvent:
			if int(ev.OutputIndex) >= len(output) {
				t.Fatalf("content_part.added: missing output at index %d", ev.OutputIndex)
			}
			output[ev.OutputIndex] = append(output[ev.OutputIndex], ev.Part.Text)
		case responses.ResponseTextDeltaEvent:
			if int(ev.OutputIndex) >= len(output) {
				t.Fatalf("output_text.delta: missing output at index %d", ev.OutputIndex)
			}
			if int(ev.ContentIndex) >= len(output[ev.OutputIndex]) {
				t.Fatalf("output_text.delta: missing content at index %d", ev.ContentIndex)
			}
			output[ev.OutputIndex][ev.ContentIndex] += ev.Delta
		case responses.ResponseTextDoneEvent:
			if ev.Text != output[ev.OutputIndex][ev.ContentIndex] {
				t.Errorf("output_text.done text %q, deltas gave %q", ev.Text, output[ev.OutputIndex][ev.ContentIndex])
			}
		case responses.ResponseCompletedEvent:
			completed = &ev.Response
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(output) != 1 || len(output[0]) != 1 || output[0][0] != "hello from s" {
		t.Fatalf("accumulated output %q", output)
	}
	if completed == nil || completed.OutputText() != "hello from s" || completed.Usage.OutputTokens != 4 {
		t.Fatalf("response.completed: %+v", completed)
	}
}

// TestSDKEmbeddingsBase64 asks for base64 embeddings, as the Node and Python SDKs do by
// default, and decodes them as they do: little-endian float32s, the same vector as floats.
func TestSDKEmbeddingsBase64(t *testing.T) {
	s, c := start(t, "s")
	client := sdkClient(s, c)
	ctx := context.Background()
	params := openai.EmbeddingNewParams{
		Model: "text-embedding-3-small",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}},
	}
	floats, err := client.Embeddings.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	params.EncodingFormat = openai.EmbeddingNewParamsEncodingFormatBase64
	b64, err := client.Embeddings.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(b64.Data) != 2 || len(floats.Data) != 2 || len(floats.Data[0].Embedding) != 4 {
		t.Fatalf("data: %d base64, %d float items", len(b64.Data), len(floats.Data))
	}
	for i, d := range b64.Data {
		var enc string
		if err := json.Unmarshal([]byte(d.JSON.Embedding.Raw()), &enc); err != nil {
			t.Fatalf("item %d: embedding %s is not a base64 string", i, d.JSON.Embedding.Raw())
		}
		raw, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || len(raw) != 4*len(floats.Data[i].Embedding) {
			t.Fatalf("item %d: %d bytes (%v), want %d float32s", i, len(raw), err, len(floats.Data[i].Embedding))
		}
		for j, want := range floats.Data[i].Embedding {
			if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:])); got != float32(want) {
				t.Errorf("item %d value %d: %g, want %g", i, j, got, want)
			}
		}
	}

	params.EncodingFormat = "binary"
	_, err = client.Embeddings.New(ctx, params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest {
		t.Errorf("encoding_format binary: %v, want 400", err)
	}
}

// TestSDKRetrieveModel retrieves listed and unknown models with the official SDK.
func TestSDKRetrieveModel(t *testing.T) {
	s, c := start(t, "s")
	s.Update(func(set *Settings) { set.Models = []string{"m1", "org/m2"} })
	client := sdkClient(s, c)
	for _, id := range []string{"m1", "org/m2"} {
		m, err := client.Models.Get(context.Background(), id)
		if err != nil || m.ID != id || m.OwnedBy != "s" {
			t.Errorf("retrieve %s: %v %+v", id, err, m)
		}
	}
	_, err := client.Models.Get(context.Background(), "m3")
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "model_not_found" {
		t.Errorf("retrieve m3: %v, want 404 model_not_found", err)
	}
}
