//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// machine describes where and when the benchmark ran.
type machine struct {
	start, end         time.Time
	cpuModel, kernel   string
	goVersion          string
	loadStart, loadEnd string
}

func describeMachine() *machine {
	m := &machine{start: time.Now(), cpuModel: "unknown", loadStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if b, err := exec.Command("go", "version").Output(); err == nil {
		m.goVersion = strings.TrimSpace(string(b))
	}
	return m
}

func (m *machine) finish() {
	m.end = time.Now()
	m.loadEnd = loadAvg()
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// figures are the medians over rounds of one target in one scenario; NaN-free
// by construction: ok is false when the figure does not apply.
type figures struct {
	cpuPer, rps, p50, p99, addedP50, ttft, addedTTFT, rssPer figure
	goroutinesPer                                            figure // open streams
	// gcPer is the CPU of the process's garbage collections per call (gctrace.go).
	gcPer figure
	// cpuRounds is the CPU per call of each round (not ok where the round had no answer), for
	// ratios taken round by round.
	cpuRounds  []figure
	errs       int
	rows, sent int64 // audit phase
	hasAudit   bool
}

// figure is one median; ok is false when it does not apply to the target.
type figure struct {
	v  float64
	ok bool
}

func median(xs []float64) figure {
	if len(xs) == 0 {
		return figure{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return figure{s[n/2], true}
	}
	return figure{(s[n/2-1] + s[n/2]) / 2, true}
}

// quantile returns the q-quantile of ds in microseconds (nearest rank).
func quantile(ds []time.Duration, q float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(int(q*float64(len(s))), len(s)-1)
	return float64(s[i]) / float64(time.Microsecond)
}

// summarise turns the rounds of one scenario into figures per target. Added
// latencies are taken against the scenario's baseline target (the direct one
// unless it says otherwise) in the same round.
func summarise(s scenario, rounds [][]measurement) []figures {
	directAt := slices.Index(s.targets, s.baseline)
	out := make([]figures, len(s.targets))
	for j, id := range s.targets {
		var cpu, gc, rps, p50, p99, add, ttft, addT, rss, gor []float64
		f := &out[j]
		f.cpuRounds = make([]figure, len(rounds[j]))
		for r, m := range rounds[j] {
			f.errs += m.errs
			if m.hasAudit {
				f.hasAudit = true
				f.rows += m.auditRows
				f.sent += int64(m.ok)
			}
			if m.ok == 0 {
				continue
			}
			if id != targetDirect {
				c := float64(m.cpu) / float64(time.Microsecond) / float64(m.ok)
				cpu = append(cpu, c)
				f.cpuRounds[r] = figure{c, true}
				if m.gc.traced {
					gc = append(gc, float64(m.gc.cpu)/float64(time.Microsecond)/float64(m.ok))
				}
			}
			if s.kind == kindWriter {
				rps = append(rps, float64(m.ok)/m.elapsed.Seconds())
				continue
			}
			if s.kind == kindOpen {
				ttft = append(ttft, quantile(m.ttft, 0.5))
				if m.rssOpen > 0 {
					rss = append(rss, float64(m.rssOpen-m.rssBase)/float64(m.ok))
				}
				if m.goroutinesOpen > 0 {
					gor = append(gor, float64(m.goroutinesOpen-m.goroutinesBase)/float64(m.ok))
				}
				continue
			}
			rps = append(rps, float64(m.ok)/m.elapsed.Seconds())
			p50 = append(p50, quantile(m.lat, 0.5))
			p99 = append(p99, quantile(m.lat, 0.99))
			if s.kind == kindStreams {
				ttft = append(ttft, quantile(m.ttft, 0.5))
			}
			if directAt < 0 || id == s.baseline || r >= len(rounds[directAt]) || rounds[directAt][r].ok == 0 {
				continue
			}
			d := rounds[directAt][r]
			add = append(add, quantile(m.lat, 0.5)-quantile(d.lat, 0.5))
			if s.kind == kindStreams {
				addT = append(addT, quantile(m.ttft, 0.5)-quantile(d.ttft, 0.5))
			}
		}
		f.cpuPer, f.gcPer, f.rps, f.p50, f.p99 = median(cpu), median(gc), median(rps), median(p50), median(p99)
		f.addedP50, f.ttft, f.addedTTFT, f.rssPer, f.goroutinesPer = median(add), median(ttft), median(addT), median(rss), median(gor)
	}
	return out
}

func (f figure) format(prec int) string {
	if !f.ok {
		return "—"
	}
	return fmt.Sprintf("%.*f", prec, f.v)
}

func (f figure) signed(prec int) string {
	if !f.ok {
		return "—"
	}
	return fmt.Sprintf("%+.*f", prec, f.v)
}

// report is one run's figures as the cells of its two tables.
type report struct {
	results [][]string // one row per phase and target, resultHeader's columns
	checks  [][]string // one row per check, checkHeader's columns
	writer  figures    // of the audit writer phase, if it ran
	// cpuRatios are the CPU-per-call ratios among the checks, by check name: what -repeat
	// compares between runs.
	cpuRatios []namedFigure
}

// namedFigure is one figure of a run, named as its check is.
type namedFigure struct {
	name string
	v    figure
}

var (
	resultHeader = []string{"Phase", "Target", "CPU µs/req", "GC µs/req", "req/s", "p50", "p99", "added p50", "TTFT p50", "added TTFT", "RSS KiB/stream", "errors"}
	checkHeader  = []string{"Check", "Measured", "Limit", "Pass"}
)

// tabulate summarises the rounds into the run's tables: the results and
// the acceptance checks of SPEC.md §11.
func tabulate(p plan, scenarios []scenario, results [][][]measurement) report {
	var rep report
	all := make([][]figures, len(scenarios))
	for i, s := range scenarios {
		all[i] = summarise(s, results[i])
		for j, id := range s.targets {
			f := all[i][j]
			errs := fmt.Sprint(f.errs)
			if f.hasAudit {
				errs += fmt.Sprintf(" (%d dropped)", f.sent-f.rows)
			}
			rep.results = append(rep.results, []string{
				s.name, targetNames[id], f.cpuPer.format(1), f.gcPer.format(1), f.rps.format(0), f.p50.format(0), f.p99.format(0),
				f.addedP50.signed(0), f.ttft.format(0), f.addedTTFT.signed(0), f.rssPer.format(1), errs,
			})
		}
	}

	fig := func(i int, id targetID) figures {
		if j := slices.Index(scenarios[i].targets, id); j >= 0 {
			return all[i][j]
		}
		return figures{}
	}
	ratio := func(a, b figure) figure {
		if !a.ok || !b.ok || b.v == 0 {
			return figure{}
		}
		return figure{a.v / b.v, true}
	}
	check := func(name string, got figure, prec int, limit string, pass bool) {
		mark := "yes"
		if !got.ok {
			mark = "n/a"
		} else if !pass {
			mark = "**no**"
		}
		rep.checks = append(rep.checks, []string{name, got.format(prec), limit, mark})
	}
	// cpuCheck is a check of a CPU-per-call ratio (limit at most max), also kept for -repeat.
	cpuCheck := func(name string, r figure, max float64) {
		check(name, r, 2, fmt.Sprintf("≤ %.2f", max), r.v <= max)
		rep.cpuRatios = append(rep.cpuRatios, namedFigure{name, r})
	}
	for i, s := range scenarios {
		gw, rp := fig(i, targetGateway), fig(i, targetReverseProxy)
		switch {
		case s.auditCost:
			cpuCheck("CPU/call gateway + audit (bodies full) ÷ gateway, "+s.name, roundRatio(fig(i, targetGatewayAudit), gw), 1.15)
			cpuCheck("CPU/call gateway + audit (bodies none) ÷ gateway, "+s.name, roundRatio(fig(i, targetGatewayAuditNone), gw), 1.05)
		case s.keyCost:
			// Recorded, not limited: the figure SPEC §14 asks to be measured and documented.
			for _, id := range s.targets[1:] {
				check("added p50 µs over llm_gateway without keys, "+targetNames[id]+", "+s.name, fig(i, id).addedP50, 0, "(recorded)", true)
			}
		case s.kind == kindRequests && slices.Contains(s.targets, targetReverseProxy):
			cpuCheck("CPU/request gateway ÷ reverse_proxy, "+s.name, roundRatio(gw, rp), 0.75)
			// Reported, not held to the run-to-run ±3% of the CPU ratios.
			r := ratio(gw.addedP50, rp.addedP50)
			check("added p50 gateway ÷ reverse_proxy, "+s.name, r, 2, "≤ 1.10", r.v <= 1.1)
		case s.kind == kindStreams:
			cpuCheck("CPU/stream gateway ÷ reverse_proxy (flush_interval -1), audit off, "+s.name, roundRatio(gw, rp), 0.85)
			check("added TTFT µs, gateway, "+s.name, gw.addedTTFT, 0, "(reverse_proxy: "+rp.addedTTFT.signed(0)+")", true)
		case s.kind == kindOpen && s.h2c:
			gw, rp = fig(i, targetGatewayH2C), fig(i, targetReverseProxyH2C)
			check("RSS KiB per open stream, gateway, "+s.name, gw.rssPer, 1, "≤ 36", gw.rssPer.v <= 36)
			check("RSS KiB per open stream, reverse_proxy, "+s.name, rp.rssPer, 1, "(recorded)", true)
			check("goroutines per open stream, gateway, "+s.name, gw.goroutinesPer, 2, fmt.Sprintf("(reverse_proxy: %s)", rp.goroutinesPer.format(2)), true)
			check("errors, gateway, "+s.name, figure{float64(gw.errs), true}, 0, "0", gw.errs == 0)
		case s.kind == kindOpen:
			r := ratio(gw.rssPer, rp.rssPer)
			check("RSS per open stream gateway ÷ reverse_proxy, "+s.name, r, 2, "≤ 0.70", r.v <= 0.7)
			check("RSS KiB per open stream, gateway, "+s.name, gw.rssPer, 1, fmt.Sprintf("(reverse_proxy: %s)", rp.rssPer.format(1)), true)
			check("goroutines per open stream, gateway, "+s.name, gw.goroutinesPer, 2, fmt.Sprintf("(reverse_proxy: %s)", rp.goroutinesPer.format(2)), true)
			check("errors, gateway, "+s.name, figure{float64(gw.errs), true}, 0, "0", gw.errs == 0)
		case s.routing:
			base := fig(i, s.targets[0])
			for _, id := range s.targets[1:] {
				r := roundRatio(fig(i, id), base)
				check("CPU/call "+targetNames[id]+" ÷ "+targetNames[s.targets[0]]+", "+s.name, r, 2, "0.95–1.05", r.v >= 0.95 && r.v <= 1.05)
				rep.cpuRatios = append(rep.cpuRatios, namedFigure{rep.checks[len(rep.checks)-1][0], r})
			}
		case s.kind == kindRequests:
			a := fig(i, targetGatewayAudit)
			// Not held to the run-to-run ±3%: at a fixed rate below saturation the proxy idles
			// between calls, and its CPU per call follows how often it wakes, not what it does.
			// The audit's CPU cost is held by the saturated phases (SPEC §11); this phase holds
			// that every row is written at a steady rate.
			r := roundRatio(a, gw)
			if r.ok {
				r.v = (r.v - 1) * 100
			}
			check("audit CPU overhead %, "+s.name, r, 1, "≤ 15", r.v <= 15)
			check("audit rows dropped, "+s.name, figure{float64(a.sent - a.rows), a.hasAudit}, 0, "0", a.sent == a.rows)
			check("achieved req/s with audit, "+s.name, a.rps, 0, fmt.Sprintf("≈ %d", p.rate), a.rps.v >= 0.95*float64(p.rate))
		case s.kind == kindWriter:
			// Not a §11 limit in itself, but the audit phase's rate is one
			// the writer must sustain for zero rows to be dropped.
			wr := fig(i, targetAuditWriter)
			rep.writer = wr
			check(s.name, wr.rps, 0, fmt.Sprintf("≥ %d (the audit phase's rate)", p.rate), wr.rps.v >= float64(p.rate))
		}
	}
	return rep
}

// roundRatio is the median over rounds of a's CPU per call over b's in the same round: the two
// were measured seconds apart, so what drifts slower than a round (other work on the machine)
// cancels out, which a ratio of the two medians does not do.
func roundRatio(a, b figures) figure {
	var rs []float64
	for r := range min(len(a.cpuRounds), len(b.cpuRounds)) {
		if x, y := a.cpuRounds[r], b.cpuRounds[r]; x.ok && y.ok && y.v > 0 {
			rs = append(rs, x.v/y.v)
		}
	}
	return median(rs)
}

// commandLine is how this run was invoked, as the reader would retype it.
func commandLine() string {
	cmd := "go run ./bench"
	if len(os.Args) > 1 {
		cmd += " " + strings.Join(os.Args[1:], " ")
	}
	return cmd
}

// render writes the report. Without an earlier run it is this run alone:
// provenance, the tables and how it was measured. With one (before, the
// Markdown of an earlier report, read from beforePath), the file keeps both
// runs and the command of each: a before → after comparison, this run as
// "After", and the earlier report embedded verbatim as "Before" (its
// headings one level down).
func render(o options, env *machine, b *bench, rep report, audit auditSummary, profiles []profile, before, beforePath string, spread []spreadRow) string {
	var w strings.Builder
	fmt.Fprintf(&w, "# Benchmarks\n\n")
	if before == "" {
		renderRun(&w, 2, env, b, rep, audit, profiles, spread)
		return w.String()
	}
	link := beforePath
	if o.out != "" {
		if rel, err := filepath.Rel(filepath.Dir(o.out), beforePath); err == nil {
			link = rel
		}
	}
	fmt.Fprintf(&w, "Two runs of the project's benchmark (`bench/`) on the same machine: **After**, the latest, and\n")
	fmt.Fprintf(&w, "**Before**, the first full run, kept verbatim in [%s](%s) and repeated below. Each section\n", link, link)
	fmt.Fprintf(&w, "gives the exact command that produced it. The After run regenerates this file, Before included:\n\n")
	fmt.Fprintf(&w, "```sh\n%s\n```\n\n", commandLine())

	fmt.Fprintf(&w, "## Before → after\n\n")
	compare(&w, parseTables(before), rep)

	fmt.Fprintf(&w, "\n## After\n\n")
	renderRun(&w, 3, env, b, rep, audit, profiles, spread)

	fmt.Fprintf(&w, "\n## Before\n\nThe first full run, as [%s](%s) records it.\n", link, link)
	w.WriteString(demote(before))
	return w.String()
}

// renderRun writes one run: its command and machine, the tables, the
// profiles and how it was measured, with section headings at level.
func renderRun(w *strings.Builder, level int, env *machine, b *bench, rep report, audit auditSummary, profiles []profile, spread []spreadRow) {
	p, h := b.plan, strings.Repeat("#", level)
	fmt.Fprintf(w, "Produced by the project's benchmark (`bench/`), run from the repository root:\n\n```sh\n%s\n```\n\n", commandLine())
	fmt.Fprintf(w, "- Date: %s, %s of wall time\n", env.start.Format("2006-01-02 15:04 MST"), env.end.Sub(env.start).Round(time.Second))
	fmt.Fprintf(w, "- Machine: %d CPUs (`nproc`), %s, Linux %s\n", runtime.NumCPU(), env.cpuModel, env.kernel)
	fmt.Fprintf(w, "- Toolchain: %s\n", env.goVersion)
	fmt.Fprintf(w, "- CPUs: %s\n", b.pin.describe())
	fmt.Fprintf(w, "- Load average at start / end: %s / %s\n", env.loadStart, env.loadEnd)
	fmt.Fprintf(w, "- Rounds: %d, targets interleaved and rotated each round; every figure is the median over rounds\n", p.rounds)

	fmt.Fprintf(w, "\n%s Results\n\n", h)
	fmt.Fprintf(w, "Latencies in µs. CPU is the proxy process's time on a CPU (its threads' `/proc/<pid>/task/*/schedstat`, in ns) per request or stream; \"added\" is over the direct upstream in the same round, in the keys phase over `llm_gateway` without keys. The audit writer row counts rows committed per second and the benchmark process's CPU per row.\n\n")
	writeTable(w, resultHeader, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|", rep.results)
	for _, n := range b.notes {
		fmt.Fprintf(w, "\nNote: %s\n", n)
	}
	if wr := rep.writer; wr.rps.ok && wr.cpuPer.ok && wr.cpuPer.v > 0 {
		// Wall-clock rates fall when other work takes the CPUs; CPU per
		// row does not, so give the rate one free core would sustain too.
		fmt.Fprintf(w, "\nAudit writer, bodies %d + %d bytes: **%s rows/s** sustained, %s µs of CPU per row, so about %.0f rows per second of one CPU.\n",
			len(b.body), len(b.auditResponse), wr.rps.format(0), wr.cpuPer.format(1), 1e6/wr.cpuPer.v)
	}

	fmt.Fprintf(w, "\n%s Ratios and acceptance (the project's performance targets)\n\n", h)
	writeTable(w, checkHeader, "|---|--:|--:|:-:|", rep.checks)
	fmt.Fprintf(w, "\nAudit, whole run: %d rows for %d answers of the audit target (counted in SQLite after a graceful stop).\n", audit.rows, audit.sent)
	if len(spread) > 0 {
		fmt.Fprintf(w, "\n%s Run-to-run spread (%d runs back to back, `-repeat %d`)\n\n", h, len(spread[0].values), len(spread[0].values))
		fmt.Fprintf(w, "Each CPU ratio the checks hold, in every run (the tables above are the last run's); the spread is the largest deviation from the median of the runs, held to ±3%%.\n\n")
		writeTable(w, spreadHeader(len(spread[0].values)), "|---|"+strings.Repeat("--:|", len(spread[0].values)+2)+":-:|", spreadCells(spread))
	}

	if len(profiles) > 0 {
		fmt.Fprintf(w, "\n%s Profiles\n", h)
	}
	for _, pr := range profiles {
		fmt.Fprintf(w, "\n%s# %s\n\n```\n%s```\n", h, pr.title, pr.top)
	}

	fmt.Fprintf(w, "\n%s How it is measured\n", h)
	fmt.Fprintf(w, `
- Processes: one fake upstream (`+"`cmd/fakeupstream`"+`) and Caddy processes of the same binary
  (`+"`cmd/caddy`"+`), those of the phases that ran: `+"`reverse_proxy`"+` with `+"`flush_interval -1`"+`, `+"`llm_gateway`"+`, and `+"`llm_gateway`"+`
  with the `+"`llm_audit`"+` app (bodies stored in full, rotation off), and with it storing no bodies
  (`+"`bodies none`"+`, only in the "audit saturated" phases, which repeat non-stream c=32 and streams
  at the three gateway targets to give the audit's CPU overhead where the CPU is saturated). No access logs; admin on its
  own loopback port. Pinning: each Caddy process is started under `+"`taskset -c`"+` on one CPU, the
  fake upstream and redis-server on the others, and this process moves all its threads there
  (`+"`sched_setaffinity`"+`) after building the binaries; the kernel's affinity of each Caddy process
  is checked after its start. CPU is the sum of the process's threads' run time (`+"`/proc/<pid>/task/*/schedstat`"+`, in
  nanoseconds; utime+stime of `+"`/proc/<pid>/stat`"+`, 10 ms ticks, where a thread exited meanwhile)
  read before a phase and %v after it, so deferred work such as audit commits is charged too. Before
  each measurement the phase's own load runs unmeasured for %v (connections, lazily built
  state, the heap at its working size). "GC µs/req" is the part of the CPU the process's
  garbage collections used, as `+"`GODEBUG=gctrace=1`"+` (set for every Caddy process) reports it in
  the log: assists, background and idle marking, and the two stop-the-world phases, summed
  over the collections that ended during the phase; sweeping and allocation are not in it.
- Keys: the "keys" phase runs non-stream c=1 at `+"`llm_gateway`"+` without keys and at two more Caddy
  processes of it with a `+"`keys`"+` block holding the one key every request carries (limits far above
  any phase, so that every call is counted and none refused): counters in-process, and
  `+"`store redis://…`"+` on a `+"`redis-server`"+` the benchmark starts on a loopback port (no persistence)
  and stops at the end; without `+"`redis-server`"+` that target is skipped, with a note. Each
  target runs %v per round.
- Load: a Go client in the benchmark process, keep-alive, loopback only. Non-stream: a 2 KB chat
  request, answers of 1 KiB content; c=1 for %v and c=32 for %v per target and round.
  Streaming: the same request with `+"`\"stream\":true`"+`, 64 content chunks sent back to back, c=%d for
  %v; TTFT is the time to the first data event, latency the time to `+"`[DONE]`"+`. Routing: non-stream c=16 for %v at `+"`llm_gateway`"+` processes
  with 1 client, 1,000 and 10,000 clients of `+"`match regex ^model-N$`"+` and 10,000 of `+"`match exact model-N`"+`,
  all to the fake upstream, asking for the last client's model (`+"`"+routeModel+"`"+`). These processes run
  with `+"`GOGC=off`"+` and `+"`"+steadyGCLimit+"`"+`, so that all four collect when their heap reaches the limit:
  with the default GOGC a config's live heap sets how often it collects, and the 10,000-client
  configs (tens of MB) would come out cheaper per call for that alone. Their start-up notes are
  from a probe process of each config with the default GC.
- Open streams: %d streams (at most 256 being opened at once) whose upstream sends the first chunk
  and then waits; each proxy is a fresh process warmed with 64 requests. RSS is VmRSS of
  `+"`/proc/<pid>/status`"+` with all streams open, minus before, goroutines likewise (the admin
  endpoint's goroutine profile); streams are held 1 s, then cancelled. Once over HTTP/1.1 on both
  sides, once over h2c on both sides: server `+"`protocols h1 h2c`"+`, a load client speaking only
  unencrypted HTTP/2, `+"`transport http { versions h2c }`"+` to the fake upstream, which serves
  HTTP/2 with prior knowledge and counts the HTTP/2 requests it received (the phase fails when
  they fall short of the requests sent).
  An error is a stream that failed to open or ended before the cancel. RLIMIT_NOFILE is raised to
  its hard limit by the benchmark, and the children inherit it.
- Audit: %d req/s open loop (requests sent on schedule from 128 workers, latency counted from the
  scheduled time) for %v; rows counted with SQLite after the phase settled, against answers received.
- Audit writer: the `+"`llm_audit`"+` app run inside the benchmark process, configured as the audit
  target's (bodies full, rotation off, default queue, batch size and flush interval), on a fresh
  database each round; rows go through `+"`App.Acquire`"+` and `+"`Handle.Enqueue`"+` as in the gateway, each
  with the %d-byte request and the fake upstream's %d-byte answer to it as bodies. For %v the
  queue is filled to capacity and awaited (`+"`Writer.Sync`"+`), again and again, so the writer is never
  idle and nothing is dropped; rows/s counts rows committed (`+"`Writer.Written`"+`), CPU is the
  process's (`+"`getrusage`"+`), the writer's plus the producer's small share, nothing else running.
`, p.settle, p.warmFor, p.keysFor, p.c1For, p.c32For, p.streamConc, p.streamFor, p.routeFor, p.openStreams, p.rate, p.rateFor, len(b.body), len(b.auditResponse), p.writerFor)
}

// writeTable writes a Markdown table.
func writeTable(w *strings.Builder, header []string, align string, rows [][]string) {
	fmt.Fprintf(w, "| %s |\n%s\n", strings.Join(header, " | "), align)
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
}

// keptHeading starts the part of the report file that this benchmark does
// not produce (the dashboard's figures, from a Go benchmark): it is carried
// over from the old file when the report is written again.
const keptHeading = "\n## Usage dashboard"

// keepSections returns report followed by the kept part of the file at
// path, if it has one: from the handWritten marker or keptHeading, whichever
// comes first.
func keepSections(path, report string) string {
	old, err := os.ReadFile(path)
	if err != nil {
		return report
	}
	i := -1
	for _, start := range []string{"\n" + handWritten, keptHeading} {
		if j := strings.Index(string(old), start); j >= 0 && (i < 0 || j < i) {
			i = j
		}
	}
	if i < 0 {
		return report
	}
	return strings.TrimRight(report, "\n") + "\n" + string(old[i:])
}
