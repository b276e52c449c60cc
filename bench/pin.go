//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// pinning is where the processes run: every Caddy process under test alone on the proxy CPU, and
// the load generator (this process, all its threads), the fake upstream and redis-server on the
// others. Sharing CPUs, the proxy's CPU per call moved with whatever else ran on its CPU at the
// time (the scheduler migrates it, its caches are cold, a load-generator burst preempts it); on a
// CPU of its own it is charged only for its own work.
type pinning struct {
	proxy, load []int  // CPU numbers; both nil when unpinned
	taskset     string // path of taskset(1), which starts the children pinned
	note        string // why the run is unpinned, if it is
}

// planPinning chooses the CPUs from those this process may run on: the first for the proxy, the
// rest for the load. With fewer than two, or without taskset, the run is unpinned.
func planPinning(disabled bool) pinning {
	if disabled {
		return pinning{note: "pinning disabled (-pin=false)"}
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return pinning{note: "reading this process's CPU affinity failed (" + err.Error() + ")"}
	}
	var cpus []int
	for c := 0; len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		return pinning{note: fmt.Sprintf("only %d CPU available to the benchmark", len(cpus))}
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return pinning{note: "taskset (util-linux) not found"}
	}
	return pinning{proxy: cpus[:1], load: cpus[1:], taskset: taskset}
}

func (p pinning) pinned() bool { return p.proxy != nil }

// describe says where each process ran, for the report.
func (p pinning) describe() string {
	if !p.pinned() {
		return "unpinned: " + p.note + "; the proxy, the load generator and the fake upstream share the CPUs"
	}
	return fmt.Sprintf("each Caddy process on CPU %s; the load generator (this process), the fake upstream and redis-server on CPU %s",
		cpuList(p.proxy), cpuList(p.load))
}

// cpuList formats CPUs as taskset -c reads them.
func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// pinSelf moves every thread of this process to the load CPUs; threads made later inherit the
// mask of the thread that makes them. The Go runtime may start a thread while the list is being
// walked, so the walk repeats until it finds no thread it has not pinned.
func (p pinning) pinSelf() error {
	if !p.pinned() {
		return nil
	}
	var set unix.CPUSet
	for _, c := range p.load {
		set.Set(c)
	}
	done := make(map[int]bool)
	for {
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("listing this process's threads: %w", err)
		}
		fresh := 0
		for _, e := range entries {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			// A thread may have exited since the listing: ESRCH is no failure.
			if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("pinning thread %d to CPU %s: %w", tid, cpuList(p.load), err)
			}
			done[tid] = true
			fresh++
		}
		if fresh == 0 {
			return nil
		}
	}
}

// command returns the command that runs bin with args on the proxy CPU (proxy true) or the load
// CPUs. taskset execs bin in its own process, so the pid is bin's.
func (p pinning) command(proxy bool, bin string, args ...string) *exec.Cmd {
	if !p.pinned() {
		return exec.Command(bin, args...)
	}
	cpus := p.load
	if proxy {
		cpus = p.proxy
	}
	return exec.Command(p.taskset, append([]string{"-c", cpuList(cpus), bin}, args...)...)
}

// affinity returns the CPUs pid may run on, as the kernel reports them: the report's proof that
// the pinning took.
func affinity(pid int) (string, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &set); err != nil {
		return "", fmt.Errorf("reading the CPU affinity of %d: %w", pid, err)
	}
	var cpus []int
	for c := 0; len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpuList(cpus), nil
}
