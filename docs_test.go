package llmgateway_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocsStandAlone checks that the user-facing documents (README, docs/, examples/) refer to
// nothing outside the repository: no project-internal specification (SPEC.md, "§8"), no
// seed notes, and no relative link to a file that does not exist.
func TestDocsStandAlone(t *testing.T) {
	files := []string{"README.md", "xcaddy.Dockerfile"}
	for _, dir := range []string{"docs", "examples"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				files = append(files, path)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	outside := regexp.MustCompile(`\bSPEC\b|SPEC\.md|seed/|behaviour\.md|DESIGN-NOTES|§\s*\d`)
	link := regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			if m := outside.FindString(line); m != "" {
				t.Errorf("%s:%d refers to %q, which is not in the repository: %s", file, i+1, m, strings.TrimSpace(line))
			}
			if !strings.HasSuffix(file, ".md") {
				continue
			}
			for _, m := range link.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				if _, err := os.Stat(filepath.Join(filepath.Dir(file), target)); err != nil {
					t.Errorf("%s:%d links to %s: %v", file, i+1, target, err)
				}
			}
		}
	}
}
