package llmgateway

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestQuotedKeysMatchesContains checks that quotedKeys says what bytes.Contains says of the two
// words, the audit row's Tool and Multimodal, for bodies built to trip a quote-by-quote search.
func TestQuotedKeysMatchesContains(t *testing.T) {
	bodies := []string{
		``,
		`"`,
		`""`,
		`"tools"`,
		`"tools`,
		`tools"`,
		`""tools"`,
		`"image_url"`,
		`"image_url`,
		`{"model":"m","tools":[]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`,
		`{"model":"m","tools":[],"messages":[{"content":[{"type":"image_url"}]}]}`,
		`{"messages":[{"content":"say \"tools\" twice"}]}`,
		`{"messages":[{"content":"\"tools\""}]}`,
		`{"a":"image_url","b":"tool","c":"toolss"}`,
		`{"model":"m","stream":false,"messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 170) + `"}]}`,
		strings.Repeat(`"`, 100) + `"tools"`,
		strings.Repeat(`"x`, 100) + `"image_url"` + strings.Repeat(`"`, 7),
	}
	// Random bodies from an alphabet of the words' own bytes, so near misses abound.
	rng := rand.New(rand.NewPCG(1, 2))
	parts := []string{`"`, `"tools`, `tools"`, `"tools"`, `"image_url`, `image_url"`, `"image_url"`, `t`, `i`, `x`, `\`, `""`}
	for range 2000 {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		bodies = append(bodies, b.String())
	}
	for _, body := range bodies {
		for _, image := range []bool{false, true} {
			wantTool := bytes.Contains([]byte(body), []byte(`"tools"`))
			wantImage := image && bytes.Contains([]byte(body), []byte(`"image_url"`))
			tool, multimodal := quotedKeys([]byte(body), image)
			if tool != wantTool || multimodal != wantImage {
				t.Errorf("quotedKeys(%q, %v) = %v, %v; bytes.Contains says %v, %v", body, image, tool, multimodal, wantTool, wantImage)
			}
		}
	}
}

// BenchmarkQuotedKeys is the audit row's flags of a 2 KB chat body without either word, as
// bench/ sends.
func BenchmarkQuotedKeys(b *testing.B) {
	body := []byte(`{"model":"gpt-4o","stream":false,"messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 165) + `"}]}`)
	b.Run("quotedKeys", func(b *testing.B) {
		for b.Loop() {
			quotedKeys(body, true)
		}
	})
	b.Run("bytes.Contains", func(b *testing.B) {
		for b.Loop() {
			_ = bytes.Contains(body, []byte(`"tools"`)) || bytes.Contains(body, []byte(`"image_url"`))
		}
	})
}
