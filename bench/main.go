//go:build linux

// Command bench measures the LLM gateway against a plain Caddy reverse_proxy
// in front of the same fake upstream, as SPEC.md §11 asks. Run it from the
// repository root:
//
//	go run ./bench -out docs/benchmarks.md           # about 11 minutes
//	go run ./bench -repeat 3 -out docs/benchmarks.md # three runs back to back, about 33 minutes
//	go run ./bench -quick                            # a smoke run of about a minute
//
// It builds cmd/caddy and cmd/fakeupstream into a temporary directory (or
// uses -caddy and -fake), starts the fake upstream and Caddy processes of the
// same binary — reverse_proxy with flush_interval -1, llm_gateway, and
// llm_gateway with the llm_audit app storing full bodies, and more for the
// phases below — each in its own process so that /proc charges each one its
// own CPU: the scheduler's run time of its threads in nanoseconds
// (/proc/<pid>/task/*/schedstat), or utime+stime of /proc/<pid>/stat, whole
// ticks of 10 ms, where a thread exited during the measurement. Caddy
// processes run with GODEBUG=gctrace=1, and the part of that CPU their
// garbage collections used is reported beside it (gctrace.go). A load generator in this process then drives
// identical loopback load at every target, the fake itself included as the
// "direct" baseline:
//
//   - non-stream chat, 2 KB request body, at concurrency 1 and 32;
//   - streaming chat, 64 chunks per stream;
//   - 5,000 concurrent open streams (fresh proxy processes, RSS and
//     goroutines per stream), once over HTTP/1.1 and once over h2c on both
//     sides (server protocols h1 h2c, a load client speaking only unencrypted
//     HTTP/2, transport http { versions h2c } to the fake, which counts the
//     HTTP/2 requests it gets: the phase fails if the proxy fell back to
//     HTTP/1.1);
//   - 2,000 req/s open-loop non-stream load, audit on and off, with the
//     audit rows counted against the requests sent;
//   - the audit writer's sustained rows/s with 2 KB + 1 KB bodies, the
//     llm_audit app run in this process and fed as fast as it commits;
//   - the audit's cost at saturation: non-stream c=32 and streams c=16 at
//     llm_gateway with audit off, with bodies full and with bodies none;
//   - what gateway keys add to a call: non-stream c=1 at llm_gateway without
//     keys, with a keys block counting in-process, and with the keys counted
//     in a redis-server the benchmark starts (skipped, with a note, without
//     one);
//   - routing against config size: non-stream c=16 at llm_gateway with 1
//     client, 1,000 and 10,000 clients of match regex ^model-N$ and 10,000 of
//     match exact model-N, asking for the last client's model.
//
// -only runs the phases whose name contains its text (and starts only their
// processes), e.g.
//
//	go run ./bench -only "audit saturated"
//	go run ./bench -only keys
//	go run ./bench -only routing
//
// Pinning (-pin, on by default): with at least two CPUs and taskset(1), every
// Caddy process runs under taskset on the first CPU this process may use,
// alone, and this process (every thread, by sched_setaffinity, after the
// build), the fake upstream and redis-server on the others. The proxy's CPU
// per call is then its own work only: unpinned, it moved with what the load
// generator did on the same CPU at the time. Each measurement is preceded by
// the phase's own load, unmeasured, for 500 ms, so that it starts with the
// connections open and the heap at its working size.
//
// Every phase runs once per target per round, targets interleaved (and
// rotated between rounds), and every figure is the median over rounds; a CPU
// ratio of two targets is the median of the ratios within each round, which
// cancels what drifts slower than a round (other work on a shared machine). The
// result is one Markdown table, printed and written to -out together with
// the command line and the machine it ran on. -repeat N runs the whole
// benchmark N times back to back (fresh processes each time) and adds, per
// CPU ratio of the checks, each run's value and their spread (the largest
// deviation from the median, held to ±3%); the tables are the last run's.
// With -before, the report also keeps an earlier one verbatim as "Before",
// this run as "After", and compares the two:
//
//	go run ./bench -pprof -before docs/benchmarks-before.md -out docs/benchmarks.md
//
// Linux only: it reads /proc, and raises RLIMIT_NOFILE to its hard limit
// (which the child processes inherit) for the open-streams phases.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// options are the command-line flags.
type options struct {
	rounds   int
	quick    bool
	out      string
	before   string
	repo     string
	caddyBin string
	fakeBin  string
	streams  int
	rate     int
	pprof    bool
	keep     bool
	only     string
	pin      bool
	repeat   int
}

// plan is the size and length of every phase, derived from the options.
type plan struct {
	rounds      int
	c1For       time.Duration // non-stream, concurrency 1
	c32For      time.Duration // non-stream, concurrency 32
	keysFor     time.Duration // keys phase, non-stream c=1
	streamFor   time.Duration
	streamConc  int
	openStreams int
	rate        int
	rateFor     time.Duration // long enough for 100 ticks of the gateway's CPU at 2,000 req/s
	routeFor    time.Duration // routing phase, non-stream c=16
	writerFor   time.Duration // audit writer fed at its own pace
	warmFor     time.Duration // the phase's own load, unmeasured, before each measurement
	settle      time.Duration // after each phase, before CPU is read again
}

func (o options) plan() plan {
	p := plan{
		// A proxy's CPU per call moves with the pace the load side sets (an idle proxy pays more
		// per call for waking up), which varies from one 2 s window to the next by ±5% at c=1
		// and ±4% at c=16: the phases whose ratios are held to ±3% run longer. At c=32, 3 s
		// rounds still spread 5% over three runs, 6 s rounds 0.3%.
		rounds: o.rounds, c1For: 6 * time.Second, c32For: 6 * time.Second, keysFor: 2 * time.Second,
		streamFor: 2 * time.Second, streamConc: 16, openStreams: o.streams,
		rate: o.rate, rateFor: 5 * time.Second, routeFor: 6 * time.Second, writerFor: 2 * time.Second,
		warmFor: 500 * time.Millisecond, settle: 250 * time.Millisecond,
	}
	if o.quick {
		p.c1For, p.c32For, p.keysFor, p.streamFor, p.rateFor, p.routeFor, p.writerFor = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond, time.Second, 500*time.Millisecond, time.Second
		p.warmFor = 100 * time.Millisecond
		p.openStreams = min(p.openStreams, 1000)
	}
	return p
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 5, "interleaved rounds; every figure is the median over them, every CPU ratio the median of the rounds' ratios")
	flag.BoolVar(&o.quick, "quick", false, "short phases and at most 1,000 open streams: a smoke run of about a minute")
	flag.StringVar(&o.out, "out", "", "also write the report (Markdown) to this file, e.g. docs/benchmarks.md")
	flag.StringVar(&o.before, "before", "", "an earlier report (Markdown, as -out writes it) to keep in the report as \"Before\", compared with this run as \"After\", e.g. docs/benchmarks-before.md")
	flag.StringVar(&o.repo, "repo", ".", "repository root, where cmd/caddy and cmd/fakeupstream are built from")
	flag.StringVar(&o.caddyBin, "caddy", "", "Caddy binary with the gateway's modules (default: build cmd/caddy)")
	flag.StringVar(&o.fakeBin, "fake", "", "fake upstream binary (default: build cmd/fakeupstream)")
	flag.IntVar(&o.streams, "streams", 5000, "concurrent open streams in the open-streams phase")
	flag.IntVar(&o.rate, "rate", 2000, "request rate of the audit phase, per second")
	flag.BoolVar(&o.pprof, "pprof", false, "report the top functions of CPU profiles of reverse_proxy and llm_gateway under non-stream (c=1 and c=32) and streaming load (taken after the rounds), and of a heap profile of llm_gateway with all streams open")
	flag.StringVar(&o.only, "only", "", "run only the phases whose name contains this text, e.g. \"audit saturated\"")
	flag.BoolVar(&o.pin, "pin", true, "pin each Caddy process to one CPU and this process, the fake upstream and redis-server to the others (needs 2 CPUs and taskset)")
	flag.IntVar(&o.repeat, "repeat", 1, "run the whole benchmark this many times back to back and report, per CPU ratio, each run's value and their spread")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (binaries, configs, logs, audit database, profiles)")
	flag.Parse()
	// Importing the audit package brings in Caddy, which sends the standard
	// logger to zap; this command's progress lines go to stderr as plain text.
	log.SetOutput(os.Stderr)
	log.SetPrefix("")
	log.SetFlags(log.Ltime)
	if o.rounds < 1 || o.streams < 1 || o.rate < 1 || o.repeat < 1 {
		log.Fatal("bench: -rounds, -streams, -rate and -repeat must be positive")
	}
	if err := run(o); err != nil {
		log.Fatalf("bench: %v", err)
	}
}

func run(o options) error {
	p := o.plan()
	// Read the earlier report first: a run that ends unable to use it
	// would have been wasted.
	var before string
	if o.before != "" {
		if o.out != "" && sameFile(o.before, o.out) {
			return fmt.Errorf("-before %s is also -out: the earlier report would be overwritten", o.before)
		}
		b, err := os.ReadFile(o.before)
		if err != nil {
			return err
		}
		before = string(b)
	}
	// Each open stream holds a client socket here and two in the proxy.
	if _, err := raiseNoFile(uint64(2*p.openStreams + 512)); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "llmgw-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		log.Printf("work directory: %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	log.Print("building binaries")
	caddyBin, fakeBin, err := buildBinaries(o.repo, dir, o.caddyBin, o.fakeBin)
	if err != nil {
		return err
	}
	// Pinned after the build, which may use every CPU; the children inherit nothing from it.
	pin := planPinning(!o.pin)
	if err := pin.pinSelf(); err != nil {
		return err
	}
	log.Printf("CPUs: %s", pin.describe())

	var runs []result
	for i := range o.repeat {
		if o.repeat > 1 {
			log.Printf("run %d/%d", i+1, o.repeat)
		}
		// Profiles once, in the last run: they are not what the runs are compared on.
		withProfiles := o.pprof && i == o.repeat-1
		r, err := runOnce(o, p, pin, filepath.Join(dir, fmt.Sprintf("run-%d", i+1)), caddyBin, fakeBin, withProfiles)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	last := runs[len(runs)-1]
	var spread []spreadRow
	if len(runs) > 1 {
		reps := make([]report, len(runs))
		for i, r := range runs {
			reps[i] = r.rep
		}
		spread = spreads(reps)
	}
	report := render(o, last.env, last.b, last.rep, last.audit, last.profiles, before, o.before, spread)
	fmt.Print(report)
	if o.out != "" {
		// Sections written by hand (micro-benchmarks the harness does not run) survive a rewrite.
		report = keepSections(o.out, report)
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return err
		}
		log.Printf("wrote %s", o.out)
	}
	return nil
}

// result is one whole run of the benchmark.
type result struct {
	env      *machine
	b        *bench
	rep      report
	audit    auditSummary
	profiles []profile
}

// runOnce runs every selected phase for p.rounds rounds with fresh processes in dir.
func runOnce(o options, p plan, pin pinning, dir, caddyBin, fakeBin string, withProfiles bool) (result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, err
	}
	env := describeMachine()
	b, err := newBench(dir, caddyBin, fakeBin, p, pin)
	if err != nil {
		return result{}, err
	}
	defer b.close()
	if withProfiles {
		b.heapProfile = filepath.Join(dir, "gateway-open-streams.heap")
	}

	scenarios := b.scenarios()
	if o.only != "" {
		scenarios = slices.DeleteFunc(scenarios, func(s scenario) bool { return !strings.Contains(s.name, o.only) })
		if len(scenarios) == 0 {
			return result{}, fmt.Errorf("-only %q matches no phase", o.only)
		}
	}
	started := scenarios
	if withProfiles {
		started = append(slices.Clip(started), scenario{targets: []targetID{targetReverseProxy, targetGateway}})
	}
	if err := b.start(started); err != nil {
		return result{}, err
	}
	results := make([][][]measurement, len(scenarios))
	for i, s := range scenarios {
		results[i] = make([][]measurement, len(s.targets))
	}
	for r := range p.rounds {
		for i, s := range scenarios {
			if err := b.fake.set(s.fake); err != nil {
				return result{}, err
			}
			n := len(s.targets)
			for k := range n {
				j := (k + r) % n // rotate the order between rounds
				t := b.targets[s.targets[j]]
				log.Printf("round %d/%d: %s → %s", r+1, p.rounds, s.name, t.name)
				m, err := s.run(t)
				if err != nil {
					return result{}, fmt.Errorf("round %d, %s, %s: %w", r+1, s.name, t.name, err)
				}
				if m.errs > 0 {
					log.Printf("  %d errors, first: %v", m.errs, m.firstErr)
				}
				if m.ok > 0 && t.proc != nil {
					// Each round's figure, for taking a spread apart afterwards.
					log.Printf("  %d answers, %.1f µs CPU each, %.1f of it GC (%d collections)",
						m.ok, float64(m.cpu)/float64(time.Microsecond)/float64(m.ok), float64(m.gc.cpu)/float64(time.Microsecond)/float64(m.ok), m.gc.cycles)
				}
				results[i][j] = append(results[i][j], m)
			}
		}
	}

	var profiles []profile
	if withProfiles {
		if err := b.fake.set(fakeSteady); err != nil {
			return result{}, err
		}
		// Non-stream at c=1 as well as c=32: at c=1 the process idles between calls, and what
		// a call costs besides its work (wake-ups, timers, syscalls) shows.
		for _, load := range []struct {
			stream bool
			conc   int
		}{{false, 1}, {false, 32}, {true, p.streamConc}} {
			for _, id := range []targetID{targetReverseProxy, targetGateway} {
				pr, err := b.profile(b.targets[id], caddyBin, load.stream, load.conc)
				if err != nil {
					return result{}, err
				}
				profiles = append(profiles, pr)
			}
		}
		for _, hp := range []struct {
			file, over string
			goroutines int
		}{
			{b.heapProfile, "", b.goroutines},
			{heapProfileH2C(b.heapProfile), ", h2c on both sides", b.goroutinesH2C},
		} {
			if _, err := os.Stat(hp.file); err != nil {
				continue
			}
			top, err := exec.Command("go", "tool", "pprof", "-sample_index=inuse_space", "-top", "-nodecount=15", caddyBin, hp.file).Output()
			if err != nil {
				return result{}, fmt.Errorf("go tool pprof %s: %w", hp.file, err)
			}
			profiles = append(profiles, profile{
				title: fmt.Sprintf("Heap in use: llm_gateway with %d open streams%s (%d goroutines)", p.openStreams, hp.over, hp.goroutines),
				top:   string(top),
			})
		}
	}

	audit, err := b.finishAudit()
	if err != nil {
		return result{}, err
	}
	env.finish()
	return result{env: env, b: b, rep: tabulate(p, scenarios, results), audit: audit, profiles: profiles}, nil
}

// handWritten starts the part of the -out file that the benchmark keeps as it is when it rewrites
// the file.
const handWritten = "<!-- Written by hand: go run ./bench keeps everything from this line on. -->"

// sameFile reports whether paths a and b name the same file, existing or
// not.
func sameFile(a, b string) bool {
	if fa, err := os.Stat(a); err == nil {
		if fb, err := os.Stat(b); err == nil {
			return os.SameFile(fa, fb)
		}
	}
	absA, errA := filepath.Abs(a)
	absB, errB := filepath.Abs(b)
	return errA == nil && errB == nil && absA == absB
}

// profile fetches a 10-second CPU profile of t's process under non-stream or
// streaming load at concurrency conc and returns the top functions as go tool
// pprof prints them.
func (b *bench) profile(t *target, caddyBin string, stream bool, conc int) (profile, error) {
	load, body, chunks := fmt.Sprintf("non-stream c=%d", conc), b.body, 0
	if stream {
		load, body, chunks = fmt.Sprintf("stream 64 chunks c=%d", conc), b.streamBody, 64
	}
	log.Printf("profiling %s, %s", t.name, load)
	file := filepath.Join(b.dir, fmt.Sprintf("%s-%s.pprof", t.proc.name, strings.ReplaceAll(load, " ", "-")))
	done := make(chan sample, 1)
	go func() {
		done <- closedLoop(t.client, t.url, body, stream, chunks, conc, 11*time.Second)
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=10", t.adminPort)
	err := fetch(url, file)
	<-done
	if err != nil {
		return profile{}, err
	}
	top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=15", caddyBin, file).Output()
	if err != nil {
		return profile{}, fmt.Errorf("go tool pprof %s: %w", file, err)
	}
	return profile{title: "CPU profile: " + t.name + ", " + load + ", 10 s", top: string(top)}, nil
}

func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching %s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("fetching %s: %w", url, err)
	}
	return f.Close()
}

// profile is the top of one process's CPU profile.
type profile struct {
	title string
	top   string
}
