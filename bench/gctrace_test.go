//go:build linux

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestParseGCTrace(t *testing.T) {
	const log = `{"level":"info","msg":"serving initial configuration"}
gc 1 @0.012s 2%: 0.021+1.2+0.003 ms clock, 0.021+0.15/0.31/0+0.003 ms cpu, 3->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 1 P
gc 2 @0.100s 3%: 0.010+0.5+0.002 ms clock, 0.010+0.20/0.10/0.05+0.002 ms cpu, 4->4->2 MB, 5 MB goal, 0 MB stacks, 0 MB globals, 1 P
gc 3 @0.2s 3%: 0.010+0.5+0.002 ms clock, 0.010+0.20{"level":"info","msg":"a write in between"}
gc 4 @0.3s 3%: 0.010+0.5+0.002 ms clock, 1+2/x/0+0 ms cpu, 4->4->2 MB, 5 MB goal
gc 5 (forced) @0.4s 1%: 0.1+0.2+0.3 ms clock, 0.5+0.25/0.25/0+0.5 ms cpu, 4->4->2 MB, 5 MB goal, 1 P (forced)
`
	got := parseGCTrace([]byte(log))
	// Lines 1, 2 and 5; 3 is broken by another write, 4 has a field that is no number.
	want := gcTally{cycles: 3, cpu: time.Duration((0.484 + 0.362 + 1.5) * float64(time.Millisecond))}
	if got.cycles != want.cycles || (got.cpu-want.cpu).Abs() > time.Microsecond {
		t.Errorf("got %d cycles, %v; want %d, %v", got.cycles, got.cpu, want.cycles, want.cpu)
	}
}

// TestGCSince: a Go process run with gcDebug's GODEBUG logs its collections, and gcSince counts
// each once. The process collects 8 times; the line of the last may still be being written as it
// exits, but the 7th is whole before the 8th starts.
func TestGCSince(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nimport \"runtime\"\n\nfunc main() {\n\tfor range 8 {\n\t\truntime.GC()\n\t}\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "gcs")
	if out, err := exec.Command("go", "build", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{gcDebug()}
	p, err := startProcess(dir, "gcs", cmd)
	if err != nil {
		t.Fatal(err)
	}
	<-p.done
	first, err := p.gcSince()
	if err != nil {
		t.Fatal(err)
	}
	again, err := p.gcSince()
	if err != nil {
		t.Fatal(err)
	}
	if !first.traced || first.cycles < 7 || first.cycles > 8 || first.cpu <= 0 {
		b, _ := os.ReadFile(p.log)
		t.Errorf("first read: %+v, want 7 or 8 traced cycles with some CPU; the log:\n%s", first, b)
	}
	if !again.traced || again.cycles != 0 {
		t.Errorf("second read: %+v, want none left", again)
	}
}
