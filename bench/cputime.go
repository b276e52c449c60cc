//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports; reading it needs sysconf,
// which needs cgo.
const clockTicks = 100

// cpuSample is what a process has run so far, read two ways: the scheduler's
// nanosecond run time of each of its threads (/proc/<pid>/task/*/schedstat),
// and utime+stime of /proc/<pid>/stat, which counts exited threads too but
// only in ticks of 10 ms.
//
// The ticks alone were the benchmark's largest error at low load: a proxy at
// concurrency 1 uses some 80 ticks in a 2 s phase, so one tick either way
// moved a ratio of two such figures by up to 2.5%.
type cpuSample struct {
	threads map[int]time.Duration // run time by thread id; nil where schedstat is unreadable
	ticks   time.Duration
}

// readCPU samples the process's CPU time.
func readCPU(pid int) (cpuSample, error) {
	ticks, err := cpuTicks(pid)
	if err != nil {
		return cpuSample{}, err
	}
	return cpuSample{threads: threadRunTimes(pid), ticks: ticks}, nil
}

// since returns the CPU time used between an earlier sample and s: the sum
// of the threads' run time when every thread of the earlier sample is still
// there (a thread born since counts whole), and the ticks otherwise, since
// an exited thread's time is only in /proc/<pid>/stat.
func (s cpuSample) since(earlier cpuSample) time.Duration {
	if s.threads == nil || earlier.threads == nil {
		return s.ticks - earlier.ticks
	}
	var d time.Duration
	for tid := range earlier.threads {
		if _, ok := s.threads[tid]; !ok {
			return s.ticks - earlier.ticks
		}
	}
	for tid, t := range s.threads {
		d += t - earlier.threads[tid]
	}
	return d
}

// threadRunTimes reads the first field of every thread's schedstat: its time
// on a CPU in nanoseconds. It returns nil if any of them cannot be read (a
// kernel without schedstat, or a thread that exited while being read, which
// since then sees as missing anyway).
func threadRunTimes(pid int) map[int]time.Duration {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	times := make(map[int]time.Duration, len(entries))
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(dir + e.Name() + "/schedstat")
		if err != nil {
			return nil
		}
		f, _, _ := bytes.Cut(b, []byte{' '})
		ns, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil {
			return nil
		}
		times[tid] = time.Duration(ns)
	}
	return times
}

// cpuTicks returns the user+system CPU time the process has used so far,
// its exited threads included, in whole ticks.
func cpuTicks(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields are counted
	// from the last ')'. After it come state (field 3) … utime (14), stime (15).
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}
