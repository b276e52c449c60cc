package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestKeepSections: regenerating the report keeps the dashboard's section, which bench/ does
// not produce.
func TestKeepSections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	if got := keepSections(path, "# Benchmarks\n\nnew\n"); got != "# Benchmarks\n\nnew\n" {
		t.Errorf("no old file: %q", got)
	}
	if err := os.WriteFile(path, []byte("# Benchmarks\n\nold\n\n## Usage dashboard\n\nfigures\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := keepSections(path, "# Benchmarks\n\nnew\n"), "# Benchmarks\n\nnew\n\n## Usage dashboard\n\nfigures\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	marked := "# Benchmarks\n\nold\n\n" + handWritten + "\n\n## JSON scanning\n\n## Usage dashboard\n"
	if err := os.WriteFile(path, []byte(marked), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := keepSections(path, "# Benchmarks\n\nnew\n"), "# Benchmarks\n\nnew\n\n"+handWritten+"\n\n## JSON scanning\n\n## Usage dashboard\n"; got != want {
		t.Errorf("with the marker: got %q, want %q", got, want)
	}
}
