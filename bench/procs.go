//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/goccy/go-json"
	"github.com/ncruces/go-sqlite3"
)

// gatewayModules must all be listed by a Caddy binary for it to serve every
// target.
var gatewayModules = []string{"http.handlers.llm_gateway", "llm_audit"}

// buildBinaries builds the fake upstream and Caddy (cmd/caddy) into dir,
// unless paths were given, and checks that Caddy has the gateway's modules.
func buildBinaries(repo, dir, caddyBin, fakeBin string) (string, string, error) {
	if fakeBin == "" {
		fakeBin = filepath.Join(dir, "fakeupstream")
		if err := goBuild(repo, fakeBin, "./cmd/fakeupstream"); err != nil {
			return "", "", err
		}
	}
	if caddyBin == "" {
		caddyBin = filepath.Join(dir, "caddy")
		if err := goBuild(repo, caddyBin, "./cmd/caddy"); err != nil {
			return "", "", err
		}
	}
	return caddyBin, fakeBin, checkModules(caddyBin)
}

func goBuild(repo, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = repo
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s: %w", pkg, err)
	}
	return nil
}

func checkModules(caddyBin string) error {
	out, err := exec.Command(caddyBin, "list-modules").Output()
	if err != nil {
		return fmt.Errorf("%s list-modules: %w", caddyBin, err)
	}
	var missing []string
	for _, m := range gatewayModules {
		if !bytes.Contains(out, []byte(m+"\n")) {
			missing = append(missing, m)
		}
	}
	if missing != nil {
		return fmt.Errorf("modules %s not compiled in", strings.Join(missing, ", "))
	}
	return nil
}

// raiseNoFile lifts the soft limit on open files to the hard limit, and fails
// when even that is below need. Child processes inherit the raised limit (Go
// restores the original soft limit in children only when the program never
// calls Setrlimit itself).
func raiseNoFile(need uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("raising RLIMIT_NOFILE to %d: %w", l.Max, err)
	}
	if l.Cur < need {
		return l.Cur, fmt.Errorf("open files limited to %d, %d needed: raise the hard limit (ulimit -Hn) or lower -streams", l.Cur, need)
	}
	return l.Cur, nil
}

// process is a child process under test, logging to a file in the work dir.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process exited
	// gcRead is how far gcSince has read the log.
	gcRead int64
}

// startProcess starts cmd (made by pinning.command) as the process name.
func startProcess(dir, name string, cmd *exec.Cmd) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	// Caddy's autosave and storage go to the work dir, never the user's. What the caller set in
	// cmd.Env comes last, so it wins.
	extra := cmd.Env
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir)
	cmd.Env = append(cmd.Env, extra...)
	// Children die with the benchmark, even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// stop asks the process to shut down gracefully (Caddy then drains the
// audit queue) and kills it after timeout.
func (p *process) stop(timeout time.Duration) {
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// waitHTTP polls url until it answers at all (any status) or the process
// exits or the timeout passes: there is no readiness signal to await from a
// separate process.
func (p *process) waitHTTP(url string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	return p.waitUntil("answering "+url, timeout, func() bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
}

// waitUntil polls ready every 20 ms until it reports true, the process exits or the timeout
// passes; what says what ready waits for, in the error.
func (p *process) waitUntil(what string, timeout time.Duration, ready func() bool) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !ready() {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited during startup; see %s", p.name, p.log)
		case <-deadline:
			return fmt.Errorf("%s not %s after %v; see %s", p.name, what, timeout, p.log)
		case <-tick.C:
		}
	}
	return nil
}

// rssKiB returns the resident set size of the process (VmRSS) in KiB.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// freePort returns a loopback port that was free a moment ago. The child that
// is given it binds it right away; a collision shows as a startup error.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// proxyKind is what a Caddy process under test runs.
type proxyKind int

const (
	kindReverseProxy proxyKind = iota
	kindGateway
	kindGatewayAudit
	kindGatewayAuditNone // llm_audit storing no bodies
	kindGatewayKeys      // llm_gateway with a keys block: benchKey, counted in-process or in keyStore
)

// proxyConfig is what one Caddy process under test is configured with.
type proxyConfig struct {
	kind     proxyKind
	auditDB  string // kindGatewayAudit, kindGatewayAuditNone
	keyStore string // kindGatewayKeys: the keys block's store URL; empty for in-process counters
	// h2c serves HTTP/1.1 and HTTP/2 without TLS (protocols h1 h2c) and speaks only h2c to the
	// fake upstream (transport http { versions h2c }).
	h2c bool
	// clients, when set, replaces the one client (match keyword gpt) by that many, client i
	// matching model-i (match regex ^model-i$, or match exact with exact), the last one
	// routeModel.
	clients int
	exact   bool
	// steadyGC runs the process with GOGC=off and GOMEMLIMIT=steadyGCLimit: it collects when its
	// heap reaches the limit, whatever its live heap, instead of whenever the heap doubles.
	steadyGC bool
}

// steadyGCLimit is the memory limit of a steadyGC process: far above any config's live heap, so
// that a 10,000-client config and a 1-client one collect about as often.
const steadyGCLimit = "GOMEMLIMIT=256MiB"

// caddyEnv is the environment a Caddy process of config c runs with, besides the benchmark's own.
func caddyEnv(c proxyConfig) []string {
	env := []string{gcDebug()}
	if c.steadyGC {
		env = append(env, "GOGC=off", steadyGCLimit)
	}
	return env
}

// caddyfile renders the config of a proxy on port, in front of the fake on
// fakePort. The proxies share everything but the handler (and the audit
// app); admin stays on, on its own port, so that the profiler can be reached.
func caddyfile(c proxyConfig, port, adminPort, fakePort int) string {
	var global, audit, handler, keys, transport string
	if c.h2c {
		global = "\tservers {\n\t\tprotocols h1 h2c\n\t}\n"
		transport = "\t\ttransport http {\n\t\t\tversions h2c\n\t\t}\n"
	}
	if c.kind == kindGatewayKeys {
		store := ""
		if c.keyStore != "" {
			store = "\t\t\tstore " + c.keyStore + "\n"
		}
		// Limits far above any phase's calls, so that every call is counted (the store's
		// round trips happen) and none is refused.
		keys = fmt.Sprintf("\t\tkeys {\n%s\t\t\tkey bench {\n\t\t\t\tsecret %s\n\t\t\t\trpm 100000000\n\t\t\t\ttpm 1000000000000\n\t\t\t\tconcurrency 100000\n\t\t\t}\n\t\t}\n", store, benchKey)
	}
	switch {
	case c.kind == kindReverseProxy:
		handler = fmt.Sprintf("reverse_proxy 127.0.0.1:%d {\n\t\tflush_interval -1\n%s\t}", fakePort, transport)
	case c.clients > 0:
		var w strings.Builder
		w.WriteString("llm_gateway {\n")
		match := "regex"
		if c.exact {
			match = "exact"
		}
		for i := range c.clients {
			model := fmt.Sprintf("model-%d", i)
			if i == c.clients-1 {
				model = routeModel
			}
			if !c.exact {
				model = "^" + model + "$"
			}
			fmt.Fprintf(&w, "\t\tclient c%d {\n\t\t\tbase_url http://127.0.0.1:%d/v1\n\t\t\tmatch %s %s\n\t\t}\n", i, fakePort, match, model)
		}
		w.WriteString("\t}")
		handler = w.String()
	default:
		if transport != "" {
			transport = "\t" + strings.ReplaceAll(transport, "\n\t", "\n\t\t")
		}
		handler = fmt.Sprintf("llm_gateway {\n\t\tclient fake {\n\t\t\tbase_url http://127.0.0.1:%d/v1\n\t\t\tmatch keyword gpt\n%s\t\t}\n%s\t}", fakePort, transport, keys)
	}
	switch c.kind {
	case kindGatewayAudit:
		audit = fmt.Sprintf("\tllm_audit {\n\t\tpath %s\n\t\tbodies full\n\t\trotate off\n\t}\n", c.auditDB)
	case kindGatewayAuditNone:
		audit = fmt.Sprintf("\tllm_audit {\n\t\tpath %s\n\t\tbodies none\n\t\trotate off\n\t}\n", c.auditDB)
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
	grace_period 5s
%s%s}

http://:%d {
	bind 127.0.0.1
	%s
}
`, adminPort, global, audit, port, handler)
}

// startCaddy writes and runs the config of one proxy, pinned to the proxy CPU, and waits until
// it answers.
func startCaddy(pin pinning, dir, name, caddyBin string, c proxyConfig, fakePort int) (*process, int, int, error) {
	port, err := freePort()
	if err != nil {
		return nil, 0, 0, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, 0, 0, err
	}
	cf := filepath.Join(dir, name+".caddyfile")
	if err := os.WriteFile(cf, []byte(caddyfile(c, port, adminPort, fakePort)), 0o644); err != nil {
		return nil, 0, 0, err
	}
	cmd := pin.command(true, caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
	cmd.Env = caddyEnv(c)
	p, err := startProcess(dir, name, cmd)
	if err != nil {
		return nil, 0, 0, err
	}
	// Provisioning 10,000 clients takes a while.
	if err := p.waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", port), 3*time.Minute); err != nil {
		p.stop(time.Second)
		return nil, 0, 0, err
	}
	return p, port, adminPort, nil
}

// fakeControl drives the fake upstream's control endpoints.
type fakeControl struct{ base string }

func (f fakeControl) set(settings string) error {
	resp, err := http.Post(f.base+"/_fake/settings", "application/json", strings.NewReader(settings))
	if err != nil {
		return fmt.Errorf("fake settings: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("fake settings %s: status %d", settings, resp.StatusCode)
	}
	return nil
}

// http2 returns how many API requests the fake has received over HTTP/2.
func (f fakeControl) http2() (int64, error) {
	var st struct {
		HTTP2 *int64 `json:"http2"`
	}
	resp, err := http.Get(f.base + "/_fake/stats")
	if err != nil {
		return 0, fmt.Errorf("fake stats: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, fmt.Errorf("fake stats: %w", err)
	}
	if st.HTTP2 == nil {
		return 0, errors.New("fake stats: no http2 counter (an older fake upstream binary?)")
	}
	return *st.HTTP2, nil
}

// waitIdle polls the fake's in-flight counter until it drops to zero, so a
// load phase never starts while the previous one is still winding down.
func (f fakeControl) waitIdle(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last int64
	for {
		var st struct {
			InFlight int64 `json:"in_flight"`
		}
		resp, err := http.Get(f.base + "/_fake/stats")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if err == nil && st.InFlight == 0 {
			return nil
		}
		last = st.InFlight
		select {
		case <-ctx.Done():
			return fmt.Errorf("fake upstream still has %d requests in flight after %v (last error: %v)", last, timeout, err)
		case <-tick.C:
		}
	}
}

// auditRows counts the rows of the audit database.
func auditRows(path string) (int64, error) {
	conn, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", path, err)
	}
	defer conn.Close()
	if err := conn.BusyTimeout(5 * time.Second); err != nil {
		return 0, err
	}
	stmt, _, err := conn.Prepare(`SELECT count(*) FROM records`)
	if err != nil {
		return 0, fmt.Errorf("counting rows of %s: %w", path, err)
	}
	defer stmt.Close()
	if !stmt.Step() {
		return 0, fmt.Errorf("counting rows of %s: %w", path, stmt.Err())
	}
	return stmt.ColumnInt64(0), nil
}

// settledRows waits until the audit database holds want rows, or its count
// stopped moving for a second (the writer commits at least every 100ms), and
// returns the count.
func settledRows(path string, want int64) (int64, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last int64 = -1
	stable := 0
	for {
		n, err := auditRows(path)
		if err != nil {
			return 0, err
		}
		if n >= want {
			return n, nil
		}
		if n == last {
			if stable++; stable >= 20 {
				return n, nil
			}
		} else {
			last, stable = n, 0
		}
		<-tick.C
	}
}

// startRedis runs a redis-server (Debian's package) on a free loopback port, without persistence,
// for the keyed target that counts in Redis, and waits until it answers PING. Without
// redis-server on PATH it returns ok false and no error: that target is then skipped.
func startRedis(pin pinning, dir string) (p *process, port int, ok bool, err error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, 0, false, nil
	}
	if port, err = freePort(); err != nil {
		return nil, 0, false, err
	}
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return nil, 0, false, err
	}
	p, err = startProcess(dir, "redis", pin.command(false, bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", rdir, "--daemonize", "no", "--loglevel", "warning"))
	if err != nil {
		return nil, 0, false, err
	}
	if err := p.waitRedis(port, 10*time.Second); err != nil {
		p.stop(time.Second)
		return nil, 0, false, err
	}
	return p, port, true, nil
}

// waitRedis polls the redis-server on port with PING until it answers PONG, the process exits or
// the timeout passes: as with waitHTTP there is no readiness signal from a separate process.
func (p *process) waitRedis(port int, timeout time.Duration) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ping := func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return false
		}
		buf := make([]byte, 7)
		n, _ := io.ReadFull(c, buf)
		return string(buf[:n]) == "+PONG\r\n"
	}
	return p.waitUntil("answering PING on "+addr, timeout, ping)
}
