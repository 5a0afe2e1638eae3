package browsertest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// TestDocScreenshots renders each view with live calls into
// $CALMLINE_DOC_SCREENSHOTS (docs/console when refreshing the README's
// pictures); skipped otherwise.
func TestDocScreenshots(t *testing.T) {
	dir := os.Getenv("CALMLINE_DOC_SCREENSHOTS")
	if dir == "" {
		t.Skip("set CALMLINE_DOC_SCREENSHOTS=DIR to render the views for the docs")
	}
	ctx := tab(t)
	shot := func(name string) {
		t.Helper()
		b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do(t, ctx, chromedp.Navigate("about:blank"))
	if _, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 1100, Height: 640, DeviceScaleFactor: 1}); err != nil {
		t.Fatal(err)
	}
	signIn(t, ctx, st.keys["sup"])
	// An angry call and a dozen ordinary ones, then the wall mid-call.
	calm := startLoadgen(t, st.keys["sup"], "call_emodb_9s.wav", "doc-", 12, 45*time.Second)
	waitJS(t, ctx, `Number(document.getElementById("wall-count").dataset.n || 0) >= 12`, 30*time.Second)
	angry := startLoadgen(t, st.keys["sup"], "call_agent_turns_angry.wav", "doc-angry-", 1, 24800*time.Millisecond)
	// Long enough for sparklines, with the angry agent's alert firing.
	waitJS(t, ctx, `/^0:(2|3)/.test(document.querySelector('tr[data-call-id="doc-00001"] td:nth-child(4)')?.textContent || "")`, 40*time.Second)
	waitJS(t, ctx, `!!document.querySelector('tr[data-call-id="doc-angry-00001"] .badge.firing')`, 30*time.Second)
	shot("wall")
	angry.wait(t)
	do(t, ctx, chromedp.Navigate(st.console+"/#/escalations"))
	waitJS(t, ctx, `!!document.querySelector('article.esc a[href="#/call/doc-angry-00001"]')`, 30*time.Second)
	card := `article.esc:has(a[href="#/call/doc-angry-00001"])`
	do(t, ctx, chromedp.SendKeys(card+" input.by", "sup-ana"), chromedp.Click(card+" button.ack"))
	waitJS(t, ctx, fmt.Sprintf(`document.querySelector('%s')?.dataset.state === "acknowledged"`, card), 10*time.Second)
	do(t, ctx, chromedp.Click(card+" details summary"))
	waitJS(t, ctx, fmt.Sprintf(`document.querySelectorAll('%s .audit li').length >= 3`, card), 10*time.Second)
	shot("escalations")
	do(t, ctx, chromedp.Navigate(st.console+"/#/call/doc-angry-00001"))
	waitJS(t, ctx, `document.querySelector("#timeline .alert-mark")`, 20*time.Second)
	shot("call")
	calm.wait(t)
	do(t, ctx, chromedp.Navigate(st.console+"/#/care"))
	waitJS(t, ctx, `document.querySelectorAll("#care-list tr[data-agent]").length > 0`, 20*time.Second)
	shot("care")
	do(t, ctx, chromedp.SetValue("#lang-top", "ja"))
	eval[bool](t, ctx, `(document.getElementById("lang-top").dispatchEvent(new Event("change")), true)`)
	waitJS(t, ctx, `document.querySelectorAll("#care-list tr[data-agent]").length > 0`, 20*time.Second)
	shot("care-ja")
}
