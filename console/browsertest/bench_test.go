package browsertest

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/chromedp"
)

// BenchmarkWall measures the wall with many live calls in Chromium: the
// browser's scripting time per update (Performance.getMetrics'
// ScriptDuration over the updates received, and the page's own measure of
// its parse, apply and render work), layout and style time, and frames per
// second (requestAnimationFrame callbacks) over a window, with
// $CALMLINE_BENCH_CALLS (default 200) calls streamed by loadgen. Run it
// with `make bench-console` (-benchtime 1x: one measurement).
func BenchmarkWall(b *testing.B) {
	if skipWhy != "" {
		b.Skip(skipWhy)
	}
	calls := 200
	if v, err := strconv.Atoi(os.Getenv("CALMLINE_BENCH_CALLS")); err == nil && v > 0 {
		calls = v
	}
	window := 30 * time.Second
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	defer cancel()
	fail := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	fail(chromedp.Do(ctx, chromedp.Navigate(st.console+"/"), chromedp.WaitVisible("#key"),
		chromedp.SendKeys("#key", st.keys["sup"]), chromedp.Click("#login-submit"), chromedp.WaitVisible("#view-wall")))
	ramp := max(calls/10, 10)
	run := startLoadgenB(b, st.keys["sup"], "call_emodb_9s.wav", "bench-", calls, ramp, window+time.Duration(calls/ramp+20)*time.Second)
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void]("Number(document.getElementById('wall-count').dataset.n || 0) >= "+strconv.Itoa(calls),
		chromedp.WithPollingTimeout(time.Duration(calls/ramp+60)*time.Second), chromedp.WithPollingInterval(500*time.Millisecond)))
	fail(err)
	_, err = chromedp.Call(ctx, performance.Enable, performance.EnableParams{})
	fail(err)
	metrics := func() map[string]float64 {
		r, err := chromedp.Call(ctx, performance.GetMetrics, struct{}{})
		fail(err)
		m := map[string]float64{}
		for _, x := range r.Metrics {
			m[x.Name] = x.Value
		}
		return m
	}
	type pageStats struct {
		Batches float64 `json:"batches"`
		Script  float64 `json:"scriptMs"`
		Frames  float64 `json:"frames"`
		Rows    float64 `json:"rows"`
		Renders float64 `json:"renders"`
		DOMRows float64 `json:"dom"`
	}
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { window.__frames = 0; const f = () => { window.__frames++; requestAnimationFrame(f); }; requestAnimationFrame(f); return true; })()`))
	fail(err)
	read := func() pageStats {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[pageStats](`({batches: calmlinePerf.batches, scriptMs: calmlinePerf.scriptMs, frames: window.__frames, renders: calmlinePerf.renders, rows: Number(document.getElementById('wall-count').dataset.n || 0), dom: document.querySelectorAll('#wall-body tr[data-call-id]').length})`))
		fail(err)
		return v
	}
	b.ResetTimer()
	m0, p0, t0 := metrics(), read(), time.Now()
	select {
	case <-time.After(window): // the measuring window, not synchronisation
	case err := <-run.done:
		run.done <- err
		b.Fatalf("loadgen ended during the window: %v\n%s", err, run.out)
	}
	m1, p1, el := metrics(), read(), time.Since(t0).Seconds()
	b.StopTimer()
	updates := p1.Batches - p0.Batches
	script := (m1["ScriptDuration"] - m0["ScriptDuration"]) * 1000
	b.ReportMetric(p1.Rows, "calls")
	b.ReportMetric(p1.DOMRows, "rows-in-dom")
	b.ReportMetric(updates/el, "updates/s")
	b.ReportMetric(script/updates, "script-ms/update")
	b.ReportMetric((p1.Script-p0.Script)/updates, "page-js-ms/update")
	b.ReportMetric((p1.Renders-p0.Renders)/el, "renders/s")
	b.ReportMetric((m1["LayoutDuration"]-m0["LayoutDuration"]+m1["RecalcStyleDuration"]-m0["RecalcStyleDuration"])*1000/updates, "layout+style-ms/update")
	b.ReportMetric((m1["TaskDuration"]-m0["TaskDuration"])/el*100, "main-thread-busy-%")
	b.ReportMetric((p1.Frames-p0.Frames)/el, "fps")
	b.ReportMetric(m1["JSHeapUsedSize"]/(1<<20), "js-heap-MiB")
}

func startLoadgenB(b *testing.B, key, wav, prefix string, calls, ramp int, d time.Duration) *loadgenRun {
	b.Helper()
	r, err := launchLoadgen(key, wav, prefix, calls, ramp, d)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.stop)
	return r
}
