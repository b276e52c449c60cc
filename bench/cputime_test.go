//go:build linux

package main

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestCPUSampleSince(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name           string
		earlier, later cpuSample
		want           time.Duration
	}{
		{"threads", cpuSample{map[int]time.Duration{1: 5 * ms, 2: 7 * ms}, 10 * ms}, cpuSample{map[int]time.Duration{1: 8 * ms, 2: 9 * ms}, 20 * ms}, 5 * ms},
		{"a thread born since counts whole", cpuSample{map[int]time.Duration{1: 5 * ms}, 0}, cpuSample{map[int]time.Duration{1: 6 * ms, 3: 2 * ms}, 10 * ms}, 3 * ms},
		{"a thread exited: ticks", cpuSample{map[int]time.Duration{1: 5 * ms, 2: 7 * ms}, 10 * ms}, cpuSample{map[int]time.Duration{1: 9 * ms}, 30 * ms}, 20 * ms},
		{"no schedstat: ticks", cpuSample{nil, 10 * ms}, cpuSample{nil, 40 * ms}, 30 * ms},
		{"schedstat lost midway: ticks", cpuSample{map[int]time.Duration{1: 5 * ms}, 10 * ms}, cpuSample{nil, 40 * ms}, 30 * ms},
	} {
		if got := tc.later.since(tc.earlier); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// spin is what the busy thread of TestReadCPU works on, kept so that its loop is not optimised out.
var spin int

// TestReadCPU: this process's run time, read from schedstat, grows by what a busy thread used,
// in agreement with the ticks of /proc/<pid>/stat, and with a finer grain than theirs.
func TestReadCPU(t *testing.T) {
	pid := os.Getpid()
	before, err := readCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if before.threads == nil {
		t.Skip("no /proc/<pid>/task/*/schedstat on this kernel: the benchmark counts ticks")
	}
	// A locked goroutine keeps one thread busy until the process's ticks have grown by 300 ms
	// (CPU time, not wall time: the machine may be busy); its exit does not end the thread,
	// since the lock is released first.
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for {
			for i := 0; i < 1e6; i++ {
				spin++
			}
			ticks, err := cpuTicks(pid)
			if err != nil || ticks-before.ticks >= 300*time.Millisecond {
				done <- err
				return
			}
		}
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	after, err := readCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	used, ticks := after.since(before), after.ticks-before.ticks
	if used < 250*time.Millisecond {
		t.Errorf("%v used by a thread busy for 300 ms of ticks", used)
	}
	// The ticks round to 10 ms and are charged by sampling; allow for both.
	if diff := (used - ticks).Abs(); diff > 50*time.Millisecond {
		t.Errorf("threads %v, ticks %v", used, ticks)
	}
	if used%(10*time.Millisecond) == 0 {
		t.Errorf("%v is a whole number of ticks: not read from schedstat", used)
	}
}
