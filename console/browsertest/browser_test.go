package browsertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/calmline/calmline/lib/tenant"
)

// stack is the one `calmline serve` of the package.
type stack struct {
	bin     string
	dir     string
	addrs   map[string]string
	console string // http://HOST:PORT
	keys    map[string]string
	cmd     *exec.Cmd
}

var (
	st        *stack
	browser   context.Context // the shared Chromium
	skipWhy   string
	testdata  = "../../cmd/calmline/testdata"
	oncallHit = make(chan string, 100)
)

func chromiumPath() string {
	if p := os.Getenv("CALMLINE_CHROMIUM"); p != "" {
		return p
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	chrome := chromiumPath()
	if chrome == "" {
		if os.Getenv("CALMLINE_REQUIRE_CHROMIUM") == "1" {
			fmt.Fprintln(os.Stderr, "browsertest: no Chromium found and CALMLINE_REQUIRE_CHROMIUM=1 (run scripts/chromium.sh install)")
			return 1
		}
		skipWhy = "no Chromium found (install it with scripts/chromium.sh install, or set CALMLINE_CHROMIUM)"
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "calmline-browsertest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	s, stop, err := startStack(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "browsertest:", err)
		return 1
	}
	defer stop()
	st = s
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		fmt.Fprintln(os.Stderr, "browsertest: starting Chromium:", err)
		return 1
	}
	browser = bctx
	return m.Run()
}

// startStack builds calmline and starts `calmline serve` with the console
// on free ports, for a tenant whose rule fires on the angry-agent call.
func startStack(dir string) (*stack, func(), error) {
	s := &stack{bin: filepath.Join(dir, "calmline"), dir: dir, addrs: map[string]string{}, keys: map[string]string{}}
	build := exec.Command("go", "build", "-o", s.bin, "./calmline")
	build.Dir = "../../cmd"
	if out, err := build.CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("building calmline: %v\n%s", err, out)
	}
	oncall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case oncallHit <- r.Header.Get("webhook-id"):
		default:
		}
	}))
	for _, k := range []string{"sup", "agent1", "agent2", "care", "priv", "privcare"} {
		s.keys[k] = tenant.NewKey()
	}
	tenants := fmt.Sprintf(`tenants:
  - id: acme
    name: ACME Support
    api_keys:
      - {id: sup-1, sha256: %s}
      - {id: agent-1, sha256: %s, role: agent, agent_id: agent-00001}
      - {id: agent-2, sha256: %s, role: agent, agent_id: agent-00002}
      - {id: care-1, sha256: %s, role: care}
    agent_scoring: "on"
    alert_rule: {id: agent-anger, score: agent_stress, threshold: 70, hold_seconds: 2, clear_below: 10, cooldown_seconds: 600}
    escalation:
      endpoints:
        - {name: on-call, url: '%s/hooks'}
      ladder:
        - {name: notify-on-call, action: notify, endpoint: on-call}
        - {name: transfer, action: transfer, endpoint: on-call, after: 30s}
      care:
        rules:
          - {id: after-an-escalation, window: 1h, high_pressure_calls: 1, recommend: break}
  - id: privco
    api_keys: [{id: priv-1, sha256: %s}, {id: privcare-1, sha256: %s, role: care}]
    agent_scoring: "private"
`, tenant.HashKey(s.keys["sup"]), tenant.HashKey(s.keys["agent1"]), tenant.HashKey(s.keys["agent2"]), tenant.HashKey(s.keys["care"]), oncall.URL,
		tenant.HashKey(s.keys["priv"]), tenant.HashKey(s.keys["privcare"]))
	tf := filepath.Join(dir, "tenants.yaml")
	if err := os.WriteFile(tf, []byte(tenants), 0o600); err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(s.bin, "serve", "--data-dir", filepath.Join(dir, "data"), "--tenants", tf, "--log-level", "warn",
		"--gateway-addr", "127.0.0.1:0", "--realtime-addr", "127.0.0.1:0", "--fullcall-addr", "127.0.0.1:0",
		"--escalation-addr", "127.0.0.1:0", "--console-addr", "127.0.0.1:0", "--drain-timeout", "2s")
	logf, _ := os.Create(filepath.Join(dir, "serve.log"))
	cmd.Stderr = logf
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	s.cmd = cmd
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		n := 0
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "calmline: ready service="); ok {
				name, addr, _ := strings.Cut(rest, " addr=")
				s.addrs[name] = addr
				if n++; n == 5 {
					close(ready)
				}
			}
		}
	}()
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		oncall.Close()
	}
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		stop()
		b, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
		return nil, nil, fmt.Errorf("calmline serve not ready in 60 s:\n%s", b)
	}
	s.console = "http://" + s.addrs["console"]
	return s, stop, nil
}

// tab opens a new browser context (its own cookies) for a test.
func tab(t *testing.T) context.Context {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancelT)
	return ctx
}

func do(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		screenshot(t, ctx, "failure")
		t.Fatal(err)
	}
}

// eval runs JavaScript in the page and returns its value.
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is truthy.
func waitJS(t *testing.T, ctx context.Context, js string, within time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		screenshot(t, ctx, "failure")
		t.Fatalf("waiting %v for %s: %v", within, js, err)
	}
}

var shotDir = sync.OnceValue(func() string { return os.Getenv("CALMLINE_SCREENSHOTS") })

// screenshot saves the page as a PNG artifact of the test.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	dir := shotDir()
	if dir == "" {
		dir = t.TempDir()
	}
	os.MkdirAll(dir, 0o755)
	p := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+name+".png")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s", p)
}

// signIn opens the console and signs in with key.
func signIn(t *testing.T, ctx context.Context, key string) {
	t.Helper()
	do(t, ctx, chromedp.Navigate(st.console+"/"), chromedp.WaitVisible("#key"),
		chromedp.SendKeys("#key", key), chromedp.Click("#login-submit"),
		chromedp.WaitVisible("#view-wall"))
}

// loadgenRun is a `calmline loadgen` streaming calls through the gateway.
type loadgenRun struct {
	cmd  *exec.Cmd
	done chan error
	out  *strings.Builder
}

func launchLoadgen(key, wav, prefix string, calls, ramp int, duration time.Duration) (*loadgenRun, error) {
	cmd := exec.Command(st.bin, "loadgen", "--url", "ws://"+st.addrs["gateway"]+"/ws/native", "--api-key", key,
		"--calls", fmt.Sprint(calls), "--ramp", fmt.Sprint(ramp), "--duration", duration.String(), "--wav", filepath.Join(testdata, wav), "--call-prefix", prefix, "--json")
	r := &loadgenRun{cmd: cmd, done: make(chan error, 1), out: &strings.Builder{}}
	cmd.Stdout, cmd.Stderr = r.out, r.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { r.done <- cmd.Wait() }()
	return r, nil
}

// stop kills loadgen if it still runs and waits for it.
func (r *loadgenRun) stop() {
	r.cmd.Process.Kill()
	err := <-r.done
	r.done <- err
}

func startLoadgen(t *testing.T, key, wav, prefix string, calls int, duration time.Duration) *loadgenRun {
	t.Helper()
	r, err := launchLoadgen(key, wav, prefix, calls, 100, duration)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	return r
}

func (r *loadgenRun) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Fatalf("loadgen: %v\n%s", err, r.out)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("loadgen did not end in 60 s\n%s", r.out)
	}
}

// api calls a service's REST API with a key.
func api(t *testing.T, method, addr, path, key string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func TestWrongKeyIsRefused(t *testing.T) {
	t.Parallel()
	ctx := tab(t)
	do(t, ctx, chromedp.Navigate(st.console+"/"), chromedp.WaitVisible("#key"),
		chromedp.SendKeys("#key", "clk_not-a-key-of-anyone"), chromedp.Click("#login-submit"))
	waitJS(t, ctx, `document.getElementById("login-error").textContent.length > 0`, 10*time.Second)
	msg := eval[string](t, ctx, `document.getElementById("login-error").textContent`)
	if !strings.Contains(msg, "refused") {
		t.Errorf("login error %q; want the refusal", msg)
	}
	if eval[bool](t, ctx, `!document.getElementById("view-wall").hidden || !document.getElementById("top").hidden`) {
		t.Error("the console shows a signed-in view after a wrong key")
	}
	if c := eval[string](t, ctx, `document.cookie`); c != "" {
		t.Errorf("cookies readable by the page: %q", c)
	}
	// Without a session the APIs answer 401.
	if code := eval[float64](t, ctx, `fetch("/api/escalations").then(r => r.status)`); code != 401 {
		t.Errorf("GET /api/escalations without a session: %v; want 401", code)
	}
	screenshot(t, ctx, "refused")
}

func TestLoadgenCallOnTheWallAndItsTimeline(t *testing.T) {
	t.Parallel()
	ctx := tab(t)
	signIn(t, ctx, st.keys["sup"])
	// The page notes when the call's row first appears, on the same
	// clock as the gateway's started_at (one host).
	eval[bool](t, ctx, `(() => { window.__seen = {}; new MutationObserver(() => {
		for (const tr of document.querySelectorAll("#wall-body tr[data-call-id]")) if (!window.__seen[tr.dataset.callId]) window.__seen[tr.dataset.callId] = Date.now();
	}).observe(document.getElementById("wall-body"), {childList: true}); return true; })()`)
	lg := startLoadgen(t, st.keys["sup"], "call_emodb_9s.wav", "wall-", 1, 9*time.Second)
	const id = "wall-00001"
	waitJS(t, ctx, fmt.Sprintf(`window.__seen[%q] > 0`, id), 15*time.Second)
	// started_at is the gateway's; the row's appearance the browser's.
	var started string
	if err := waitStarted(ctx, id, &started); err != nil {
		t.Fatal(err)
	}
	lag := eval[float64](t, ctx, fmt.Sprintf(`window.__seen[%q] - Date.parse(%q)`, id, started))
	t.Logf("the call appeared on the wall %.0f ms after it started", lag)
	if lag > 2000 {
		t.Errorf("the call appeared on the wall %.0f ms after it started; want within 2 s", lag)
	}
	// Its caller_pressure moves: at least two different values shown.
	eval[bool](t, ctx, fmt.Sprintf(`(() => { window.__cp = new Set(); const f = () => { const td = document.querySelector('tr[data-call-id=%q] td.cp');
		if (td && td.dataset.v) window.__cp.add(td.dataset.v); requestAnimationFrame(f); }; f(); return true; })()`, id))
	waitJS(t, ctx, `window.__cp.size >= 2`, 15*time.Second)
	screenshot(t, ctx, "wall")
	// Keyboard: the row takes focus and Enter opens the call's view.
	do(t, ctx, chromedp.Focus(fmt.Sprintf(`tr[data-call-id=%q]`, id)), chromedp.KeyEvent("\r"))
	waitJS(t, ctx, fmt.Sprintf(`location.hash === "#/call/%s" && !document.getElementById("view-call").hidden`, id), 10*time.Second)
	do(t, ctx, chromedp.Navigate(st.console+"/#/wall"))
	lg.wait(t)
	// After hang-up the call leaves the wall and its view plots the report.
	waitJS(t, ctx, fmt.Sprintf(`!document.querySelector('tr[data-call-id=%q]')`, id), 15*time.Second)
	do(t, ctx, chromedp.Navigate(st.console+"/#/call/"+id))
	waitJS(t, ctx, `document.querySelector("#timeline") && Number(document.querySelector("#timeline").dataset.points) >= 8`, 15*time.Second)
	if !eval[bool](t, ctx, `!!document.querySelector("#timeline path.series-cp") && !!document.querySelector("#timeline .threshold")`) {
		t.Error("the call view plots no caller_pressure line or threshold")
	}
	// Talk, silence and overlap per second, from the report.
	bands := eval[string](t, ctx, `[...document.querySelectorAll("#timeline g.band")].map(g => g.dataset.band + "=" + g.children.length).join(" ")`)
	if !strings.Contains(bands, "call.talkCaller=") || !strings.Contains(bands, "call.talkAgent=") || strings.Contains(bands, "call.talkCaller=0") || !strings.Contains(bands, "call.silence=") {
		t.Errorf("talk bands of the call view: %q", bands)
	}
	if got := eval[string](t, ctx, `document.querySelector("#call-meta").textContent`); !strings.Contains(got, "agent-00001") || !strings.Contains(got, "hangup") {
		t.Errorf("call view meta %q; want the agent and the end reason", got)
	}
	screenshot(t, ctx, "call")
}

// waitStarted reads the call's started_at from the console's own API.
func waitStarted(ctx context.Context, id string, out *string) error {
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`fetch("/api/calls/%s").then(r => r.json()).then(j => j.started_at || "")`, id), chromedp.EvalAwaitPromise))
	if err != nil {
		return err
	}
	if v == "" {
		return fmt.Errorf("the live call view of %s has no started_at", id)
	}
	*out = v
	return nil
}

func TestAngryAgentEscalationAcknowledgeResolve(t *testing.T) {
	t.Parallel()
	ctx := tab(t)
	signIn(t, ctx, st.keys["sup"])
	lg := startLoadgen(t, st.keys["sup"], "call_agent_turns_angry.wav", "angry-", 1, 12400*time.Millisecond)
	const id = "angry-00001"
	// The escalation appears in the open queue by itself (it refreshes),
	// and is announced to screen readers.
	do(t, ctx, chromedp.Navigate(st.console+"/#/escalations"))
	waitJS(t, ctx, fmt.Sprintf(`!!document.querySelector('article.esc a[href="#/call/%s"]')`, id), 40*time.Second)
	if news := eval[string](t, ctx, `document.getElementById("esc-news").textContent`); !strings.Contains(news, id) {
		t.Errorf("the new escalation was not announced: %q", news)
	}
	card := fmt.Sprintf(`article.esc:has(a[href="#/call/%s"])`, id)
	escID := eval[string](t, ctx, fmt.Sprintf(`document.querySelector('%s').dataset.escalationId`, card))
	if !eval[bool](t, ctx, fmt.Sprintf(`!!document.querySelector('%s li[data-step="notify"]')`, card)) {
		t.Error("the escalation shows no ladder step notify")
	}
	screenshot(t, ctx, "queue")
	state := func() string {
		var e struct{ State string }
		api(t, "GET", st.addrs["escalation"], "/api/v1/escalations/"+escID, st.keys["sup"], &e)
		return e.State
	}
	if s := state(); s != "ESCALATION_STATE_OPEN" {
		t.Fatalf("escalation %s is %s before anyone acted; want open", escID, s)
	}
	do(t, ctx, chromedp.SendKeys(card+" input.by", "sup-ana"), chromedp.Click(card+" button.ack"))
	waitJS(t, ctx, fmt.Sprintf(`document.querySelector('%s')?.dataset.state === "acknowledged"`, card), 10*time.Second)
	if s := state(); s != "ESCALATION_STATE_ACKNOWLEDGED" {
		t.Fatalf("after Acknowledge on the page the API says %s", s)
	}
	do(t, ctx, chromedp.SendKeys(card+" input.by", "sup-ana"), chromedp.SendKeys(card+" input.resolution", "caller calmed down"), chromedp.Click(card+" button.resolve"))
	waitJS(t, ctx, fmt.Sprintf(`document.querySelector('%s')?.dataset.state === "resolved"`, card), 10*time.Second)
	var e struct {
		State, ResolvedBy, Resolution string
	}
	api(t, "GET", st.addrs["escalation"], "/api/v1/escalations/"+escID, st.keys["sup"], &struct {
		State      *string `json:"state"`
		ResolvedBy *string `json:"resolved_by"`
		Resolution *string `json:"resolution"`
	}{&e.State, &e.ResolvedBy, &e.Resolution})
	if e.State != "ESCALATION_STATE_RESOLVED" || !strings.HasPrefix(e.ResolvedBy, "sup-ana") || e.Resolution != "caller calmed down" {
		t.Fatalf("after Resolve on the page the API says %+v", e)
	}
	// The audit trail shows both acts.
	do(t, ctx, chromedp.Click(card+" details summary"))
	waitJS(t, ctx, fmt.Sprintf(`document.querySelectorAll('%s .audit li').length >= 3`, card), 10*time.Second)
	kinds := eval[string](t, ctx, fmt.Sprintf(`[...document.querySelectorAll('%s .audit li')].map(l => l.dataset.kind).join(" ")`, card))
	if !strings.Contains(kinds, "acknowledged") || !strings.Contains(kinds, "resolved") {
		t.Errorf("audit trail on the page: %s", kinds)
	}
	screenshot(t, ctx, "resolved")
	// The call view, linked from the escalation, marks the alert.
	lg.wait(t)
	do(t, ctx, chromedp.Click(card+` a[href="#/call/`+id+`"]`))
	waitJS(t, ctx, `document.querySelector("#timeline .alert-mark") && document.querySelector("#timeline path.series-as")`, 20*time.Second)
	screenshot(t, ctx, "call")
	// The escalated call makes the agent's care rule fire: a break is due.
	deadline := time.Now().Add(20 * time.Second)
	for {
		do(t, ctx, chromedp.Navigate(st.console+"/#/care"))
		waitJS(t, ctx, `document.querySelector("#care-list").children.length > 0 || document.querySelector("#care-error").textContent`, 10*time.Second)
		due := eval[string](t, ctx, `document.querySelector('#care-list tr[data-agent="agent-00001"] td:nth-child(5)')?.textContent || ""`)
		if strings.Contains(due, "Break") {
			break
		}
		if time.Now().After(deadline) {
			screenshot(t, ctx, "failure")
			t.Fatalf("no break due for agent-00001 in the care view after the escalated call: %q", due)
		}
		do(t, ctx, chromedp.Navigate(st.console+"/#/wall"))
	}
	screenshot(t, ctx, "care")
}

func TestAgentKeySeesOnlyItsOwnCalls(t *testing.T) {
	t.Parallel()
	ctx := tab(t)
	signIn(t, ctx, st.keys["agent2"])
	// Two calls: agent-00001's and agent-00002's.
	lg := startLoadgen(t, st.keys["sup"], "call_emodb_9s.wav", "own-", 2, 9*time.Second)
	waitJS(t, ctx, `!!document.querySelector('tr[data-call-id="own-00002"]')`, 15*time.Second)
	// The other agent's call is live (the supervisor's feed has it) but
	// absent from this agent's wall for as long as it lasts.
	sup := tab(t)
	signIn(t, sup, st.keys["sup"])
	waitJS(t, sup, `!!document.querySelector('tr[data-call-id="own-00001"]')`, 15*time.Second)
	agents := eval[string](t, ctx, `[...document.querySelectorAll("#wall-body tr[data-call-id]")].map(r => r.children[1].textContent).join(" ")`)
	for _, a := range strings.Fields(agents) {
		if a != "agent-00002" {
			t.Errorf("the agent's wall shows a call of %s", a)
		}
	}
	if code := eval[float64](t, ctx, `fetch("/api/calls/own-00001").then(r => r.status)`); code != 404 {
		t.Errorf("the agent reads another agent's live call: %v; want 404", code)
	}
	if eval[bool](t, ctx, `!document.getElementById("nav-escalations").hidden && false`) {
		t.Error("unreachable")
	}
	screenshot(t, ctx, "agent-wall")
	// The supervisor's filters: by agent, by score.
	do(t, sup, chromedp.SendKeys("#f-agent", "agent-00002"))
	waitJS(t, sup, `[...document.querySelectorAll("#wall-body tr[data-call-id]")].every(r => r.children[1].textContent === "agent-00002") && !!document.querySelector('tr[data-call-id="own-00002"]')`, 5*time.Second)
	do(t, sup, chromedp.SetValue("#f-min", "101"))
	eval[bool](t, sup, `(document.getElementById("f-min").dispatchEvent(new Event("input")), true)`)
	waitJS(t, sup, `document.querySelectorAll("#wall-body tr[data-call-id]").length === 0 && !document.getElementById("wall-empty").hidden`, 5*time.Second)
	lg.wait(t)
	if code := eval[float64](t, ctx, `fetch("/api/calls/own-00001").then(r => r.status)`); code != 404 {
		t.Errorf("the agent reads another agent's report: %v; want 404", code)
	}
	if code := eval[float64](t, ctx, `fetch("/api/calls/own-00002").then(r => r.status)`); code != 200 {
		t.Errorf("the agent cannot read its own call: %v; want 200", code)
	}
	// An agent may not act on escalations.
	csrf := eval[string](t, ctx, `fetch("/api/session").then(r => r.json()).then(j => j.csrf)`)
	code := eval[float64](t, ctx, fmt.Sprintf(`fetch("/api/escalations/x/acknowledge", {method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": %q}, body: "{}"}).then(r => r.status)`, csrf))
	if code != 403 {
		t.Errorf("an agent acknowledging: %v; want 403", code)
	}
}

func TestCSRFAndLogout(t *testing.T) {
	t.Parallel()
	ctx := tab(t)
	signIn(t, ctx, st.keys["sup"])
	// A state-changing request without the token is refused, even with
	// the session cookie.
	if code := eval[float64](t, ctx, `fetch("/api/escalations/x/acknowledge", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"}).then(r => r.status)`); code != 403 {
		t.Errorf("POST without X-CSRF-Token: %v; want 403", code)
	}
	screenshot(t, ctx, "signed-in")
	do(t, ctx, chromedp.Click("#logout"), chromedp.WaitVisible("#view-login"))
	if code := eval[float64](t, ctx, `fetch("/api/session").then(r => r.status)`); code != 401 {
		t.Errorf("GET /api/session after sign-out: %v; want 401", code)
	}
}

func TestJapaneseUI(t *testing.T) {
	t.Parallel()
	ctx := tab(t)
	do(t, ctx, chromedp.Navigate("about:blank"))
	if _, err := chromedp.Call(ctx, emulation.SetUserAgentOverride, emulation.SetUserAgentOverrideParams{UserAgent: "Mozilla/5.0 calmline-test", AcceptLanguage: "ja-JP"}); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, chromedp.Navigate(st.console+"/"), chromedp.WaitVisible("#key"))
	if got := eval[string](t, ctx, `document.querySelector("#view-login h1").textContent`); got != "スーパーバイザーコンソール" {
		t.Errorf("login title %q in a Japanese browser", got)
	}
	do(t, ctx, chromedp.SendKeys("#key", st.keys["care"]), chromedp.Click("#login-submit"),
		chromedp.WaitVisible("#view-wall"))
	if got := eval[string](t, ctx, `document.getElementById("nav-wall").textContent + "|" + document.documentElement.lang`); got != "通話中|ja" {
		t.Errorf("nav %q; want 通話中|ja", got)
	}
	do(t, ctx, chromedp.Navigate(st.console+"/#/care"))
	waitJS(t, ctx, `document.querySelector("#care-list").children.length > 0 || document.querySelector("#care-error").textContent`, 15*time.Second)
	if e := eval[string](t, ctx, `document.querySelector("#care-error").textContent`); e != "" {
		t.Errorf("care view: %s", e)
	}
	screenshot(t, ctx, "care-ja")
	// Switchable: English from the menu.
	do(t, ctx, chromedp.SetValue("#lang-top", "en"))
	eval[bool](t, ctx, `(document.getElementById("lang-top").dispatchEvent(new Event("change")), true)`)
	if got := eval[string](t, ctx, `document.getElementById("nav-wall").textContent`); got != "Live calls" {
		t.Errorf("after switching to English the nav reads %q", got)
	}
}

// TestPrivateModeNoAgentStressReachesTheBrowser: for a tenant whose
// agent_scoring is private, a general key's browser receives no
// agent_stress — not in the wall's stream, not in the call view — while
// the same key reading fullcall's report directly gets it.
func TestPrivateModeNoAgentStressReachesTheBrowser(t *testing.T) {
	t.Parallel()
	ctx := tab(t)
	signIn(t, ctx, st.keys["priv"])
	// A second stream of the wall, every message kept.
	eval[bool](t, ctx, `(() => { window.__msgs = []; const es = new EventSource("/api/live"); es.onmessage = (m) => window.__msgs.push(m.data); return true; })()`)
	lg := startLoadgen(t, st.keys["priv"], "call_agent_turns_angry.wav", "priv-", 1, 12400*time.Millisecond)
	waitJS(t, ctx, `window.__msgs.some(m => m.includes('"k":"s"') && m.includes("priv-00001"))`, 20*time.Second)
	lg.wait(t)
	waitJS(t, ctx, `window.__msgs.some(m => m.includes('"k":"end"') && m.includes("priv-00001"))`, 20*time.Second)
	leaked := eval[string](t, ctx, `window.__msgs.filter(m => { const j = JSON.parse(m);
		const pts = (j.calls || []).flatMap(c => c.h).concat((j.ev || []).filter(e => e.k === "s").map(e => e.p));
		return pts.some(p => p[2] != null) || /agent_stress/.test(m); }).join("\n")`)
	if leaked != "" {
		t.Errorf("agent_stress reached the browser's wall in private mode:\n%s", leaked)
	}
	do(t, ctx, chromedp.Navigate(st.console+"/#/call/priv-00001"))
	waitJS(t, ctx, `document.querySelector("#timeline")`, 10*time.Second)
	screenshot(t, ctx, "call")
	view := eval[string](t, ctx, `fetch("/api/calls/priv-00001").then(r => r.text())`)
	var v struct {
		Timeline    [][3]*float64   `json:"timeline"`
		AgentStress json.RawMessage `json:"agent_stress"`
	}
	if err := json.Unmarshal([]byte(view), &v); err != nil || len(v.Timeline) < 10 {
		t.Fatalf("call view: %v %s", err, view)
	}
	for _, p := range v.Timeline {
		if p[2] != nil {
			t.Fatalf("the call view carries agent_stress in private mode: %s", view)
		}
	}
	if v.AgentStress != nil {
		t.Errorf("the call view carries the agent_stress summary: %s", v.AgentStress)
	}
	// What the console withheld is there to withhold: the care team's key
	// reads it from fullcall.
	var rep struct {
		Timeline []struct {
			AgentStress *float64 `json:"agent_stress"`
		} `json:"timeline"`
	}
	api(t, "GET", st.addrs["fullcall"], "/api/v1/reports/priv-00001", st.keys["privcare"], &rep)
	scored := 0
	for _, p := range rep.Timeline {
		if p.AgentStress != nil {
			scored++
		}
	}
	if scored == 0 {
		t.Fatal("fullcall's report holds no agent_stress for this private-mode call, even for the care team: the test withholds nothing")
	}
	t.Logf("fullcall's report holds %d seconds of agent_stress for the care team; the general key's browser got none", scored)
}
