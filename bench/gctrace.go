//go:build linux

package main

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"time"
)

// Every Caddy process runs with GODEBUG=gctrace=1: the runtime then writes a line to stderr
// (the process's log) at the end of each garbage collection, with the CPU the collection used,
//
//	gc 12 @1.234s 2%: 0.011+0.31+0.004 ms clock, 0.011+0.10/0.05/0+0.004 ms cpu, 4->4->2 MB, 5 MB goal, …
//
// and the benchmark reports that CPU per call next to the process's whole CPU per call. Two
// targets that differ only in their live heap (the routing phase's 1 and 10,000 clients)
// differ in how often they collect: the column shows how much of a CPU ratio that is. It does
// not hold sweeping and allocation, which the runtime charges to the goroutines that allocate.

// gcDebug is the GODEBUG of a Caddy process: the benchmark's own, with gctrace=1.
func gcDebug() string {
	if v := os.Getenv("GODEBUG"); v != "" {
		return "GODEBUG=" + v + ",gctrace=1"
	}
	return "GODEBUG=gctrace=1"
}

// gcTally is the garbage collection of one span of a process's life.
type gcTally struct {
	cycles int
	cpu    time.Duration
	traced bool // read from a process's log; false where nothing was read (direct, the writer)
}

// gcSince returns the collections the process's log reports since the last call (since its
// start, on the first), reading complete lines only.
func (p *process) gcSince() (gcTally, error) {
	f, err := os.Open(p.log)
	if err != nil {
		return gcTally{}, err
	}
	defer f.Close()
	if _, err := f.Seek(p.gcRead, io.SeekStart); err != nil {
		return gcTally{}, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return gcTally{}, err
	}
	end := bytes.LastIndexByte(b, '\n') + 1
	p.gcRead += int64(end)
	t := parseGCTrace(b[:end])
	t.traced = true
	return t, nil
}

// parseGCTrace sums the gctrace lines of log. Other lines (Caddy's own log) are skipped, and
// so is a gctrace line another write broke into: the runtime writes one in several pieces.
func parseGCTrace(log []byte) gcTally {
	var t gcTally
	for len(log) > 0 {
		var line []byte
		line, log, _ = bytes.Cut(log, []byte{'\n'})
		if !bytes.HasPrefix(line, []byte("gc ")) {
			continue
		}
		_, rest, ok := bytes.Cut(line, []byte(" ms clock, "))
		if !ok {
			continue
		}
		field, _, ok := bytes.Cut(rest, []byte(" ms cpu"))
		if !ok {
			continue
		}
		// assist+background/idle... : five numbers joined by '+' and '/'.
		var ms float64
		n := 0
		for part := range bytes.FieldsFuncSeq(field, func(r rune) bool { return r == '+' || r == '/' }) {
			v, err := strconv.ParseFloat(string(part), 64)
			if err != nil {
				n = -1
				break
			}
			ms += v
			n++
		}
		if n != 5 {
			continue
		}
		t.cycles++
		t.cpu += time.Duration(ms * float64(time.Millisecond))
	}
	return t
}
