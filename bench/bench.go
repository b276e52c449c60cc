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
	numTargets
)

var targetNames = [numTargets]string{
	"direct (fake upstream)", "reverse_proxy", "llm_gateway", "llm_gateway + audit", "llm_gateway + audit (bodies none)", "audit writer (in-process)",
	"llm_gateway + keys (in-process)", "llm_gateway + keys (Redis store)",
}

// target is one endpoint under load.
type target struct {
	id        targetID
	name      string
	url       string   // the chat completions URL
	proc      *process // nil for the direct target: no proxy to charge
	adminPort int
	client    *http.Client
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
	cpu       time.Duration // of the proxy process during the phase; 0 for direct
	rssBase   int64         // KiB, before the streams were opened
	rssOpen   int64         // KiB, with all of them open
	auditRows int64         // audit target of the audit phase: rows written for it
	hasAudit  bool
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
	run     func(*target) (measurement, error)
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
	heapProfile string
	goroutines  int
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

func newBench(dir, caddyBin, fakeBin string, p plan) (*bench, error) {
	b := &bench{
		dir: dir, caddyBin: caddyBin, plan: p,
		auditDB:     filepath.Join(dir, "audit", "record.db"),
		auditNoneDB: filepath.Join(dir, "audit-none", "record.db"),
		body:        chatBody(2048, false),
		streamBody:  chatBody(2048, true),
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	b.fakePort = port
	addr := "127.0.0.1:" + strconv.Itoa(port)
	b.fakeProc, err = startProcess(dir, "fakeupstream", fakeBin, "-addr", addr, "-name", "fake")
	if err != nil {
		return nil, err
	}
	b.fake = fakeControl{base: "http://" + addr}
	if err := b.fakeProc.waitHTTP(b.fake.base+"/_fake/stats", 10*time.Second); err != nil {
		b.close()
		return nil, err
	}
	b.targets[targetDirect] = &target{id: targetDirect, url: b.fake.base + "/v1/chat/completions"}
	b.targets[targetAuditWriter] = &target{id: targetAuditWriter}
	rp, rport, ok, err := startRedis(dir)
	if err != nil {
		b.close()
		return nil, err
	}
	kinds := map[targetID]proxyKind{
		targetReverseProxy: kindReverseProxy, targetGateway: kindGateway, targetGatewayAudit: kindGatewayAudit,
		targetGatewayAuditNone: kindGatewayAuditNone, targetGatewayKeys: kindGatewayKeys,
	}
	if ok {
		b.redisProc, b.keyStore = rp, fmt.Sprintf("redis://127.0.0.1:%d/0", rport)
		kinds[targetGatewayKeysRedis] = kindGatewayKeys
	} else {
		b.notes = append(b.notes, "redis-server is not installed (apt-get install redis-server): the target "+
			targetNames[targetGatewayKeysRedis]+" was skipped.")
		log.Print("redis-server not found: skipping the keys target with the Redis store")
	}
	for id, kind := range kinds {
		t, err := b.startProxy(id, kind, "")
		if err != nil {
			b.close()
			return nil, err
		}
		b.targets[id] = t
	}
	for id, t := range b.targets {
		if t == nil {
			continue
		}
		t.id, t.name = targetID(id), targetNames[id]
		if t.client == nil {
			t.client = newClient(256)
		}
	}
	return b, nil
}

// startProxy starts a Caddy process of kind; suffix tells apart the fresh
// processes of the open-streams phase.
func (b *bench) startProxy(id targetID, kind proxyKind, suffix string) (*target, error) {
	name := strings.NewReplacer(" ", "", "+", "-", "_", "-").Replace(targetNames[id]) + suffix
	db := b.auditDB
	if kind == kindGatewayAuditNone {
		db = b.auditNoneDB
	}
	store := ""
	if id == targetGatewayKeysRedis {
		store = b.keyStore
	}
	p, port, admin, err := startCaddy(b.dir, name, b.caddyBin, kind, b.fakePort, db, store)
	if err != nil {
		return nil, err
	}
	return &target{
		id: id, name: targetNames[id], proc: p, adminPort: admin,
		url:    fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", port),
		client: newClient(256),
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
	return []scenario{
		{
			name: "non-stream 2 KB, c=1", fake: fakeSteady, targets: all, kind: kindRequests,
			run: func(t *target) (measurement, error) {
				return b.measure(t, 1, func() sample { return closedLoop(t.client, t.url, b.body, false, 0, 1, p.c1For) })
			},
		},
		{
			name: "non-stream 2 KB, c=32", fake: fakeSteady, targets: all, kind: kindRequests,
			run: func(t *target) (measurement, error) {
				return b.measure(t, 32, func() sample { return closedLoop(t.client, t.url, b.body, false, 0, 32, p.c32For) })
			},
		},
		{
			name: fmt.Sprintf("stream 64 chunks, c=%d", p.streamConc), fake: fakeSteady, targets: all, kind: kindStreams,
			run: func(t *target) (measurement, error) {
				return b.measure(t, p.streamConc, func() sample {
					return closedLoop(t.client, t.url, b.streamBody, true, 64, p.streamConc, p.streamFor)
				})
			},
		},
		{
			name: fmt.Sprintf("%d open streams", p.openStreams), fake: fakeHold,
			targets: []targetID{targetReverseProxy, targetGateway}, kind: kindOpen,
			run: b.openStreams,
		},
		{
			name: fmt.Sprintf("non-stream %d req/s, audit off/on", p.rate), fake: fakeSteady,
			targets: []targetID{targetGateway, targetGatewayAudit}, kind: kindRequests,
			run: b.rateLimited,
		},
		// The audit's cost where it shows: saturated, every call's row and bodies on the CPU that
		// serves the calls (the fixed-rate phase above leaves the CPU idle part of the time).
		{
			name: "audit saturated: non-stream 2 KB, c=32", fake: fakeSteady, targets: auditCost, kind: kindRequests, auditCost: true,
			run: func(t *target) (measurement, error) {
				return b.measure(t, 32, func() sample { return closedLoop(t.client, t.url, b.body, false, 0, 32, p.c32For) })
			},
		},
		{
			name: fmt.Sprintf("audit saturated: stream 64 chunks, c=%d", p.streamConc), fake: fakeSteady, targets: auditCost, kind: kindStreams, auditCost: true,
			run: func(t *target) (measurement, error) {
				return b.measure(t, p.streamConc, func() sample {
					return closedLoop(t.client, t.url, b.streamBody, true, 64, p.streamConc, p.streamFor)
				})
			},
		},
		// What the keys block adds to one call, and the shared store on top (two loopback round
		// trips to Redis per call): latency at c=1, over the same gateway without keys.
		{
			name: "keys: non-stream 2 KB, c=1", fake: fakeSteady, targets: keyCost, kind: kindRequests,
			baseline: targetGateway, keyCost: true,
			run: func(t *target) (measurement, error) {
				return b.measure(t, 1, func() sample { return closedLoop(t.client, t.url, b.body, false, 0, 1, p.c1For) })
			},
		},
		{
			name: "audit writer sustained rows/s, bodies 2 KB + 1 KB", fake: fakeSteady,
			targets: []targetID{targetAuditWriter}, kind: kindWriter,
			run: b.auditWriter,
		},
	}
}

// measure warms t up, then runs load and charges t's process the CPU it
// used meanwhile, deferred work (such as audit commits) included.
func (b *bench) measure(t *target, conc int, load func() sample) (measurement, error) {
	if err := warmUp(t.client, t.url, b.body, false, conc, 2*conc+8); err != nil {
		return measurement{}, err
	}
	before, err := b.cpu(t)
	if err != nil {
		return measurement{}, err
	}
	m := measurement{sample: load()}
	time.Sleep(b.plan.settle) // deferred work has no signal to await
	after, err := b.cpu(t)
	if err != nil {
		return measurement{}, err
	}
	m.cpu = after - before
	if t.id == targetGatewayAudit {
		b.auditSent += int64(m.ok) + int64(2*conc+8)
	}
	return m, nil
}

func (b *bench) cpu(t *target) (time.Duration, error) {
	if t.proc == nil {
		return 0, nil
	}
	return cpuTime(t.proc.pid())
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
	m, err := b.measure(t, 16, func() sample { return openLoop(t.client, t.url, b.body, b.plan.rate, b.plan.rateFor, 128) })
	if err != nil || t.id != targetGatewayAudit {
		return m, err
	}
	warm := int64(2*16 + 8)
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
	kind := kindReverseProxy
	if t.id == targetGateway {
		kind = kindGateway
	}
	ft, err := b.startProxy(t.id, kind, "-open")
	if err != nil {
		return measurement{}, err
	}
	defer ft.proc.stop(10 * time.Second)
	// Non-stream answers are instant whatever the held-stream settings.
	if err := warmUp(ft.client, ft.url, b.body, false, 8, 64); err != nil {
		return measurement{}, err
	}
	var m measurement
	pid := ft.proc.pid()
	if m.rssBase, err = rssKiB(pid); err != nil {
		return m, err
	}
	before, err := cpuTime(pid)
	if err != nil {
		return m, err
	}
	var rssErr error
	m.sample = openStreams(ft.client, ft.url, b.streamBody, b.plan.openStreams, 256, time.Minute, time.Second, func() {
		m.rssOpen, rssErr = rssKiB(pid)
		if b.heapProfile != "" && t.id == targetGateway && rssErr == nil {
			rssErr = b.snapshot(ft.adminPort)
		}
	})
	if rssErr != nil {
		return m, rssErr
	}
	after, err := cpuTime(pid)
	if err != nil {
		return m, err
	}
	m.cpu = after - before
	// The next phase must not start while these streams wind down.
	if err := b.fake.waitIdle(30 * time.Second); err != nil {
		return m, err
	}
	log.Printf("  RSS %d → %d KiB", m.rssBase, m.rssOpen)
	return m, nil
}

// snapshot saves the heap profile and goroutine count of the process whose
// admin endpoint is on adminPort.
func (b *bench) snapshot(adminPort int) error {
	base := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", adminPort)
	if err := fetch(base+"heap", b.heapProfile); err != nil {
		return err
	}
	resp, err := http.Get(base + "goroutine?debug=1")
	if err != nil {
		return fmt.Errorf("fetching goroutine profile: %w", err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	// The first line reads "goroutine profile: total N".
	_, n, _ := strings.Cut(strings.TrimSpace(line), "total ")
	if b.goroutines, err = strconv.Atoi(n); err != nil {
		return fmt.Errorf("goroutine profile: unexpected first line %q", line)
	}
	return nil
}

// auditSummary is the whole run's audit accounting.
type auditSummary struct {
	sent, rows int64
}

// finishAudit stops the audit target gracefully, which drains its queue,
// and counts every row it wrote against every answer it gave.
func (b *bench) finishAudit() (auditSummary, error) {
	t := b.targets[targetGatewayAudit]
	t.proc.stop(30 * time.Second)
	rows, err := auditRows(b.auditDB)
	return auditSummary{sent: b.auditSent, rows: rows}, err
}
