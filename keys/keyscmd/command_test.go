package keyscmd

import (
	"bytes"
	"crypto/rand"
	"regexp"
	"strings"
	"testing"

	"github.com/llmgw/caddy-llm-gateway/keys"
)

func TestNew(t *testing.T) {
	var out bytes.Buffer
	if err := New(&out, "team-a", rand.Reader); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	secret := lines[0]
	if !regexp.MustCompile(`^sk-[A-Za-z0-9_-]{32,}$`).MatchString(secret) {
		t.Fatalf("key %q is not sk- and at least 32 of [A-Za-z0-9_-]", secret)
	}
	hash := keys.FormatHash(secret)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(hash) {
		t.Fatalf("hash %q", hash)
	}
	for _, want := range []string{"key team-a {\n\thash " + hash + "\n}", "  - name: team-a\n    hash: " + hash} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// The config lines printed parse.
	ks, err := keys.ParseFile([]byte("keys:\n"+out.String()[strings.Index(out.String(), "  - name"):]), "k.yaml")
	if err != nil || len(ks) != 1 {
		t.Fatalf("keys file lines do not parse: %v", err)
	}
	if set, err := keys.Compile(ks, nil, nil); err != nil || set.Lookup(secret) == nil {
		t.Fatalf("the printed hash does not admit the key: %v", err)
	}
	var again bytes.Buffer
	_ = New(&again, "team-a", rand.Reader)
	if strings.Split(again.String(), "\n")[0] == secret {
		t.Error("two keys alike")
	}
	if err := New(&out, "bad name", rand.Reader); err == nil {
		t.Error("a name with a space was accepted")
	}
}

func TestHash(t *testing.T) {
	want := keys.FormatHash("sk-abc") + "\n"
	for _, in := range []string{"sk-abc\n", "sk-abc", "sk-abc\r\n", "sk-abc\nsecond line\n"} {
		var out bytes.Buffer
		if err := Hash(&out, strings.NewReader(in)); err != nil || out.String() != want {
			t.Errorf("Hash(%q) = %q, %v; want %q", in, out.String(), err, want)
		}
	}
	if err := Hash(new(bytes.Buffer), strings.NewReader("\n")); err == nil {
		t.Error("an empty line was hashed")
	}
	// The known SHA-256 of "abc".
	var out bytes.Buffer
	_ = Hash(&out, strings.NewReader("abc\n"))
	if out.String() != "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n" {
		t.Errorf("Hash(abc) = %q", out.String())
	}
}
