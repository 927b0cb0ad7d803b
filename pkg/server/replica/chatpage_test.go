package replica_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"roomcast/pkg/server/replica"
	"roomcast/pkg/testenv"
)

// The chat page at / in headless Chromium: what a person trying rooms in a browser sees.

func TestChatPageTwoTabsInOneRoomSeeEachOthersMessages(t *testing.T) {
	browser := startBrowser(t)
	r := startReplica(t, "page", "", nil)

	alice := openChatPage(t, browser, "alice", r.url("/"))
	bob := openChatPage(t, browser, "bob", r.url("/"))
	alice.join("garden")
	bob.join("garden")

	alice.sendWithEnter("hello from alice")
	bob.sendWithButton("hello from bob")

	want := []string{"hello from alice", "hello from bob"}
	for _, p := range []*chatPage{alice, bob} {
		p.waitForMessages(want)
		if got := p.messages(); len(got) != len(want) {
			t.Errorf("%s: log has %q, want each of %q once", p.name, got, want)
		}
		if v := p.inputValue(); v != "" {
			t.Errorf("%s: #message still holds %q after sending", p.name, v)
		}
	}
	// A duplicate would arrive right after the first copy.
	time.Sleep(200 * time.Millisecond)
	for _, p := range []*chatPage{alice, bob} {
		if got := p.messages(); len(got) != len(want) {
			t.Errorf("%s: log has %q, want each of %q once", p.name, got, want)
		}
		if errs := p.errorLines(); len(errs) != 0 {
			t.Errorf("%s: error lines in #log: %q", p.name, errs)
		}
	}
}

func TestChatPageReconnectsByItselfWhenTheServerComesBack(t *testing.T) {
	browser := startBrowser(t)
	first := startReplica(t, "page-before", "", nil)
	addr := first.Addr().String()

	alice := openChatPage(t, browser, "alice", first.url("/"))
	bob := openChatPage(t, browser, "bob", first.url("/"))
	alice.join("phoenix")
	bob.join("phoenix")
	alice.sendWithEnter("before")
	alice.waitForMessages([]string{"before"})
	bob.waitForMessages([]string{"before"})

	// The server goes away: the pages notice and keep trying.
	first.Close()
	alice.waitState("reconnecting")
	bob.waitState("reconnecting")
	// Sending meanwhile is refused on the page, not dropped silently.
	alice.sendWithEnter("into the void")
	alice.waitFor("the page says the message was not sent",
		`Array.from(document.querySelectorAll("#log li.error")).some(li => li.textContent.includes("not sent"))`)
	alice.clear("message") // the page keeps the text for a retry

	// The server comes back on the same address; nobody touches the pages.
	second := startReplica(t, "page-after", "", func(c *replica.Config) { c.HTTP.Addr = addr })
	alice.waitState("connected")
	bob.waitState("connected")
	if n := testenv.Metric(t, second.Registry(), "roomcast_connections_active"); n != 2 {
		t.Errorf("the new server has %v connections, want the 2 pages", n)
	}

	alice.sendWithButton("after")
	for _, p := range []*chatPage{alice, bob} {
		p.waitForMessages([]string{"after", "before"})
	}
	time.Sleep(200 * time.Millisecond)
	for _, p := range []*chatPage{alice, bob} {
		if got := p.messages(); !slices.Equal(got, []string{"before", "after"}) {
			t.Errorf("%s: messages %q, want before then after, once each", p.name, got)
		}
	}
}

// pageWait bounds every wait on a page. CI runs packages side by side on two cores, so
// a browser can be slow to start or to paint: generous, since it only bounds a wait.
const pageWait = 90 * time.Second

// startBrowser launches headless Chromium for the test and returns its context; the
// browser is closed in t.Cleanup.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	exe := testenv.Program(t, "chromium", "chromium-browser", "google-chrome")
	profile := t.TempDir() // removed after the browser is gone (cleanups run in reverse)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(profile),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		// Both tabs must keep their timers: the page's reconnect runs on setTimeout.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
	)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		// Close the browser gracefully, then make sure it and every goroutine of
		// chromedp are gone before the next test (goleak checks at the end).
		ctx, cancel := context.WithTimeout(browserCtx, 10*time.Second)
		if err := chromedp.Cancel(ctx); err != nil {
			t.Logf("closing the browser: %v", err)
		}
		cancel()
		cancelBrowser()
		cancelAlloc()
	})
	// The first run starts the browser and ties it to the context it gets, so it
	// gets the browser's own context and the bound comes from a timer.
	bounded(t, "starting Chromium", cancelBrowser, func() error { return chromedp.Do(browserCtx) })
	return browserCtx
}

// bounded runs fn, cancelling with cancel (which must make fn return) if it takes
// longer than pageWait.
func bounded(t *testing.T, what string, cancel context.CancelFunc, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(pageWait):
		cancel()
		<-done
		t.Fatalf("%s: no answer in %v", what, pageWait)
	}
}

// chatPage is one tab showing the chat page.
type chatPage struct {
	t    *testing.T
	name string
	ctx  context.Context // the tab's context, without a deadline
}

// openChatPage opens a new tab of browser at url; the tab is closed in t.Cleanup.
func openChatPage(t *testing.T, browser context.Context, name, url string) *chatPage {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	p := &chatPage{t: t, name: name, ctx: ctx}
	// As for the browser: the tab lives as long as the context of its first run.
	bounded(t, name+": opening a tab", cancel, func() error { return chromedp.Do(ctx) })
	if err := p.do(chromedp.Navigate(url), chromedp.WaitVisible(chromedp.ID("status"))); err != nil {
		t.Fatalf("%s: loading %s: %v", name, url, err)
	}
	return p
}

// do runs actions on the tab, bounded by pageWait.
func (p *chatPage) do(actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(p.ctx, pageWait)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// eval evaluates a JavaScript expression in the tab into a T.
func eval[T any](p *chatPage, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, pageWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("%s: evaluating %s: %v", p.name, expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it is true, for at most pageWait.
func (p *chatPage) waitFor(what, cond string) {
	p.t.Helper()
	deadline := time.Now().Add(pageWait)
	for !eval[bool](p, "!!("+cond+")") {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: timed out waiting until %s; #status %q, #log %q", p.name, what, p.status(), p.logLines())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// join types room into #room and clicks #join, then waits until the page is connected.
func (p *chatPage) join(room string) {
	p.t.Helper()
	if err := p.do(
		clearInput("room"),
		chromedp.SendKeys(chromedp.ID("room"), room),
		chromedp.Click(chromedp.ID("join")),
	); err != nil {
		p.t.Fatalf("%s: joining %s: %v", p.name, room, err)
	}
	p.waitFor("connected to "+room, fmt.Sprintf(
		`document.getElementById("status").dataset.state === "connected" && document.getElementById("status").textContent === %q`,
		"connected to "+room))
}

// clearInput empties an input. chromedp.Clear only resets the value attribute, which
// no longer shows once someone typed, and chromedp.SetValue cannot set "".
func clearInput(id string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById(%q).value = ""`, id))
}

func (p *chatPage) clear(id string) {
	p.t.Helper()
	if err := p.do(clearInput(id)); err != nil {
		p.t.Fatalf("%s: clearing #%s: %v", p.name, id, err)
	}
}

// sendWithEnter types text into #message and presses Enter, which submits form #send.
func (p *chatPage) sendWithEnter(text string) {
	p.t.Helper()
	if err := p.do(chromedp.SendKeys(chromedp.ID("message"), text+"\n")); err != nil {
		p.t.Fatalf("%s: sending %q: %v", p.name, text, err)
	}
}

// sendWithButton types text into #message and clicks the form's submit button.
func (p *chatPage) sendWithButton(text string) {
	p.t.Helper()
	if err := p.do(
		chromedp.SendKeys(chromedp.ID("message"), text),
		chromedp.Click(chromedp.CSS(`#send button[type="submit"]`)),
	); err != nil {
		p.t.Fatalf("%s: sending %q: %v", p.name, text, err)
	}
}

// waitState waits until #status has data-state state.
func (p *chatPage) waitState(state string) {
	p.t.Helper()
	p.waitFor("#status is "+state, fmt.Sprintf(`document.getElementById("status").dataset.state === %q`, state))
}

// waitForMessages waits until every one of want is among the message lines of #log.
func (p *chatPage) waitForMessages(want []string) {
	p.t.Helper()
	b, _ := json.Marshal(want)
	p.waitFor(fmt.Sprintf("#log shows %s", b), fmt.Sprintf(
		`(() => { const got = %s; return %s.every(m => got.includes(m)); })()`, messagesJS, b))
}

// messagesJS lists the texts of the message lines of #log (a line is a <time> and a
// text node).
const messagesJS = `Array.from(document.querySelectorAll("#log li.message")).map(li => li.lastChild.textContent)`

func (p *chatPage) messages() []string { return eval[[]string](p, messagesJS) }

func (p *chatPage) errorLines() []string {
	return eval[[]string](p, `Array.from(document.querySelectorAll("#log li.error")).map(li => li.textContent)`)
}

func (p *chatPage) logLines() []string {
	return eval[[]string](p, `Array.from(document.querySelectorAll("#log li")).map(li => li.className + ": " + li.textContent)`)
}

func (p *chatPage) status() string {
	return eval[string](p, `document.getElementById("status").dataset.state + " (" + document.getElementById("status").textContent + ")"`)
}

func (p *chatPage) inputValue() string {
	return eval[string](p, `document.getElementById("message").value`)
}
