//go:build linux

package main

import (
	"bufio"
	"fmt"
	"log"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// targetID names a target; the order is the table's.
type targetID int

const (
	targetDirect targetID = iota
	targetReverseProxy
	targetGateway
	targetGatewayAudit
	targetGatewayAuditNone // llm_audit with bodies none
	targetAuditWriter      // the audit package's writer, run in this process
	targetGatewayKeys      // llm_gateway with a keys block, counters in-process
	targetGatewayKeysRedis // llm_gateway with keys counted in a local redis-server; nil without one
	// HTTP/2 without TLS on both sides (server protocols h1 h2c, transport versions h2c): fresh
	// processes of the open-streams phase only.
	targetReverseProxyH2C
	targetGatewayH2C
	// Routing: llm_gateway with 1 client, 1,000 and 10,000 clients of match regex ^model-N$, and
	// 10,000 of match exact model-N; the model asked for is the last client's.
	targetRoute1
	targetRoute1kRegex
	targetRoute10kRegex
	targetRoute10kExact
	numTargets
)

var targetNames = [numTargets]string{
	"direct (fake upstream)", "reverse_proxy", "llm_gateway", "llm_gateway + audit", "llm_gateway + audit (bodies none)", "audit writer (in-process)",
	"llm_gateway + keys (in-process)", "llm_gateway + keys (Redis store)",
	"reverse_proxy (h2c)", "llm_gateway (h2c)",
	"llm_gateway, 1 client", "llm_gateway, 1,000 clients (regex)", "llm_gateway, 10,000 clients (regex)", "llm_gateway, 10,000 clients (exact)",
}

// routeModel is the model the routing phase asks for: the last client's of every routing config.
const routeModel = "model-9999"

// target is one endpoint under load.
type target struct {
	id        targetID
	name      string
	url       string   // the chat completions URL
	proc      *process // nil for the direct target: no proxy to charge
	adminPort int
	client    *http.Client
	// body and streamBody are what the target is sent; nil for the bench's default ones.
	body []byte
}

// fakeContent is the assistant text of every answer: 1 KiB, which streams
// cut into 64 chunks of 16 bytes.
var fakeContent = strings.Repeat("The quick brown fox jumps over the lazy dog. ", 23)[:1024]

// Fake upstream settings of the phases (merged into the current ones).
var (
	fakeSteady = `{"chunks":64,"chunk_delay":"0s","content":"` + fakeContent + `"}`
	// Held streams send their first chunk at once and the second only after
	// the phase has cancelled them.
	fakeHold = `{"chunks":2,"chunk_delay":"10m"}`
)

// measurement is what one phase measured at one target in one round.
type measurement struct {
	sample
	cpu     time.Duration // of the proxy process during the phase; 0 for direct
	gc      gcTally       // the proxy's garbage collections during the phase
	rssBase int64         // KiB, before the streams were opened
	rssOpen int64         // KiB, with all of them open
	// goroutines of the proxy before the streams were opened and with all of them open
	goroutinesBase, goroutinesOpen int
	auditRows                      int64 // audit target of the audit phase: rows written for it
	hasAudit                       bool
}

// scenario is one load phase, run at each of its targets every round.
type scenario struct {
	name    string
	fake    string // fake upstream settings
	targets []targetID
	kind    scenarioKind
	// auditCost marks a saturated phase run with audit off, bodies full and bodies none: its
	// checks are the audit's CPU overhead (SPEC §11).
	auditCost bool
	// baseline is the target the "added" latencies are taken over, in the same round.
	baseline targetID
	// keyCost marks the phase run without keys, with keys counted in-process and in Redis: its
	// checks are the p50 the keys add (SPEC §14).
	keyCost bool
	// h2c marks the open-streams phase over HTTP/2 on both sides; routing the phase whose
	// checks are each routing config's CPU per call over the first target's.
	h2c, routing bool
	run          func(*target) (measurement, error)
}

type scenarioKind int

const (
	kindRequests scenarioKind = iota // closed or open loop of whole requests
	kindStreams                      // closed loop of streams: TTFT matters
	kindOpen                         // concurrent open streams: RSS matters
	kindWriter                       // rows committed by the audit writer
)

// bench holds the processes under test.
type bench struct {
	dir      string
	caddyBin string
	plan     plan
	pin      pinning
	fakeProc *process
	fakePort int
	fake     fakeControl
	targets  [numTargets]*target
	auditDB  string
	// auditNoneDB is the database of the bodies-none target, whose rows are not counted.
	auditNoneDB string
	// auditSent counts the answers the audit target gave, each of which
	// must become one row.
	auditSent int64
	// heapProfile, when set, is where the open-streams phase saves a heap
	// profile of the gateway with all streams open (the last round's wins);
	// goroutines is that process's goroutine count at the same moment.
	heapProfile   string
	goroutines    int
	goroutinesH2C int // the same, of the h2c phase's gateway
	// auditResponse is the fake upstream's answer to body, the response
	// of every row of the audit writer phase; writerRuns numbers its
	// databases.
	auditResponse []byte
	writerRuns    int
	// redisProc is the redis-server of targetGatewayKeysRedis, keyStore its store URL; notes are
	// said in the report (such as that target being skipped).
	redisProc *process
	keyStore  string
	notes     []string

	body, streamBody []byte
}

func newBench(dir, caddyBin, fakeBin string, p plan, pin pinning) (*bench, error) {
	b := &bench{
		dir: dir, caddyBin: caddyBin, plan: p, pin: pin,
		auditDB:     filepath.Join(dir, "audit", "record.db"),
		auditNoneDB: filepath.Join(dir, "audit-none", "record.db"),
		body:        chatBody("gpt-4o", 2048, false),
		streamBody:  chatBody("gpt-4o", 2048, true),
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	b.fakePort = port
	addr := "127.0.0.1:" + strconv.Itoa(port)
	// -h2c: HTTP/1.1 and HTTP/2 with prior knowledge on the one port, for the h2c phase.
	b.fakeProc, err = startProcess(dir, "fakeupstream", pin.command(false, fakeBin, "-addr", addr, "-name", "fake", "-h2c"))
	if err != nil {
		return nil, err
	}
	b.fake = fakeControl{base: "http://" + addr}
	if err := b.fakeProc.waitHTTP(b.fake.base+"/_fake/stats", 10*time.Second); err != nil {
		b.close()
		return nil, err
	}
	rp, rport, ok, err := startRedis(pin, dir)
	if err != nil {
		b.close()
		return nil, err
	}
	if ok {
		b.redisProc, b.keyStore = rp, fmt.Sprintf("redis://127.0.0.1:%d/0", rport)
	} else {
		b.notes = append(b.notes, "redis-server is not installed (apt-get install redis-server): the target "+
			targetNames[targetGatewayKeysRedis]+" was skipped.")
		log.Print("redis-server not found: skipping the keys target with the Redis store")
	}
	// Every target exists from the start, so that scenarios can name them; the proxies of the
	// phases that run are started by start.
	for id := range b.targets {
		if id == int(targetGatewayKeysRedis) && !ok {
			continue
		}
		t := &target{id: targetID(id), name: targetNames[id], client: newClient(256, false)}
		switch targetID(id) {
		case targetDirect:
			t.url = b.fake.base + "/v1/chat/completions"
		case targetReverseProxyH2C, targetGatewayH2C:
			t.client = newClient(256, true)
		case targetRoute1, targetRoute1kRegex, targetRoute10kRegex, targetRoute10kExact:
			t.body = chatBody(routeModel, 2048, false)
		}
		b.targets[id] = t
	}
	return b, nil
}

// start starts the Caddy processes of the phases to run, except those of the open-streams phases,
// which start fresh ones of their own.
func (b *bench) start(scenarios []scenario) error {
	for _, s := range scenarios {
		if s.kind == kindOpen {
			continue
		}
		for _, id := range s.targets {
			t := b.targets[id]
			if t.proc != nil || id == targetDirect || id == targetAuditWriter {
				continue
			}
			if s.routing {
				if err := b.noteStartUp(id); err != nil {
					return err
				}
			}
			ft, err := b.startProxy(id, "", b.proxyConfig(id))
			if err != nil {
				return err
			}
			t.proc, t.url, t.adminPort = ft.proc, ft.url, ft.adminPort
		}
	}
	return nil
}

// noteStartUp notes how long target id's Caddy takes to start and its RSS then, from a process
// of its own with the runtime's default GC (the measured one has steadyGC, whose heap holds
// the start-up's garbage until it reaches the limit).
func (b *bench) noteStartUp(id targetID) error {
	c := b.proxyConfig(id)
	c.steadyGC = false
	started := time.Now()
	t, err := b.startProxy(id, "-startup", c)
	if err != nil {
		return err
	}
	took := time.Since(started)
	rss, err := rssKiB(t.proc.pid())
	t.proc.stop(10 * time.Second)
	if err != nil {
		return err
	}
	b.notes = append(b.notes, fmt.Sprintf("%s: started (config adapted, provisioned, answering) in %v, RSS %d MiB.",
		t.name, took.Round(10*time.Millisecond), rss>>10))
	return nil
}

// proxyConfig is the config of target id's Caddy process.
func (b *bench) proxyConfig(id targetID) proxyConfig {
	switch id {
	case targetReverseProxy:
		return proxyConfig{kind: kindReverseProxy}
	case targetReverseProxyH2C:
		return proxyConfig{kind: kindReverseProxy, h2c: true}
	case targetGatewayH2C:
		return proxyConfig{kind: kindGateway, h2c: true}
	case targetGatewayAudit:
		return proxyConfig{kind: kindGatewayAudit, auditDB: b.auditDB}
	case targetGatewayAuditNone:
		return proxyConfig{kind: kindGatewayAuditNone, auditDB: b.auditNoneDB}
	case targetGatewayKeys:
		return proxyConfig{kind: kindGatewayKeys}
	case targetGatewayKeysRedis:
		return proxyConfig{kind: kindGatewayKeys, keyStore: b.keyStore}
	// The routing targets compare configs whose live heaps differ by tens of MB. With the
	// default GOGC the larger one collects several times less often and comes out cheaper per
	// call for that alone; steadyGC makes them collect alike, so the ratio is routing's.
	case targetRoute1:
		return proxyConfig{kind: kindGateway, clients: 1, steadyGC: true}
	case targetRoute1kRegex:
		return proxyConfig{kind: kindGateway, clients: 1000, steadyGC: true}
	case targetRoute10kRegex:
		return proxyConfig{kind: kindGateway, clients: 10000, steadyGC: true}
	case targetRoute10kExact:
		return proxyConfig{kind: kindGateway, clients: 10000, exact: true, steadyGC: true}
	}
	return proxyConfig{kind: kindGateway}
}

// startProxy starts a Caddy process of config c for target id; suffix tells apart the fresh
// processes of the open-streams phases and the start-up probes. The process must run on the
// proxy CPU.
func (b *bench) startProxy(id targetID, suffix string, c proxyConfig) (*target, error) {
	name := strings.NewReplacer(" ", "", "+", "-", "_", "-", ",", "", "(", "", ")", "").Replace(targetNames[id]) + suffix
	p, port, admin, err := startCaddy(b.pin, b.dir, name, b.caddyBin, c, b.fakePort)
	if err != nil {
		return nil, err
	}
	if b.pin.pinned() {
		got, err := affinity(p.pid())
		if err != nil || got != cpuList(b.pin.proxy) {
			p.stop(time.Second)
			return nil, fmt.Errorf("%s runs on CPUs %q, not the proxy's %s (%v)", name, got, cpuList(b.pin.proxy), err)
		}
	}
	return &target{
		id: id, name: targetNames[id], proc: p, adminPort: admin,
		url:    fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", port),
		client: newClient(256, id == targetReverseProxyH2C || id == targetGatewayH2C),
	}, nil
}

func (b *bench) close() {
	for _, t := range b.targets {
		if t != nil && t.proc != nil {
			t.proc.stop(10 * time.Second)
		}
	}
	if b.fakeProc != nil {
		b.fakeProc.stop(5 * time.Second)
	}
	if b.redisProc != nil {
		b.redisProc.stop(5 * time.Second)
	}
}

func (b *bench) scenarios() []scenario {
	p := b.plan
	all := []targetID{targetDirect, targetReverseProxy, targetGateway, targetGatewayAudit}
	auditCost := []targetID{targetGateway, targetGatewayAudit, targetGatewayAuditNone}
	keyCost := []targetID{targetGateway, targetGatewayKeys}
	if b.targets[targetGatewayKeysRedis] != nil {
		keyCost = append(keyCost, targetGatewayKeysRedis)
	}
	requests := func(conc int, d time.Duration) func(*target) (measurement, error) {
		return func(t *target) (measurement, error) {
			body := t.body
			if body == nil {
				body = b.body
			}
			return b.measure(t, d, func(d time.Duration) sample { return closedLoop(t.client, t.url, body, false, 0, conc, d) })
		}
	}
	streams := func(t *target) (measurement, error) {
		return b.measure(t, p.streamFor, func(d time.Duration) sample {
			return closedLoop(t.client, t.url, b.streamBody, true, 64, p.streamConc, d)
		})
	}
	return []scenario{
		{name: "non-stream 2 KB, c=1", fake: fakeSteady, targets: all, kind: kindRequests, run: requests(1, p.c1For)},
		{name: "non-stream 2 KB, c=32", fake: fakeSteady, targets: all, kind: kindRequests, run: requests(32, p.c32For)},
		{name: fmt.Sprintf("stream 64 chunks, c=%d", p.streamConc), fake: fakeSteady, targets: all, kind: kindStreams, run: streams},
		{
			name: fmt.Sprintf("%d open streams", p.openStreams), fake: fakeHold,
			targets: []targetID{targetReverseProxy, targetGateway}, kind: kindOpen,
			run: b.openStreams,
		},
		// HTTP/2 on both sides: the load client's streams share connections (at most 250 streams
		// each, Go's server default), and so do the proxy's to the fake upstream.
		{
			name: fmt.Sprintf("%d open streams, h2c on both sides", p.openStreams), fake: fakeHold,
			targets: []targetID{targetReverseProxyH2C, targetGatewayH2C}, kind: kindOpen, h2c: true,
			run: b.openStreams,
		},
		{
			name: fmt.Sprintf("non-stream %d req/s, audit off/on", p.rate), fake: fakeSteady,
			targets: []targetID{targetGateway, targetGatewayAudit}, kind: kindRequests,
			run: b.rateLimited,
		},
		// The audit's cost where it shows: saturated, every call's row and bodies on the CPU that
		// serves the calls (the fixed-rate phase above leaves the CPU idle part of the time).
		{name: "audit saturated: non-stream 2 KB, c=32", fake: fakeSteady, targets: auditCost, kind: kindRequests, auditCost: true, run: requests(32, p.c32For)},
		{name: fmt.Sprintf("audit saturated: stream 64 chunks, c=%d", p.streamConc), fake: fakeSteady, targets: auditCost, kind: kindStreams, auditCost: true, run: streams},
		// What the keys block adds to one call, and the shared store on top (two loopback round
		// trips to Redis per call): latency at c=1, over the same gateway without keys.
		{
			name: "keys: non-stream 2 KB, c=1", fake: fakeSteady, targets: keyCost, kind: kindRequests,
			baseline: targetGateway, keyCost: true, run: requests(1, p.keysFor),
		},
		// Routing cost against config size: the model asked for is the last client's, so a router
		// that tries the rules in order evaluates all of them on every call.
		{
			name: "routing: non-stream 2 KB, c=16, model of the last client", fake: fakeSteady,
			targets: []targetID{targetRoute1, targetRoute1kRegex, targetRoute10kRegex, targetRoute10kExact}, kind: kindRequests,
			baseline: targetRoute1, routing: true, run: requests(16, p.routeFor),
		},
		{
			name: "audit writer sustained rows/s, bodies 2 KB + 1 KB", fake: fakeSteady,
			targets: []targetID{targetAuditWriter}, kind: kindWriter,
			run: b.auditWriter,
		},
	}
}

// measure runs load for the warm-up (connections made, lazily built state built, the heap grown
// to its working size: the same load as measured, so that the measured part starts steady), then
// for d, and charges t's process the CPU it used meanwhile, deferred work (such as audit commits)
// included.
func (b *bench) measure(t *target, d time.Duration, load func(time.Duration) sample) (measurement, error) {
	warm := load(b.plan.warmFor)
	if warm.errs > 0 {
		return measurement{}, fmt.Errorf("warm-up %s: %d errors, first: %w", t.url, warm.errs, warm.firstErr)
	}
	if _, err := b.gc(t); err != nil { // the warm-up's collections
		return measurement{}, err
	}
	before, err := b.cpu(t)
	if err != nil {
		return measurement{}, err
	}
	m := measurement{sample: load(d)}
	time.Sleep(b.plan.settle) // deferred work has no signal to await
	after, err := b.cpu(t)
	if err != nil {
		return measurement{}, err
	}
	m.cpu = after.since(before)
	if m.gc, err = b.gc(t); err != nil {
		return measurement{}, err
	}
	if t.id == targetGatewayAudit {
		b.auditSent += int64(m.ok) + int64(warm.ok)
	}
	return m, nil
}

// cpu samples the CPU time of t's process; direct, which has none here, samples as zero.
func (b *bench) cpu(t *target) (cpuSample, error) {
	if t.proc == nil {
		return cpuSample{}, nil
	}
	return readCPU(t.proc.pid())
}

// gc returns the collections t's process logged since the last call; none for direct.
func (b *bench) gc(t *target) (gcTally, error) {
	if t.proc == nil {
		return gcTally{}, nil
	}
	return t.proc.gcSince()
}

// rateLimited runs the fixed-rate phase; at the audit target it also counts
// the rows the phase added against the answers it got.
func (b *bench) rateLimited(t *target) (measurement, error) {
	var before int64
	if t.id == targetGatewayAudit {
		var err error
		if before, err = settledRows(b.auditDB, b.auditSent); err != nil {
			return measurement{}, err
		}
	}
	sentBefore := b.auditSent
	m, err := b.measure(t, b.plan.rateFor, func(d time.Duration) sample { return openLoop(t.client, t.url, b.body, b.plan.rate, d, 128) })
	if err != nil || t.id != targetGatewayAudit {
		return m, err
	}
	warm := b.auditSent - sentBefore - int64(m.ok)
	after, err := settledRows(b.auditDB, before+warm+int64(m.ok))
	if err != nil {
		return m, err
	}
	m.auditRows, m.hasAudit = after-before-warm, true
	return m, nil
}

// openStreams runs the open-streams phase at a fresh process of t's kind,
// so that its RSS starts from a warmed-up but otherwise unused heap.
func (b *bench) openStreams(t *target) (measurement, error) {
	ft, err := b.startProxy(t.id, "-open", b.proxyConfig(t.id))
	if err != nil {
		return measurement{}, err
	}
	defer ft.proc.stop(10 * time.Second)
	h2Before, err := b.fake.http2()
	if err != nil {
		return measurement{}, err
	}
	// Non-stream answers are instant whatever the held-stream settings.
	if err := warmUp(ft.client, ft.url, b.body, false, 8, 64); err != nil {
		return measurement{}, err
	}
	var m measurement
	pid := ft.proc.pid()
	if m.rssBase, err = rssKiB(pid); err != nil {
		return m, err
	}
	if m.goroutinesBase, err = goroutines(ft.adminPort); err != nil {
		return m, err
	}
	before, err := readCPU(pid)
	if err != nil {
		return m, err
	}
	var rssErr error
	m.sample = openStreams(ft.client, ft.url, b.streamBody, b.plan.openStreams, 256, time.Minute, time.Second, func() {
		if m.rssOpen, rssErr = rssKiB(pid); rssErr != nil {
			return
		}
		if m.goroutinesOpen, rssErr = goroutines(ft.adminPort); rssErr != nil {
			return
		}
		if b.heapProfile != "" && (t.id == targetGateway || t.id == targetGatewayH2C) {
			rssErr = b.snapshot(ft.adminPort, t.id == targetGatewayH2C)
		}
	})
	if rssErr != nil {
		return m, rssErr
	}
	after, err := readCPU(pid)
	if err != nil {
		return m, err
	}
	m.cpu = after.since(before)
	// The next phase must not start while these streams wind down.
	if err := b.fake.waitIdle(30 * time.Second); err != nil {
		return m, err
	}
	// An h2c phase that fell back to HTTP/1.1 to the upstream would measure the wrong thing.
	if t.id == targetReverseProxyH2C || t.id == targetGatewayH2C {
		h2After, err := b.fake.http2()
		if err != nil {
			return m, err
		}
		if want := int64(64 + m.ok); h2After-h2Before < want {
			return m, fmt.Errorf("the fake upstream saw %d HTTP/2 requests from %s, want at least %d: the proxy did not speak h2c to it", h2After-h2Before, t.name, want)
		}
	}
	log.Printf("  RSS %d → %d KiB, goroutines %d → %d", m.rssBase, m.rssOpen, m.goroutinesBase, m.goroutinesOpen)
	return m, nil
}

// snapshot saves the heap profile of the process whose admin endpoint is on adminPort, and
// its goroutine count; h2c: of the gateway of the h2c phase, in heapProfileH2C.
func (b *bench) snapshot(adminPort int, h2c bool) error {
	file, n := b.heapProfile, &b.goroutines
	if h2c {
		file, n = heapProfileH2C(b.heapProfile), &b.goroutinesH2C
	}
	if err := fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap", adminPort), file); err != nil {
		return err
	}
	var err error
	*n, err = goroutines(adminPort)
	return err
}

// heapProfileH2C is where the h2c open-streams phase saves the gateway's heap profile.
func heapProfileH2C(heapProfile string) string {
	return strings.TrimSuffix(heapProfile, ".heap") + "-h2c.heap"
}

// goroutines returns the goroutine count of the Caddy process whose admin endpoint is on
// adminPort.
func goroutines(adminPort int) (int, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", adminPort))
	if err != nil {
		return 0, fmt.Errorf("fetching goroutine profile: %w", err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	// The first line reads "goroutine profile: total N".
	_, n, _ := strings.Cut(strings.TrimSpace(line), "total ")
	c, err := strconv.Atoi(n)
	if err != nil {
		return 0, fmt.Errorf("goroutine profile: unexpected first line %q", line)
	}
	return c, nil
}

// auditSummary is the whole run's audit accounting.
type auditSummary struct {
	sent, rows int64
}

// finishAudit stops the audit target gracefully, which drains its queue,
// and counts every row it wrote against every answer it gave.
func (b *bench) finishAudit() (auditSummary, error) {
	t := b.targets[targetGatewayAudit]
	if t.proc == nil {
		return auditSummary{}, nil // no phase ran at it
	}
	t.proc.stop(30 * time.Second)
	rows, err := auditRows(b.auditDB)
	return auditSummary{sent: b.auditSent, rows: rows}, err
}
