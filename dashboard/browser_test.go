package dashboard

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/llmgw/caddy-llm-gateway/audit"
)

// chromium returns Debian's chromium, skipping the test when it is missing outside CI
// (.ci/run installs it; in CI a missing browser is a failure).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not installed (apt-get install -y chromium): the browser test must run in CI")
	}
	t.Skip("chromium not installed (apt-get install -y chromium)")
	return ""
}

// browser is a headless Chromium tab that records every console error, uncaught exception
// and JavaScript dialog.
type browser struct {
	ctx      context.Context
	mu       sync.Mutex
	problems []string
}

func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // the tests may run as root
		chromedp.DisableGPU,
		chromedp.WindowSize(width, height),
		chromedp.Flag("lang", "en-US"),
	)
	// No timeout on the browser's own context: it would stop the browser. Each step gets one.
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	b := &browser{ctx: ctx}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
		wg.Wait()
	})
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(testUser+":"+testPassword))
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.problem(m.String() + " " + m.URL)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.problem("dialog opened: " + ev.Message)
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{})
		}
	}()
	return b
}

func (b *browser) problem(p string) {
	b.mu.Lock()
	b.problems = append(b.problems, p)
	b.mu.Unlock()
}

// do runs steps with a deadline.
func (b *browser) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// run runs one action with a deadline and returns its value.
func run[T any](t *testing.T, b *browser, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// noProblems fails the test on any console error, exception or dialog seen so far.
func (b *browser) noProblems(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("browser: %s", p)
	}
	b.problems = nil
}

// waitLoaded waits until the page shows the last load it started, numbered after prev (app.js
// numbers its loads: body's data-requested is the latest started, data-loaded the one shown),
// and returns its number.
func (b *browser) waitLoaded(t *testing.T, prev int) int {
	t.Helper()
	const loaded = `Number(document.body.dataset.loaded || 0)`
	return run(t, b, chromedp.Poll[int](fmt.Sprintf(`%s > %d && %s === Number(document.body.dataset.requested) ? %s : 0`, loaded, prev, loaded, loaded),
		chromedp.WithPollingInterval(50*time.Millisecond)))
}

// change sets a select's value, which fires its input and change events as picking an option
// does.
func (b *browser) change(t *testing.T, id, value string) {
	t.Helper()
	b.do(t, chromedp.SetValue(chromedp.CSS("#"+id), value))
}

// pageState is what the page shows, read from its DOM as text.
type pageState struct {
	Requests string              `json:"requests"`
	Error    string              `json:"error"`
	Tables   map[string][][2]any `json:"tables"` // name and request count per row, per dimension
	Canvases [][3]int            `json:"canvases"`
	Overflow bool                `json:"overflow"`
	Failures int                 `json:"failures"`
}

const readPage = `(() => {
	const tables = {};
	for (const dim of ["model", "key", "backend"]) {
		tables[dim] = [...document.querySelectorAll("#top-" + dim + " tbody tr")]
			.filter(tr => tr.querySelector("td.requests"))
			.map(tr => [tr.querySelector("td.name").textContent, Number(tr.querySelector("td.requests").textContent.replace(/,/g, ""))]);
	}
	const canvases = [...document.querySelectorAll(".plot canvas")].map(c => {
		// Drawn pixels: a chart that drew data has many non-transparent ones.
		const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
		let inked = 0;
		for (let i = 3; i < d.length; i += 4) if (d[i] > 0) inked++;
		return [c.width, c.height, inked];
	});
	return {
		requests: document.getElementById("t-requests").textContent,
		error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
		tables, canvases,
		overflow: document.documentElement.scrollWidth > window.innerWidth + 1,
		failures: document.querySelectorAll("#failures tbody tr.clickable").length,
	};
})()`

// TestDashboardInChromium loads the page in headless Chromium through a real Caddy: no console
// error, charts drawn from data, every model's, key's and backend's name and count shown as
// text and equal to SQL, totals equal to SQL, and after changing a filter, numbers equal to SQL
// with that filter. A stored model name made of HTML stays text. Screenshots of a laptop and a
// phone layout are written to the test's temp dir (and to $LLMGW_DASHBOARD_SCREENSHOT).
func TestDashboardInChromium(t *testing.T) {
	chromium(t)
	path := filepath.Join(t.TempDir(), "record.db")
	now := time.Now()
	recs := genRecords(rand.New(rand.NewPCG(7, 14)), now.Add(-time.Hour), 20*time.Hour, 1200)
	hostile := `<img src=x onerror="alert('xss')">`
	for i := 0; i < 3; i++ {
		recs[100+i*300].Model = hostile
	}
	writeRecords(t, path, recs)
	s := startSite(t, path, "")
	files, _ := audit.DatabaseFiles(path)
	// The page asks for the last 24 hours as it loads; every row lies well inside them.
	day := filter{from: now.Add(-24 * time.Hour), to: now.Add(time.Hour)}

	b := newBrowser(t, 1280, 1000)
	b.do(t, chromedp.Navigate(s.URL+"/usage/"))
	loaded := b.waitLoaded(t, 0)
	st := run(t, b, chromedp.Evaluate[pageState](readPage))
	b.noProblems(t)
	checkPage(t, st, oracle(t, files, day), "all")
	if st.Failures == 0 {
		t.Error("no failed call listed")
	}
	title := run(t, b, chromedp.Evaluate[string](`[...document.querySelectorAll("#top-model td.name")].map(td => td.textContent).join("|")`))
	if !strings.Contains(title, hostile) {
		t.Errorf("the HTML model name is not shown as text: %s", title)
	}
	if imgs := run(t, b, chromedp.Evaluate[int](`document.querySelectorAll("img").length`)); imgs != 0 {
		t.Errorf("%d <img> elements: a stored name became HTML", imgs)
	}
	screenshot(t, b, "laptop")

	// Filter by a model: every number follows, as SQL with the same filter says.
	b.change(t, "f-model", "gpt-4o")
	loaded = b.waitLoaded(t, loaded)
	st = run(t, b, chromedp.Evaluate[pageState](readPage))
	b.noProblems(t)
	f := day
	f.model = ptr("gpt-4o")
	checkPage(t, st, oracle(t, files, f), "model=gpt-4o")

	// Then a status class on top, through the select as a person would.
	b.change(t, "f-status", "5xx")
	loaded = b.waitLoaded(t, loaded)
	st = run(t, b, chromedp.Evaluate[pageState](readPage))
	f.class = 5
	checkPage(t, st, oracle(t, files, f), "model=gpt-4o status=5xx")

	// A failed call's detail: masked headers, no secret.
	b.do(t, chromedp.Click(chromedp.CSS("#failures tbody tr.clickable button")),
		chromedp.WaitVisible(chromedp.CSS("#detail table.headers")))
	detail := run(t, b, chromedp.Text(chromedp.CSS("#detail-body")))
	if !strings.Contains(detail, "Bearer sk-li…ij") || strings.Contains(detail, "0123456789abcdefghij") {
		t.Errorf("call detail does not show the masked header only:\n%s", detail)
	}
	b.do(t, chromedp.Click(chromedp.CSS("#detail-close")))

	// The 1h range: everything is older than an hour, so nothing.
	b.do(t, chromedp.Click(chromedp.CSS(`#ranges button[data-range="1h"]`)))
	b.waitLoaded(t, loaded)
	st = run(t, b, chromedp.Evaluate[pageState](readPage))
	if st.Requests != "0" || st.Error != "" {
		t.Errorf("1h: requests %q error %q, want 0", st.Requests, st.Error)
	}
	b.noProblems(t)

	// A phone.
	phone := newBrowser(t, 390, 844)
	phone.do(t, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)),
		chromedp.Navigate(s.URL+"/usage/"))
	phone.waitLoaded(t, 0)
	st = run(t, phone, chromedp.Evaluate[pageState](readPage))
	phone.noProblems(t)
	checkPage(t, st, oracle(t, files, day), "phone")
	if st.Overflow {
		t.Error("the page is wider than a phone's screen")
	}
	screenshot(t, phone, "phone")
}

// checkPage compares what the page shows with SQL.
func checkPage(t *testing.T, st pageState, e expected, what string) {
	t.Helper()
	if st.Error != "" {
		t.Fatalf("%s: page shows error %q", what, st.Error)
	}
	if want := commas(e.requests); st.Requests != want {
		t.Errorf("%s: total requests %q, SQL %s", what, st.Requests, want)
	}
	for i, dim := range dimNames {
		got := map[string]int64{}
		for _, row := range st.Tables[dim] {
			name, _ := row[0].(string)
			n, _ := row[1].(float64)
			if name == None {
				name = ""
			}
			got[name] = int64(n)
		}
		if fmt.Sprint(got) != fmt.Sprint(e.byName[i]) {
			t.Errorf("%s: %s table shows %v, SQL %v", what, dim, got, e.byName[i])
		}
	}
	if len(st.Canvases) != 3 {
		t.Fatalf("%s: %d charts, want 3", what, len(st.Canvases))
	}
	for i, c := range st.Canvases {
		if c[0] == 0 || c[1] == 0 || (e.requests > 0 && c[2] < 200) {
			t.Errorf("%s: chart %d is %dx%d with %d drawn pixels: want it drawn from data", what, i, c[0], c[1], c[2])
		}
	}
}

// commas formats n as the page does (en-US grouping).
func commas(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// screenshot writes a full-page PNG to the test's temp dir, and to
// $LLMGW_DASHBOARD_SCREENSHOT (its name suffixed with the layout) when set.
func screenshot(t *testing.T, b *browser, layout string) {
	t.Helper()
	png := run(t, b, chromedp.FullScreenshot(100))
	out := filepath.Join(t.TempDir(), "dashboard-"+layout+".png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", out)
	if dst := os.Getenv("LLMGW_DASHBOARD_SCREENSHOT"); dst != "" {
		ext := filepath.Ext(dst)
		if err := os.WriteFile(strings.TrimSuffix(dst, ext)+"-"+layout+ext, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
